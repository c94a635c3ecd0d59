"""The storage layer: ids are never reused, the catalog, vectors, search index and labels agree
after any sequence of edits, and the one membership rule keeps the user's decisions."""
from __future__ import annotations

import os
import random
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from peoplemap import Library
from peoplemap.membership import Member, after_clustering, owner, place
from peoplemap.types import NOISE

from conftest import make_person_images


def _newest_files(lib: Library, n: int) -> list[str]:
    items = sorted(lib.items("fake"), key=lambda it: it.id)
    return [it.path for it in items[-n:]]


def test_deleted_photos_never_come_back_as_other_photos(library, photos, tmp_path):
    """The reported sequence: index 20, build the search index, delete the 3 newest photos,
    index, add 5 photos, index, then search with a deleted photo's vector."""
    library.index(photos, model="fake")
    library.index_for("fake")
    gone = _newest_files(library, 3)
    ids0, X0 = library.vectors("fake")
    by_path = {it.path: it.id for it in library.items("fake")}
    gone_vectors = X0[[list(ids0).index(by_path[p]) for p in gone]]
    gone_ids = {by_path[p] for p in gone}
    for p in gone:
        os.remove(p)
    library.index(photos, model="fake")
    make_person_images(photos / "new", n_people=1, per_person=5, seed=11)
    s = library.index(photos, model="fake")
    assert s.items_added == 5

    items = {it.id: it for it in library.items("fake")}
    assert not gone_ids & set(items), "a deleted photo's item id was given to a new photo"
    assert min(i for i, it in items.items() if "/new/" in it.path) > max(ids0)
    idx = library.index_for("fake")
    assert set(idx.ids().tolist()) == set(items)
    D, I = idx.search(gone_vectors, 1)
    for d, i in zip(D[:, 0], I[:, 0]):
        assert int(i) in items and items[int(i)].path not in gone
        assert d > 1e-4, "a deleted photo's vector is still in the search index"
    # and through the public search, with the deleted file's pixels given as bytes
    ids, X = library.vectors("fake")
    for q in X[:3]:
        D, I = idx.search(q[None], 1)
        assert D[0, 0] < 1e-4 and int(I[0, 0]) in items


def _check_consistent(lib: Library, seen: dict[int, tuple[str, object]]) -> None:
    """Ids, vectors, search index, labels and people agree; an id always means one (path, box)."""
    items = {it.id: it for it in lib.items("fake")}
    ids, X = lib.vectors("fake")
    assert list(ids) == sorted(items)
    for i in items:
        key = (items[i].path, items[i].box)
        assert seen.setdefault(i, key) == key, f"item id {i} was reused for another photo"
    idx = lib.index_for("fake")
    assert sorted(idx.ids().tolist()) == sorted(items)
    if len(ids):
        D, I = idx.search(X, 1)
        np.testing.assert_allclose(D[:, 0], 0, atol=1e-3)  # each vector is in the index as itself
        pos = {int(i): k for k, i in enumerate(ids)}
        for k, hit in enumerate(I[:, 0]):  # a hit at distance 0 has the very same vector
            np.testing.assert_allclose(X[pos[int(hit)]], X[k], atol=1e-5)
    labels = lib.labels("fake")
    assert set(labels) <= set(items)
    members = {i for p in lib.people("fake", include_hidden=True) for i in p.item_ids}
    assert members <= set(items)
    c = lib.clustering("fake")
    if c is not None and not c.stale:
        assert set(labels) == set(items)


def test_random_edits_keep_ids_vectors_index_and_labels_in_step(library, tmp_path):
    rng = random.Random(5)
    photos = tmp_path / "random-photos"
    make_person_images(photos, n_people=3, per_person=4, seed=1)
    seen: dict[int, tuple[str, object]] = {}
    library.index(photos, model="fake")
    _check_consistent(library, seen)
    seed = 100
    for step in range(40):
        op = rng.choice(["add", "add", "delete", "change", "copy", "cluster", "cluster", "forget",
                         "search", "reindex"])
        files = sorted(p for p in photos.rglob("*") if p.is_file())
        if op == "add":
            seed += 1
            make_person_images(photos / f"batch{seed}", n_people=rng.randint(1, 2),
                               per_person=rng.randint(1, 3), seed=seed)
        elif op == "delete" and files:
            for p in rng.sample(files, min(len(files), rng.randint(1, 3))):
                p.unlink()
        elif op == "change" and files:
            p = rng.choice(files)
            Image.new("RGB", (64, 80), tuple(rng.randint(0, 255) for _ in range(3))).save(p, "PNG")
        elif op == "copy" and files:
            src = rng.choice(files)
            shutil.copy(src, src.with_name(f"copy{step}{src.suffix}"))
        elif op == "cluster" and library.vector_sets() and library.vector_set("fake").n_items >= 2:
            library.cluster(model="fake")
        elif op == "forget":
            people = library.people("fake")
            if people:
                library.forget_person(rng.choice(people).id, "fake")
                continue  # the forgotten person's files are still on disk: the next index adds them
        elif op == "search" and files:
            q = rng.choice(files)
            for r in library.search(q, k=3, model="fake"):
                known = {it.id: it.path for it in library.items("fake", ids=[h.item_id for h in r.hits])}
                assert all(known.get(h.item_id) == h.path for h in r.hits)
        library.index(photos, model="fake")
        _check_consistent(library, seen)
    assert len(seen) > 20


def test_membership_rule_keeps_confirmed_and_rejected():
    # items 1-3 were person 10 (1 confirmed), 4 was person 20; the new clustering puts 1-4 together
    current = {1: Member(10, True), 2: Member(10, False), 3: Member(10, False), 4: Member(20, False)}
    plan = after_clustering({1: 0, 2: 0, 3: 0, 4: 0, 5: 1, 6: 1, 7: NOISE}, current,
                            rejected={(3, 10)})
    rows = dict(plan.rows)
    assert 1 not in rows  # confirmed: stays where it is, whatever the clustering says
    assert rows[2] == 10 and rows[4] == 10  # the cluster goes to the person most items had
    assert 3 not in rows  # rejected from person 10: not put back
    assert rows[5] == rows[6] == -1 and plan.new_people == 1  # a new cluster is a new person
    assert 7 not in rows
    assert owner({10: 2, 20: 2}) == 10  # ties go to the older person
    assert place({8: 0, 9: 0, 11: NOISE}, {0: {10: 3}}, rejected={(9, 10)}) == [(8, 10)]


def test_rejected_and_confirmed_faces_survive_reclustering(library, photos, tmp_path):
    library.index(photos, model="fake")
    library.cluster(model="fake")
    a, b = library.people("fake")[:2]
    library.name_person(a.id, "Ada", "fake")
    wrong = a.item_ids[0]
    library.reject_items(a.id, [wrong], "fake")
    moved = b.item_ids[0]
    library.confirm_items(a.id, [moved], "fake")
    for _ in range(2):
        library.cluster(model="fake")
        ada = library.person("Ada", "fake")
        assert wrong not in ada.item_ids
        assert moved in ada.item_ids
    # a copy of the rejected photo, indexed later, is placed by the same rule: never into Ada
    src = next(it.path for it in library.items("fake") if it.id == wrong)
    shutil.copy(src, photos / "again.jpg")
    library.index(photos, model="fake")
    again = next(it.id for it in library.items("fake") if it.path.endswith("again.jpg"))
    assert again != wrong
    library.mark_different(a.id, library.people("fake")[-1].id, "fake")
    assert library.store.people.different(library.vector_set("fake").id)


SRC = Path(__file__).resolve().parents[1] / "src" / "peoplemap"


def test_only_the_storage_package_speaks_sql():
    import re

    sql = re.compile(r"\.execute(many)?\(|\bSELECT |\bINSERT |\bUPDATE \w+ SET\b|\bDELETE FROM\b")
    offenders = [f"{p.relative_to(SRC)}:{n}" for p in SRC.rglob("*.py") if "store" not in p.parts
                 for n, line in enumerate(p.read_text().splitlines(), 1) if sql.search(line)]
    assert offenders == []


def test_no_module_reads_another_modules_private_attributes():
    """`x._name` only where `_name` is defined in the same module (its own class's state). The
    parse runs in a fresh interpreter: CPython 3.11's AST converter keeps its recursion depth in
    interpreter-wide state that a concurrent parse in another thread (left by an earlier test)
    can corrupt ("AST constructor recursion depth mismatch", fixed in 3.11.8)."""
    import json
    import subprocess
    import sys

    script = r"""
import ast, json, sys
from pathlib import Path
src = Path(sys.argv[1])
offenders = []
for p in sorted(src.rglob("*.py")):
    tree = ast.parse(p.read_text())
    own = {n.attr for n in ast.walk(tree) if isinstance(n, ast.Attribute) and isinstance(n.ctx, ast.Store)}
    own |= {n.name for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.ClassDef))}
    own |= {t.id for n in ast.walk(tree) if isinstance(n, ast.Assign) for t in n.targets
            if isinstance(t, ast.Name)}
    for n in ast.walk(tree):
        if (isinstance(n, ast.Attribute) and n.attr.startswith("_") and not n.attr.startswith("__")
                and not (isinstance(n.value, ast.Name) and n.value.id in ("self", "cls"))
                and n.attr not in own):
            offenders.append(f"{p.relative_to(src)}:{n.lineno} .{n.attr}")
print(json.dumps(offenders))
"""
    out = subprocess.run([sys.executable, "-c", script, str(SRC)], capture_output=True, text=True, check=True)
    offenders = json.loads(out.stdout)
    assert len(list(SRC.rglob("*.py"))) > 50  # it looked at the package
    allowed = {".O_NOFOLLOW", "._exit", "._getframe"}  # os and sys module constants / functions
    assert [o for o in offenders if not any(o.endswith(a) for a in allowed)] == []


def test_touched_photos_keep_their_faces_people_and_decisions(library, photos):
    """A file whose time changed but whose content did not (touched, restored from a backup,
    copied back) is the same photo: re-indexing keeps its items, vectors, people and decisions.
    (It used to copy its items from itself after deleting them: every face of a touched folder
    was lost.)"""
    library.index(photos, model="fake")
    library.cluster(model="fake")
    people = library.people("fake")
    assert people
    first = people[0]
    library.name_person(first.id, "Ada")
    confirmed = library.person(first.id, "fake").item_ids[:2]
    library.confirm_items(first.id, confirmed, model="fake")
    before = {it.id: (it.path, it.box) for it in library.items("fake")}
    later = max(os.stat(p).st_mtime for p, _box in before.values()) + 100
    for p, _box in before.values():
        os.utime(p, (later, later))
    s = library.index(photos, model="fake")
    assert s.changed == len(before) and s.items_added == 0
    assert {it.id: (it.path, it.box) for it in library.items("fake")} == before
    again = library.index(photos, model="fake")
    assert again.unchanged == len(before)  # the new times were recorded
    library.cluster(model="fake")
    ada = library.person("Ada", "fake")
    assert set(confirmed) <= set(ada.item_ids)
