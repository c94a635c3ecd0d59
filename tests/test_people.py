"""People: naming, merging, splitting, hiding and forgetting, and surviving re-clustering."""
from __future__ import annotations

import json
import sqlite3

import numpy as np
import pytest
from click.testing import CliRunner

from peoplemap.cli import main
from peoplemap.errors import InputError

from conftest import make_person_images


@pytest.fixture
def clustered(library, photos):
    library.index(photos, model="fake")
    library.cluster(model="fake", min_cluster_size=3)
    return library


def _folder_of(lib, person):
    return {it.path.split("/")[-2] for it in lib.items("fake", ids=person.item_ids)}


def test_clusters_become_people(clustered):
    people = clustered.people("fake")
    assert len(people) == 4 and all(p.size == 5 and p.name is None for p in people)
    assert all(len(_folder_of(clustered, p)) == 1 for p in people)


def test_names_survive_reindex_and_recluster(clustered, photos):
    p = clustered.people("fake")[0]
    folder = _folder_of(clustered, p).pop()
    clustered.name_person(p.id, "  Ada   Lovelace ")
    make_person_images(photos / "more", n_people=1, per_person=3, seed=11)
    clustered.index(photos, model="fake")
    clustered.cluster(model="fake", min_cluster_size=3)
    ada = clustered.person("ada lovelace")
    assert ada.name == "Ada Lovelace" and _folder_of(clustered, ada) == {folder}
    assert len(clustered.people("fake")) == 5
    # search hits and the query carry the name
    q = next(it.path for it in clustered.items("fake") if f"/{folder}/" in it.path)
    r = clustered.search(q, k=3, model="fake")[0]
    assert r.person == "Ada Lovelace" and r.hits[0].person == "Ada Lovelace"


def test_merge_survives_recluster(clustered):
    a, b = clustered.people("fake")[:2]
    clustered.name_person(b.id, "Bea")
    merged = clustered.merge_people(a.id, [b.id])
    assert merged.size == 10 and merged.name == "Bea"
    clustered.cluster(model="fake", min_cluster_size=3)
    assert clustered.person("Bea").size == 10
    assert len(clustered.people("fake")) == 3


def test_split_survives_recluster(clustered):
    p = clustered.people("fake")[0]
    moved = p.item_ids[:2]
    new = clustered.split_person(p.id, moved, name="Other")
    assert sorted(new.item_ids) == sorted(moved) and clustered.person(p.id).size == 3
    clustered.cluster(model="fake", min_cluster_size=3)
    assert sorted(clustered.person("Other").item_ids) == sorted(moved)
    assert clustered.person(p.id).size == 3
    with pytest.raises(InputError, match="do not belong"):
        clustered.split_person(p.id, [10**6])


def test_hide_and_errors(clustered):
    p = clustered.people("fake")[0]
    clustered.hide_person(p.id)
    assert p.id not in {x.id for x in clustered.people("fake")}
    assert p.id in {x.id for x in clustered.people("fake", include_hidden=True)}
    with pytest.raises(InputError, match="no person"):
        clustered.person("nobody")
    with pytest.raises(InputError, match="empty"):
        clustered.name_person(p.id, "   ")


def test_forget_removes_items_vectors_and_index_entries(clustered):
    p = clustered.people("fake")[0]
    clustered.name_person(p.id, "Forget Me")
    ids_before, X_before = clustered.vectors("fake")
    gone = set(p.item_ids)
    forgotten_vecs = X_before[np.isin(ids_before, list(gone))]
    paths = {it.path for it in clustered.items("fake", ids=p.item_ids)}
    assert clustered.forget_person("Forget Me") == 5
    ids, _ = clustered.vectors("fake")
    assert not gone & set(ids.tolist()) and len(ids) == 15
    for q in paths:  # the index no longer returns them, even for their own photos
        hits = clustered.search(q, k=15, model="fake")[0].hits
        assert not gone & {h.item_id for h in hits}
    con = sqlite3.connect(clustered.path / "library.sqlite")
    assert con.execute("SELECT COUNT(*) FROM vectors WHERE item_id IN (%s)" % ",".join(map(str, gone))).fetchone()[0] == 0
    con.close()
    raw = (clustered.path / "library.sqlite").read_bytes()
    assert not any(v.astype("<f4").tobytes() in raw for v in forgotten_vecs)
    assert not list((clustered.path / "cluster-models").glob("*.npz"))


def test_people_cli(clustered, tmp_path):
    lib = str(clustered.path)
    run = CliRunner().invoke
    people = json.loads(run(main, ["people", "list", "--library", lib, "--json"]).output)
    assert len(people) == 4
    first, second = people[0]["id"], people[1]["id"]
    r = run(main, ["people", "name", str(first), "Zed", "--library", lib])
    assert r.exit_code == 0 and "Zed" in r.output
    r = run(main, ["people", "merge", "Zed", str(second), "--library", lib])
    assert r.exit_code == 0 and "10 photos" in r.output  # the fake model sees whole photos
    r = run(main, ["people", "hide", "Zed", "--library", lib])
    assert "(hidden)" in r.output
    r = run(main, ["people", "forget", "Zed", "--library", lib, "--yes"])
    assert r.exit_code == 0 and "10 photos removed" in r.output
    r = run(main, ["people", "name", "Zed", "x", "--library", lib])
    assert r.exit_code == 1 and r.output.startswith("Error: no person")
    out = tmp_path / "e.csv"
    assert run(main, ["export", "--library", lib, "--format", "csv", "--out", str(out)]).exit_code == 0
    assert len(out.read_text().splitlines()) == 11
    r = run(main, ["library", "delete", "--library", lib, "--yes"])
    assert r.exit_code == 0 and not clustered.path.exists()
