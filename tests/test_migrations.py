"""Schema migrations: a library written by the release before them (tests/fixtures/library-v1.sqlite,
made by tests/fixtures/make_v1_library.py with commit 9cd7d44) opens, is upgraded in place and keeps
every item, vector, name and decision; ids are never reused afterwards."""
from __future__ import annotations

import hashlib
import json
import shutil
import sqlite3
from pathlib import Path

import pytest

from peoplemap import Library, LibraryError
from peoplemap.store import SCHEMA_VERSION
from peoplemap.store.migrations import MIGRATIONS

from conftest import make_person_images

FIXTURE = Path(__file__).parent / "fixtures"


@pytest.fixture
def old_library(tmp_path: Path) -> Path:
    lib = tmp_path / "old-lib"
    lib.mkdir()
    shutil.copy(FIXTURE / "library-v1.sqlite", lib / "library.sqlite")
    return lib


def _contents(db_path: Path) -> dict:
    db = sqlite3.connect(db_path)
    try:
        return {
            "items": [list(r) for r in db.execute(
                "SELECT i.id, im.path, i.x, i.y, i.w, i.h FROM items i JOIN images im ON "
                "im.id = i.image_id ORDER BY i.id")],
            "vectors_sha256": {str(i): hashlib.sha256(b).hexdigest() for i, b in db.execute(
                "SELECT item_id, vector FROM vectors")},
            "people": [list(r) for r in db.execute(
                "SELECT pe.id, pe.name, pe.hidden, pi.item_id, pi.pinned FROM people pe "
                "JOIN person_items pi ON pi.person_id = pe.id ORDER BY pi.item_id")],
            "skipped": [r[0] for r in db.execute("SELECT path FROM skipped")],
        }
    finally:
        db.close()


def test_numbers_are_consecutive():
    assert [m.version for m in MIGRATIONS] == list(range(1, len(MIGRATIONS) + 1))
    assert SCHEMA_VERSION == MIGRATIONS[-1].version


def test_a_library_of_the_previous_release_opens_with_everything_kept(old_library, settings):
    expected = json.loads((FIXTURE / "library-v1.json").read_text())
    assert _contents(old_library / "library.sqlite") == expected  # the fixture is what it says
    lib = Library.open(old_library, settings=settings)
    assert lib.store.schema_version() == SCHEMA_VERSION
    assert [m.version for m in lib.store.migrated] == [2, 3, 4]
    lib.close()
    assert _contents(old_library / "library.sqlite") == expected
    db = sqlite3.connect(old_library / "library.sqlite")
    assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    assert db.execute("PRAGMA foreign_key_check").fetchall() == []
    sql = db.execute("SELECT sql FROM sqlite_master WHERE name = 'items'").fetchone()[0]
    assert "AUTOINCREMENT" in sql
    db.close()
    # A second open finds it current and changes nothing.
    lib = Library.open(old_library, settings=settings)
    assert lib.store.migrated == []
    people = {p.name: p for p in lib.people("fake", include_hidden=True) if p.name}
    assert set(people) == {"Ada Lovelace", "Grace Hopper", "Split Off"}
    assert any(p.hidden for p in lib.people("fake", include_hidden=True))
    lib.close()


def test_the_upgraded_library_works_and_never_reuses_ids(old_library, settings, tmp_path):
    lib = Library.open(old_library, settings=settings)
    old_max = max(it.id for it in lib.items("fake"))
    named = {p.name: set(p.item_ids) for p in lib.people("fake") if p.name}
    photos = tmp_path / "more"
    make_person_images(photos, n_people=2, per_person=3, seed=3)
    lib.index(photos, model="fake")
    new = [it for it in lib.items("fake") if it.path.startswith(str(photos))]
    assert len(new) == 6 and min(it.id for it in new) > old_max
    for p in sorted(photos.rglob("*.jpg"))[:2]:
        p.unlink()
    lib.index(photos, model="fake")
    make_person_images(photos / "again", n_people=1, per_person=2, seed=4)
    lib.index(photos, model="fake")
    newest = [it.id for it in lib.items("fake") if "/again/" in it.path]
    assert min(newest) > max(it.id for it in new)
    lib.cluster(model="fake")
    after = {p.name: set(p.item_ids) for p in lib.people("fake") if p.name}
    # confirmed (merged / split) people keep exactly their items; names are kept
    assert after["Grace Hopper"] >= named["Grace Hopper"] and after["Split Off"] >= named["Split Off"]
    assert "Ada Lovelace" in after
    hits = lib.search(new[-1].path, k=1, model="fake")[0].hits
    assert hits[0].item_id == new[-1].id
    lib.close()


def test_newer_schema_and_foreign_files_are_refused(tmp_path, settings):
    lib = Library.open(tmp_path / "lib", create=True, settings=settings)
    lib.close()
    db = sqlite3.connect(tmp_path / "lib" / "library.sqlite")
    db.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'", (str(SCHEMA_VERSION + 1),))
    db.commit()
    db.close()
    with pytest.raises(LibraryError, match="newer peoplemap"):
        Library.open(tmp_path / "lib", settings=settings)
    other = tmp_path / "other"
    other.mkdir()
    db = sqlite3.connect(other / "library.sqlite")
    db.execute("CREATE TABLE notes (x)")
    db.commit()
    db.close()
    with pytest.raises(LibraryError, match="not a peoplemap library"):
        Library.open(other, settings=settings)


def test_a_new_library_is_made_at_the_latest_schema(tmp_path, settings):
    lib = Library.open(tmp_path / "lib", create=True, settings=settings)
    assert lib.store.schema_version() == SCHEMA_VERSION
    tables = {r[0] for r in lib.catalog.query("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert {"items", "vectors", "people", "rejections", "different_people", "sqlite_sequence"} <= tables
    lib.close()
