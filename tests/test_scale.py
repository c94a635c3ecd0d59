"""Scale paths: kNN graphs, HDBSCAN over a kNN graph, HNSW-backed assignment, streaming vector reads,
and placing newly indexed items with existing people without re-clustering."""
from __future__ import annotations

import logging
import sqlite3
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import peoplemap.knn as knn
from peoplemap.cluster import Clusterer, _cluster_radii, _radii_from_knn, ann_path, assign, load_model, save_model
from peoplemap.errors import LibraryError
from peoplemap.evaluate import bcubed_prf
from peoplemap.graph_hdbscan import graph_hdbscan
from peoplemap.types import NOISE

from conftest import make_person_images

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from make_embeddings import make_embeddings  # noqa: E402


@pytest.fixture(scope="module")
def identities():
    return make_embeddings(3000, seed=1)


def test_knn_graph_exact_excludes_self_and_is_sorted(identities):
    X, _ = identities
    dist, nbr, _index = knn.knn_graph(X[:500], 8)
    assert dist.shape == nbr.shape == (500, 8)
    assert not (nbr == np.arange(500)[:, None]).any()
    assert (np.diff(dist, axis=1) >= -1e-6).all()
    d_true = np.linalg.norm(X[:500, None, :] - X[None, :500, :], axis=2)
    np.fill_diagonal(d_true, np.inf)
    np.testing.assert_allclose(dist[:, 0], d_true.min(axis=1), atol=1e-4)


def test_knn_graph_pads_when_too_few_points():
    X = np.eye(3, 4, dtype=np.float32)
    dist, nbr, _ = knn.knn_graph(X, 5)
    assert (nbr[:, 2:] == -1).all() and np.isinf(dist[:, 2:]).all()
    assert set(nbr[0, :2]) == {1, 2}


def test_knn_graph_hnsw_finds_the_same_identity_neighbours(identities):
    X, y = identities
    exact_d, exact_i, _ = knn.knn_graph(X, 4)
    d, i, index = knn.knn_graph(X, 4, exact_max=0)
    assert hasattr(index, "hnsw")
    recall = np.mean([len(set(a) & set(b)) / 4 for a, b in zip(exact_i, i)])
    assert recall > 0.9, recall


def test_graph_hdbscan_matches_exact_quality(identities):
    X, y = identities
    exact = Clusterer("default", algorithm="best").fit(X)
    graph = Clusterer("default", algorithm="knn-graph").fit(X)
    assert exact.params_["algorithm"] == "best" and graph.params_["algorithm"] == "knn-graph"
    f_exact = bcubed_prf(y, exact.labels_)[2]
    f_graph = bcubed_prf(y, graph.labels_)[2]
    assert f_exact > 0.85 and abs(f_exact - f_graph) <= 0.02, (f_exact, f_graph)
    assert 0 < graph.n_clusters_ and set(np.unique(graph.labels_)) <= set(range(-1, graph.n_clusters_))


def test_auto_algorithm_switches_on_size(identities, monkeypatch):
    import peoplemap.cluster as cluster

    X, _ = identities
    assert Clusterer("default").fit(X[:300]).params_["algorithm"] == "best"
    monkeypatch.setattr(cluster, "GRAPH_MIN", 200)
    assert Clusterer("default").fit(X[:300]).params_["algorithm"] == "knn-graph"


def test_radii_from_graph_equal_exact_radii(identities):
    X, _ = identities
    Z = X / np.linalg.norm(X, axis=1, keepdims=True)
    r = graph_hdbscan(Z, min_cluster_size=2, min_samples=2, cluster_selection_epsilon=0.25, k=3)
    labels = r.labels
    member = labels != NOISE
    exact = _cluster_radii(Z[member], labels[member], int(labels.max()) + 1)
    np.testing.assert_allclose(_radii_from_knn(Z, labels, r.dist, r.nbr), exact, rtol=1e-5, atol=1e-6)


def test_graph_pieces_are_joined_into_one_tree():
    rng = np.random.default_rng(0)
    centres = rng.standard_normal((6, 16)) * 10
    X = np.concatenate([c + rng.standard_normal((20, 16)) * 0.1 for c in centres]).astype(np.float32)
    r = graph_hdbscan(X, min_cluster_size=5, min_samples=2, k=4)  # 4-NN never leaves a group of 20
    assert r.n_pieces == 6
    truth = np.repeat(np.arange(6), 20)
    assert bcubed_prf(truth, r.labels)[2] == pytest.approx(1.0)


def test_hnsw_assignment_survives_save_and_load(identities, tmp_path, monkeypatch, caplog):
    X, y = identities
    monkeypatch.setattr(knn, "EXACT_MAX", 0)  # force the HNSW graph at test size
    model = Clusterer("default", algorithm="knn-graph").fit(X[:2500])
    assert model.ann_index_ is not None
    q = X[2500:]
    before = assign(model, q)
    path = tmp_path / "m.npz"
    save_model(model, path)
    assert ann_path(path).exists()
    loaded = load_model(path)
    after = assign(loaded, q)
    assert [a.cluster for a in after] == [a.cluster for a in before]
    placed = [a for a in after if a.cluster is not None]
    assert len(placed) > len(q) // 2
    # A damaged neighbour index falls back to exact search, with a warning, not a crash.
    ann_path(path).write_bytes(b"not an index")
    with caplog.at_level(logging.WARNING):
        fallback = load_model(path)
    assert fallback.ann_index_ is None and "neighbour index" in caplog.text
    agree = np.mean([a.cluster == b.cluster for a, b in zip(assign(fallback, q), after)])
    assert agree > 0.95


def test_vectors_streams_and_selects_ids(library, photos):
    library.index(photos, model="fake")
    ids, X = library.vectors("fake")
    assert X.dtype == np.float32 and X.shape == (len(ids), 48) and (np.diff(ids) > 0).all()
    some = [int(ids[3]), int(ids[0]), 10_000_000]
    sub_ids, sub = library.vectors("fake", ids=some)
    assert sub_ids.tolist() == sorted(some[:2])
    np.testing.assert_array_equal(sub, X[[0, 3]])
    with sqlite3.connect(library.path / "library.sqlite") as db:
        db.execute("UPDATE vectors SET vector = x'00' WHERE item_id = ?", (int(ids[2]),))
    with pytest.raises(LibraryError, match="vector 2 has 1 bytes"):
        library.vectors("fake")


def _person_folders(lib, person):
    return {it.path.split("/")[-2] for it in lib.items("fake", ids=person.item_ids)}


def test_new_items_join_existing_people_without_reclustering(library, photos):
    library.index(photos, model="fake")
    library.cluster(model="fake", min_cluster_size=3)
    ada = library.people("fake")[0]
    library.name_person(ada.id, "Ada")
    folder = _person_folders(library, ada).pop()
    cid = library.clustering("fake").id
    # Two new photos of each of the four people (their first two, re-noised), and one stranger.
    rng = np.random.default_rng(5)
    for person in sorted(p.name for p in photos.iterdir()):
        (photos / "more" / person).mkdir(parents=True)
        for src in sorted((photos / person).glob("img[01].*")):
            img = np.asarray(Image.open(src), dtype=np.float32)
            noisy = np.clip(img + rng.normal(0, 4, img.shape), 0, 255).astype(np.uint8)
            Image.fromarray(noisy).save(photos / "more" / person / f"new-{src.stem}.png")
    make_person_images(photos / "stranger", n_people=1, per_person=1, seed=99)
    s = library.index(photos, model="fake")
    a = s.assignment
    assert a.new_items == s.items_added == 4 * 2 + 1
    assert a.assigned == 4 * 2 and a.unsorted == 1
    c = library.clustering("fake")
    assert c.id == cid and not c.stale
    ada = library.person("Ada")
    assert ada.size == 5 + 2 and _person_folders(library, ada) == {folder}
    assert len(library.people("fake")) == 4
    assert len(library.unsorted("fake")) == 1
    # A full re-cluster regroups everything and keeps the name.
    library.cluster(model="fake", min_cluster_size=3)
    assert library.person("Ada").size == 7


def test_search_index_grows_in_place_and_rebuilds_after_removals(library, photos):
    library.index(photos, model="fake")
    first = library.index_for("fake")
    assert len(first) == 20
    make_person_images(photos / "more", n_people=1, per_person=3, seed=7)
    library.index(photos, model="fake")
    grown = library.index_for("fake")
    assert grown is first and len(grown) == 23  # added to, not rebuilt
    ids, X = library.vectors("fake")
    _, hit = grown.search(X[-1], 1)
    assert hit[0, 0] == ids[-1]
    # a fresh Library loads the saved, grown index
    from peoplemap import Library

    other = Library.open(library.path, settings=library.settings)
    assert sorted(other.index_for("fake").ids()) == sorted(ids.tolist())
    other.close()
    next(photos.glob("person0/*")).unlink()
    library.index(photos, model="fake")
    rebuilt = library.index_for("fake")
    assert rebuilt is not first and len(rebuilt) == 22
