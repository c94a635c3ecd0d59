"""Numbered schema migrations. A library records the number it is at (meta.schema_version);
opening it applies every later migration in order, each in one transaction, so a library made by
any earlier release is upgraded in place with nothing lost, and one made by a newer release is
refused. Add a migration by appending to MIGRATIONS; never edit one that has shipped.
"""
from __future__ import annotations

import logging
import sqlite3
import time
from dataclasses import dataclass
from typing import Callable

from ..errors import LibraryError

log = logging.getLogger(__name__)

# -- 1: the first schema (releases up to 0.1.0) -----------------------------------------------------
SCHEMA_1 = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS images (
    id INTEGER PRIMARY KEY,
    path TEXT NOT NULL UNIQUE,
    sha256 TEXT NOT NULL,
    size INTEGER NOT NULL,
    mtime REAL NOT NULL,
    width INTEGER NOT NULL,
    height INTEGER NOT NULL,
    format TEXT NOT NULL,
    added_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS images_sha ON images(sha256);
CREATE TABLE IF NOT EXISTS skipped (
    path TEXT PRIMARY KEY,
    reason TEXT NOT NULL,
    size INTEGER,
    mtime REAL,
    seen_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS vector_sets (
    id INTEGER PRIMARY KEY,
    model TEXT NOT NULL UNIQUE,
    version TEXT NOT NULL,
    dim INTEGER NOT NULL,
    item_kind TEXT NOT NULL,
    description TEXT NOT NULL,
    generation INTEGER NOT NULL DEFAULT 0,
    created_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS processed (
    image_id INTEGER NOT NULL REFERENCES images(id) ON DELETE CASCADE,
    set_id INTEGER NOT NULL REFERENCES vector_sets(id) ON DELETE CASCADE,
    n_items INTEGER NOT NULL,
    PRIMARY KEY (image_id, set_id)
);
CREATE TABLE IF NOT EXISTS items (
    id INTEGER PRIMARY KEY,
    image_id INTEGER NOT NULL REFERENCES images(id) ON DELETE CASCADE,
    set_id INTEGER NOT NULL REFERENCES vector_sets(id) ON DELETE CASCADE,
    x INTEGER, y INTEGER, w INTEGER, h INTEGER,
    score REAL NOT NULL DEFAULT 1.0
);
CREATE INDEX IF NOT EXISTS items_image ON items(image_id);
CREATE INDEX IF NOT EXISTS items_set ON items(set_id);
CREATE TABLE IF NOT EXISTS vectors (
    item_id INTEGER PRIMARY KEY REFERENCES items(id) ON DELETE CASCADE,
    vector BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS clusterings (
    id INTEGER PRIMARY KEY,
    set_id INTEGER NOT NULL REFERENCES vector_sets(id) ON DELETE CASCADE,
    profile TEXT NOT NULL,
    params TEXT NOT NULL,
    set_generation INTEGER NOT NULL,
    n_items INTEGER NOT NULL,
    n_clusters INTEGER NOT NULL,
    n_noise INTEGER NOT NULL,
    seconds REAL NOT NULL,
    created_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS cluster_labels (
    clustering_id INTEGER NOT NULL REFERENCES clusterings(id) ON DELETE CASCADE,
    item_id INTEGER NOT NULL REFERENCES items(id) ON DELETE CASCADE,
    label INTEGER NOT NULL,
    probability REAL NOT NULL,
    PRIMARY KEY (clustering_id, item_id)
);
CREATE INDEX IF NOT EXISTS cluster_labels_label ON cluster_labels(clustering_id, label);
CREATE TABLE IF NOT EXISTS runs (
    id INTEGER PRIMARY KEY,
    kind TEXT NOT NULL,
    status TEXT NOT NULL,
    params TEXT NOT NULL,
    summary TEXT,
    started_at REAL NOT NULL,
    finished_at REAL
);
CREATE TABLE IF NOT EXISTS people (
    id INTEGER PRIMARY KEY,
    set_id INTEGER NOT NULL REFERENCES vector_sets(id) ON DELETE CASCADE,
    name TEXT,
    hidden INTEGER NOT NULL DEFAULT 0,
    created_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS person_items (
    item_id INTEGER PRIMARY KEY REFERENCES items(id) ON DELETE CASCADE,
    person_id INTEGER NOT NULL REFERENCES people(id) ON DELETE CASCADE,
    pinned INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS person_items_person ON person_items(person_id);
"""


def _schema_1(c: sqlite3.Connection) -> None:
    _script(c, SCHEMA_1)
    c.execute("INSERT OR IGNORE INTO meta VALUES ('created_at', ?)", (str(time.time()),))


# -- 2: ids are never reused; the user's decisions on people -------------------------------------
# SQLite hands a freed INTEGER PRIMARY KEY out again; with AUTOINCREMENT it never does. A column
# cannot be altered in place, so each table is rebuilt (SQLite's documented 12-step procedure:
# new table, copy, drop, rename, with foreign keys off while it runs). sqlite_sequence starts at
# each table's largest id.
_AUTOINCREMENT = {
    "images": """id INTEGER PRIMARY KEY AUTOINCREMENT, path TEXT NOT NULL UNIQUE,
        sha256 TEXT NOT NULL, size INTEGER NOT NULL, mtime REAL NOT NULL, width INTEGER NOT NULL,
        height INTEGER NOT NULL, format TEXT NOT NULL, added_at REAL NOT NULL""",
    "vector_sets": """id INTEGER PRIMARY KEY AUTOINCREMENT, model TEXT NOT NULL UNIQUE,
        version TEXT NOT NULL, dim INTEGER NOT NULL, item_kind TEXT NOT NULL,
        description TEXT NOT NULL, generation INTEGER NOT NULL DEFAULT 0, created_at REAL NOT NULL""",
    "items": """id INTEGER PRIMARY KEY AUTOINCREMENT,
        image_id INTEGER NOT NULL REFERENCES images(id) ON DELETE CASCADE,
        set_id INTEGER NOT NULL REFERENCES vector_sets(id) ON DELETE CASCADE,
        x INTEGER, y INTEGER, w INTEGER, h INTEGER, score REAL NOT NULL DEFAULT 1.0""",
    "clusterings": """id INTEGER PRIMARY KEY AUTOINCREMENT,
        set_id INTEGER NOT NULL REFERENCES vector_sets(id) ON DELETE CASCADE,
        profile TEXT NOT NULL, params TEXT NOT NULL, set_generation INTEGER NOT NULL,
        n_items INTEGER NOT NULL, n_clusters INTEGER NOT NULL, n_noise INTEGER NOT NULL,
        seconds REAL NOT NULL, created_at REAL NOT NULL""",
    "runs": """id INTEGER PRIMARY KEY AUTOINCREMENT, kind TEXT NOT NULL, status TEXT NOT NULL,
        params TEXT NOT NULL, summary TEXT, started_at REAL NOT NULL, finished_at REAL""",
    "people": """id INTEGER PRIMARY KEY AUTOINCREMENT,
        set_id INTEGER NOT NULL REFERENCES vector_sets(id) ON DELETE CASCADE,
        name TEXT, hidden INTEGER NOT NULL DEFAULT 0, created_at REAL NOT NULL""",
}
_INDEXES = {
    "images": ["CREATE INDEX images_sha ON images(sha256)"],
    "items": ["CREATE INDEX items_image ON items(image_id)", "CREATE INDEX items_set ON items(set_id)"],
    "people": ["CREATE INDEX people_set ON people(set_id)"],
}
DECISIONS = """
-- "Not this person": the item is never put back with that person (re-clustering, placement of
-- new items, search). Confirmed members are person_items rows with pinned = 1.
CREATE TABLE rejections (
    item_id INTEGER NOT NULL REFERENCES items(id) ON DELETE CASCADE,
    person_id INTEGER NOT NULL REFERENCES people(id) ON DELETE CASCADE,
    decided_at REAL NOT NULL,
    PRIMARY KEY (item_id, person_id)
);
CREATE INDEX rejections_person ON rejections(person_id);
-- Two people the user said are different: never suggested or merged together again (a < b).
CREATE TABLE different_people (
    a INTEGER NOT NULL REFERENCES people(id) ON DELETE CASCADE,
    b INTEGER NOT NULL REFERENCES people(id) ON DELETE CASCADE,
    decided_at REAL NOT NULL,
    PRIMARY KEY (a, b),
    CHECK (a < b)
);
"""


def _ids_never_reused(c: sqlite3.Connection) -> None:
    for table, columns in _AUTOINCREMENT.items():
        c.execute(f"CREATE TABLE {table}_new ({columns})")
        old = {r[1] for r in c.execute(f"PRAGMA table_info({table})")}
        cols = ", ".join(r[1] for r in c.execute(f"PRAGMA table_info({table}_new)") if r[1] in old)
        c.execute(f"INSERT INTO {table}_new ({cols}) SELECT {cols} FROM {table}")
        c.execute(f"DROP TABLE {table}")
        c.execute(f"ALTER TABLE {table}_new RENAME TO {table}")
        for stmt in _INDEXES.get(table, []):
            c.execute(stmt)
    _script(c, DECISIONS)
    # Search indexes saved before this migration may hold vectors of deleted items under ids that
    # were handed out again: every derived file of every set is stale now.
    c.execute("UPDATE vector_sets SET generation = generation + 1")


# -- 3: a person's chosen cover face; faces the user said are not faces ---------------------------
COVERS_AND_NOT_FACES = """
ALTER TABLE people ADD COLUMN cover_item_id INTEGER REFERENCES items(id) ON DELETE SET NULL;
-- "Not a face": a false detection the user removed. Kept by content (sha256) and box, so that the
-- same photo processed again (a rebuild, a copy, a new model version) does not bring it back.
CREATE TABLE not_faces (
    sha256 TEXT NOT NULL,
    x INTEGER NOT NULL, y INTEGER NOT NULL, w INTEGER NOT NULL, h INTEGER NOT NULL,
    decided_at REAL NOT NULL,
    PRIMARY KEY (sha256, x, y, w, h)
);
"""


def _covers_and_not_faces(c: sqlite3.Connection) -> None:
    _script(c, COVERS_AND_NOT_FACES)


# -- 4: what photos' metadata says; names from photos' face regions ------------------------------
PHOTO_META = """
-- One row per image whose metadata was read at index time (peoplemap.metadata).
CREATE TABLE photo_meta (
    image_id INTEGER PRIMARY KEY REFERENCES images(id) ON DELETE CASCADE,
    taken TEXT,            -- local date and time the camera wrote: 'YYYY-MM-DD HH:MM:SS'
    utc_offset TEXT,       -- '+02:00' when the camera recorded it (EXIF OffsetTimeOriginal)
    orientation INTEGER,   -- EXIF orientation 1-8
    latitude REAL, longitude REAL, altitude REAL,
    sidecar_mtime REAL     -- newest mtime of the XMP sidecars its face regions were read from
);
CREATE INDEX photo_meta_taken ON photo_meta(taken);
-- The name a face region in a photo's XMP gave an item. applied: made a confirmed member of the
-- person of that name (kept so that a run killed before that finishes it next time).
CREATE TABLE imported_names (
    item_id INTEGER PRIMARY KEY REFERENCES items(id) ON DELETE CASCADE,
    name TEXT NOT NULL,
    applied INTEGER NOT NULL DEFAULT 0
);
"""


def _photo_meta(c: sqlite3.Connection) -> None:
    _script(c, PHOTO_META)


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    apply: Callable[[sqlite3.Connection], None]
    invalidates_derived: bool = False
    """True when files derived from the catalog (search indexes, cluster models) must be rebuilt."""


MIGRATIONS: list[Migration] = [
    Migration(1, "first schema", _schema_1),
    Migration(2, "ids never reused; rejections and different people", _ids_never_reused,
              invalidates_derived=True),
    Migration(3, "cover faces; not-a-face decisions", _covers_and_not_faces),
    Migration(4, "photo dates, orientation and places; names from face regions", _photo_meta),
]
SCHEMA_VERSION = MIGRATIONS[-1].version


def _script(c: sqlite3.Connection, sql: str) -> None:
    for stmt in sql.split(";"):
        if stmt.strip():
            c.execute(stmt)


def current_version(c: sqlite3.Connection) -> int:
    """The schema number a library file is at: 0 for an empty file."""
    has_meta = c.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name='meta'").fetchone()
    if has_meta is None:
        if c.execute("SELECT 1 FROM sqlite_master WHERE type='table'").fetchone() is not None:
            raise LibraryError("it holds tables but no peoplemap schema version")
        return 0
    v = c.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
    if v is None or not str(v[0]).isdigit():
        raise LibraryError("it has no schema version")
    version = int(v[0])
    if version == 1 and c.execute(
            "SELECT 1 FROM sqlite_master WHERE type='table' AND name='person_items'").fetchone() is None:
        return 0  # made before people existed: schema 1 (all CREATE IF NOT EXISTS) completes it
    return version


def migrate(c: sqlite3.Connection, db_name: str = "library") -> list[Migration]:
    """Bring the file behind connection `c` to SCHEMA_VERSION; returns the migrations applied.

    Each migration runs in its own BEGIN IMMEDIATE transaction (a second process opening the same
    old library waits, then finds it done), with foreign keys off while tables are rebuilt and
    checked before the commit.
    """
    try:
        version = current_version(c)
    except sqlite3.DatabaseError as e:
        raise LibraryError(f"{db_name} is not a peoplemap library ({e})") from None
    except LibraryError as e:
        raise LibraryError(f"{db_name} is not a peoplemap library ({e})") from None
    if version > SCHEMA_VERSION:
        raise LibraryError(
            f"{db_name} was written by a newer peoplemap (schema {version}, this one reads up to "
            f"{SCHEMA_VERSION}); upgrade peoplemap")
    applied: list[Migration] = []
    for m in MIGRATIONS:
        if m.version <= version:
            continue
        c.execute("PRAGMA foreign_keys = OFF")  # no effect inside a transaction: set before BEGIN
        try:
            c.execute("BEGIN IMMEDIATE")
            try:
                if current_version(c) >= m.version:  # another process did it while we waited
                    c.execute("ROLLBACK")
                    continue
                m.apply(c)
                bad = c.execute("PRAGMA foreign_key_check").fetchall()
                if bad:
                    raise LibraryError(f"migration {m.version} ({m.name}) would leave {len(bad)} "
                                       "broken references; the library was not changed")
                c.execute("INSERT OR REPLACE INTO meta VALUES ('schema_version', ?)", (str(m.version),))
                c.execute("COMMIT")
            except BaseException:
                if c.in_transaction:
                    c.execute("ROLLBACK")
                raise
        finally:
            c.execute("PRAGMA foreign_keys = ON")
        if version > 0:
            log.info("upgraded %s to schema %d: %s", db_name, m.version, m.name)
        applied.append(m)
    return applied
