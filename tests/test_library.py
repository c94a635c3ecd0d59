"""The Library on generated images with the fake embedder: incremental indexing, the item-id
invariant, clustering, search, export and the writer lock."""
from __future__ import annotations

import csv
import json
import os
import shutil
import sqlite3
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from peoplemap import Library, LibraryBusyError, LibraryError, NOISE
from peoplemap.errors import InputError

from conftest import make_person_images


def test_index_counts_and_rerun_is_incremental(library, photos):
    s = library.index(photos, model="fake")
    assert (s.files_seen, s.new, s.unchanged, s.items_added) == (20, 20, 0, 20)
    assert s.skipped == []
    s2 = library.index(photos, model="fake")
    assert (s2.new, s2.changed, s2.unchanged, s2.removed, s2.items_added) == (0, 0, 20, 0, 0)


def test_changed_deleted_and_copied_files(library, photos):
    library.index(photos, model="fake")
    ids_before, _ = library.vectors("fake")
    # change one file's content, delete one, copy one under a new name
    changed = photos / "person0" / "img0.jpg"
    Image.new("RGB", (64, 80), (10, 200, 30)).save(changed)
    os.remove(photos / "person1" / "img1.png")
    shutil.copy(photos / "person2" / "img2.jpg", photos / "person2" / "copy.jpg")
    s = library.index(photos, model="fake")
    assert (s.changed, s.removed, s.new, s.reused) == (1, 1, 1, 1)
    assert s.items_added == 2
    ids, X = library.vectors("fake")
    assert len(ids) == 20
    paths = {it.path for it in library.items("fake")}
    assert str(photos / "person1" / "img1.png") not in paths
    copy = [it for it in library.items("fake") if it.path.endswith("copy.jpg")][0]
    orig = [it for it in library.items("fake") if it.path.endswith("person2/img2.jpg")][0]
    np.testing.assert_array_equal(X[list(ids).index(copy.id)], X[list(ids).index(orig.id)])


def test_bad_files_are_recorded_and_indexing_goes_on(library, photos):
    (photos / "empty.jpg").write_bytes(b"")
    (photos / "notes.png").write_text("hello, not an image")
    (photos / "trunc.jpg").write_bytes((photos / "person0" / "img0.jpg").read_bytes()[:200])
    s = library.index(photos, model="fake")
    reasons = {Path(k.path).name: k.reason for k in s.skipped}
    assert set(reasons) == {"empty.jpg", "notes.png", "trunc.jpg"}
    assert all(reasons.values())
    assert s.items_added == 20
    assert {Path(k.path).name for k in library.skipped()} == set(reasons)
    # unchanged bad files are not retried; a fixed one is picked up; a deleted one forgotten
    os.remove(photos / "notes.png")
    shutil.copy(photos / "person3" / "img1.png", photos / "empty.jpg")
    s2 = library.index(photos, model="fake")
    assert {Path(k.path).name for k in s2.skipped} == {"trunc.jpg"}
    assert s2.items_added == 1


def test_item_id_invariant(library, photos):
    """An item id is the same row in the catalog, the vectors, the index, labels and hits."""
    library.index(photos, model="fake")
    library.cluster(model="fake")
    ids, X = library.vectors("fake")
    items = library.items("fake")
    assert list(ids) == [it.id for it in items]
    assert set(library.labels("fake")) == set(ids.tolist())
    idx = library.index_for("fake")
    D, I = idx.search(X, 1)
    np.testing.assert_array_equal(I[:, 0], ids)  # each vector finds its own item first
    hits = library.search(items[3].path, k=3, model="fake")[0].hits
    assert hits[0].item_id == items[3].id and hits[0].path == items[3].path
    assert hits[0].distance == pytest.approx(0.0, abs=1e-3)


def test_cluster_finds_the_generated_people(library, photos):
    library.index(photos, model="fake")
    summary = library.cluster(model="fake", min_cluster_size=3)
    assert summary.n_clusters == 4 and summary.n_noise == 0
    clusters = library.clusters("fake")
    people = [{Path(it.path).parent.name for it in library.items("fake", ids=c.item_ids)}
              for c in clusters]
    assert all(len(p) == 1 for p in people)
    assert sorted(c.size for c in clusters) == [5, 5, 5, 5]


def test_seed_profile_runs_on_stored_vectors(library, photos):
    library.index(photos, model="fake")
    s = library.cluster(model="fake", profile="seed")
    assert s.profile == "seed" and s.n_items == 20
    assert library.clustering("fake").profile == "seed"


def test_search_assigns_query_to_its_person(library, photos, tmp_path):
    library.index(photos, model="fake")
    library.cluster(model="fake", min_cluster_size=3)
    # a new, unseen image of person2: same layout, fresh noise
    q = tmp_path / "query.png"
    src = np.asarray(Image.open(photos / "person2" / "img0.jpg"), dtype=np.float32)
    Image.fromarray(np.clip(src + np.random.default_rng(9).normal(0, 4, src.shape), 0, 255)
                    .astype(np.uint8)).save(q)
    r = library.search(q, k=5, model="fake")[0]
    person2 = {it.id for it in library.items("fake") if "/person2/" in it.path}
    assert {h.item_id for h in r.hits} == person2
    assert r.cluster == r.hits[0].cluster and r.cluster is not None
    assert 0 < r.confidence <= 1
    # bytes work the same as a path
    r2 = library.search(q.read_bytes(), k=5, model="fake", name="q.png")[0]
    assert [h.item_id for h in r2.hits] == [h.item_id for h in r.hits] and r2.query == "q.png"


def test_search_rejects_bad_queries(library, photos, tmp_path):
    library.index(photos, model="fake")
    with pytest.raises(InputError, match="not an image"):
        library.search(b"plain text, not an image", model="fake")
    with pytest.raises(InputError, match="does not exist"):
        library.search(tmp_path / "nope.jpg", model="fake")
    with pytest.raises(InputError, match="k must be"):
        library.search(photos / "person0" / "img0.jpg", k=0, model="fake")


def test_index_rebuilt_when_stale(library, photos):
    library.index(photos, model="fake")
    assert len(library.index_for("fake")) == 20
    make_person_images(photos / "more", n_people=1, per_person=3, seed=5)
    library.index(photos, model="fake")
    assert len(library.index_for("fake")) == 23
    # a fresh Library object loads the saved index, which matches the catalog
    other = Library.open(library.path, settings=library.settings)
    assert len(other.index_for("fake")) == 23
    other.close()


def test_new_images_are_placed_and_removals_mark_the_clustering_stale(library, photos):
    library.index(photos, model="fake")
    library.cluster(model="fake")
    assert library.clustering("fake").stale is False
    make_person_images(photos / "more", n_people=1, per_person=2, seed=3)
    s = library.index(photos, model="fake")
    # new items get a label at once (placed with a cluster or unsorted), so nothing is stale
    assert s.assignment.new_items == 2
    assert library.clustering("fake").stale is False
    assert len(library.labels("fake")) == len(library.items("fake"))
    next(photos.glob("person0/*")).unlink()
    library.index(photos, model="fake")
    assert library.clustering("fake").stale is True


def test_version_change_refused_with_instructions(library, photos, monkeypatch):
    library.index(photos, model="fake")
    from conftest import FakeEmbedder
    monkeypatch.setattr(FakeEmbedder, "version", "2")
    library._embedders.clear()
    with pytest.raises(LibraryError, match="--rebuild"):
        library.index(photos, model="fake")
    s = library.index(photos, model="fake", rebuild=True)
    assert s.items_added == 20 and library.vector_set("fake").version == "2"


def test_writer_lock_refuses_second_writer(library, photos):
    with library.writing("test holder"):
        with pytest.raises(LibraryBusyError, match="busy: `test holder`"):
            library.index(photos, model="fake")


def test_open_refuses_non_library(tmp_path):
    (tmp_path / "stuff").mkdir()
    (tmp_path / "stuff" / "a.txt").write_text("x")
    with pytest.raises(LibraryError, match="not a peoplemap library"):
        Library.open(tmp_path / "stuff", create=True)
    with pytest.raises(LibraryError, match="no peoplemap library"):
        Library.open(tmp_path / "missing")
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "library.sqlite").write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(LibraryError, match="not a peoplemap library"):
        Library.open(bad)


def test_sqlite_is_wal_and_whole(library, photos):
    library.index(photos, model="fake")
    con = sqlite3.connect(library.path / "library.sqlite")
    assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    n_items = con.execute("SELECT COUNT(*) FROM items").fetchone()[0]
    assert con.execute("SELECT COUNT(*) FROM vectors").fetchone()[0] == n_items == 20


def test_export_csv_json_folders(library, photos, tmp_path):
    library.index(photos, model="fake")
    library.cluster(model="fake", min_cluster_size=3)
    out_csv = library.export("csv", tmp_path / "out.csv")
    rows = list(csv.DictReader(open(out_csv, encoding="utf-8")))
    assert len(rows) == 20
    assert {"item_id", "path", "box", "cluster", "person_name"} <= set(rows[0])
    data = json.loads(library.export("json", tmp_path / "out.json").read_text())
    assert len(data["items"]) == 20 and {r["cluster"] for r in data["items"]} == {0, 1, 2, 3}
    before = {p: p.read_bytes() for p in photos.rglob("*") if p.is_file()}
    folders = library.export("folders", tmp_path / "byperson")
    dirs = sorted(d.name for d in folders.iterdir() if d.is_dir())
    assert dirs == sorted(p.label for p in library.people())  # "Person 3": as the app shows it
    links = [p for p in folders.rglob("*") if p.name != ".peoplemap-export.json"]
    assert all(p.is_symlink() for p in links if not p.is_dir())
    assert sum(1 for p in links if p.is_symlink()) == 20
    assert {p: p.read_bytes() for p in photos.rglob("*") if p.is_file()} == before
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("not an export")
    with pytest.raises(InputError, match="not empty"):
        library.export("folders", tmp_path / "mine")
    with pytest.raises(InputError, match="unknown export format"):
        library.export("xml", tmp_path / "x.xml")


def test_delete_removes_library(library, photos):
    library.index(photos, model="fake")
    path = library.path
    library.delete()
    assert not path.exists()
    assert (photos / "person0" / "img0.jpg").exists()


def test_broken_model_fails_before_anything_is_written(library, photos, monkeypatch):
    from conftest import FakeEmbedder
    from peoplemap.errors import ModelError

    def broken_load(self):
        raise ModelError("weights missing")

    monkeypatch.setattr(FakeEmbedder, "load", broken_load, raising=False)
    with pytest.raises(ModelError, match="weights missing"):
        library.index(photos, model="fake")
    assert library.vector_sets() == []


def test_second_model_on_known_files_counts_them_as_new(library, photos):
    library.index(photos, model="fake")
    from peoplemap.embed.registry import register
    from conftest import FakeEmbedder

    class Other(FakeEmbedder):
        name = "fake2"

    register("fake2", "second test model")(Other)
    s = library.index(photos, model="fake2")
    assert (s.new, s.unchanged, s.items_added) == (20, 0, 20)
    assert [v.model for v in library.vector_sets()] == ["fake", "fake2"]
    assert library.vector_set("fake").n_items == 20  # switching never re-extracts


def test_connections_of_finished_threads_are_closed(library, photos):
    import threading

    library.index(photos, model="fake")
    for _ in range(20):
        t = threading.Thread(target=lambda: library.labels("fake"))
        t.start()
        t.join()
    library.labels("fake")
    assert library.catalog.connections() <= 3


def test_model_failure_mid_run_keeps_whole_batches_and_resumes(tmp_path, settings, monkeypatch):
    """The model runs in its own thread, a batch ahead of the writes: when it fails, the error
    reaches the caller, the library holds only whole batches, and the next run finishes the job."""
    from dataclasses import replace

    from conftest import FakeEmbedder
    from peoplemap.errors import ModelError

    photos = tmp_path / "many"
    make_person_images(photos, n_people=8, per_person=8)  # 64 images, batches of 4
    calls = {"n": 0}
    real_embed = FakeEmbedder.embed

    def failing_embed(self, crops):
        calls["n"] += 1
        if calls["n"] == 5:
            raise ModelError("out of memory on batch 5")
        return real_embed(self, crops)

    monkeypatch.setattr(FakeEmbedder, "embed", failing_embed)
    with Library.open(tmp_path / "lib", create=True, settings=replace(settings, batch_size=4)) as lib:
        with pytest.raises(ModelError, match="batch 5"):
            lib.index(photos, model="fake")
        n = lib.catalog.one("SELECT COUNT(*) FROM processed")[0]
        assert n % 4 == 0 and 0 < n <= 16  # batches 1-4 at most; nothing of batch 5
        assert lib.catalog.one("SELECT COUNT(*) FROM items")[0] == n
        monkeypatch.setattr(FakeEmbedder, "embed", real_embed)
        s = lib.index(photos, model="fake")
        assert (s.unchanged, s.new, s.items_added) == (n, 64 - n, 64 - n)


def test_model_runs_in_its_own_thread_on_preprocessed_batches(tmp_path, settings):
    """A model with preprocess/embed_preprocessed is preprocessed in the indexing thread and run in
    the model thread; the vectors are those of embed()."""
    import threading

    from conftest import FakeEmbedder
    from peoplemap.embed.registry import register

    threads: dict[str, set] = {"preprocess": set(), "run": set()}

    class TwoPhase(FakeEmbedder):
        name = "fake-two-phase"
        two_phase = True

        def preprocess(self, crops):
            threads["preprocess"].add(threading.current_thread().name)
            return list(crops)

        def embed_preprocessed(self, x):
            threads["run"].add(threading.current_thread().name)
            return self.embed(x)

    register("fake-two-phase", "test-only: fake with a separate preprocessing step")(TwoPhase)
    photos = tmp_path / "photos"
    make_person_images(photos)
    with Library.open(tmp_path / "lib", create=True, settings=settings) as lib:
        lib.index(photos, model="fake-two-phase")
        lib.index(photos, model="fake")
        a, b = lib.vectors("fake-two-phase")[1], lib.vectors("fake")[1]
        np.testing.assert_array_equal(a, b)
    assert threads["preprocess"] == {threading.main_thread().name}
    assert threads["run"] and all(t.startswith("peoplemap-model") for t in threads["run"])


@pytest.mark.slow
def test_face_worker_processes_match_one_process(tmp_path, settings, caplog):
    """Face mode spreads files over worker processes (and this process, while they start): same
    faces, boxes and vectors, in the same order, as one process."""
    import logging
    from dataclasses import replace

    from conftest import shared_set

    folder = shared_set("dlib_johns")
    got = {}
    for workers in (1, 3):
        with caplog.at_level(logging.DEBUG, logger="peoplemap.indexing_work"), \
                Library.open(tmp_path / f"lib{workers}", create=True,
                             settings=replace(settings, workers=workers)) as lib:
            s = lib.index(folder, model="face")
            items = lib.items("face")
            ids, X = lib.vectors("face")
            got[workers] = (s.items_added, [(it.path, it.box) for it in items], X)
    assert got[1][0] == got[3][0] >= 55
    assert got[1][1] == got[3][1]
    np.testing.assert_allclose(got[1][2], got[3][2], atol=1e-5)
    assert any("all 3 worker processes ready" in r.getMessage() for r in caplog.records)


def test_progress_is_reported_per_file(library, photos):
    """Every file reports as its work comes back, not once per committed batch (batch_size 8)."""
    seen = []
    library.index(photos, model="fake", progress=lambda stage, done, total: seen.append((stage, done, total))
                  if stage == "index" else None)
    counts = [d for _s, d, _t in seen]
    assert set(range(1, 21)) <= set(counts) and counts[-1] == 20
    assert all(t == 20 for _s, _d, t in seen)
