"""VectorIndex against brute-force numpy, ties tolerated (like faiss contrib/evaluation.py)."""
from __future__ import annotations

import json

import numpy as np
import pytest

from peoplemap import search
from peoplemap.errors import InputError, LibraryError
from peoplemap.search import VectorIndex


def unit(rng: np.random.Generator, n: int, d: int) -> np.ndarray:
    X = rng.normal(size=(n, d))
    return (X / np.linalg.norm(X, axis=1, keepdims=True)).astype(np.float32)


def clustered(rng: np.random.Generator, n: int, d: int, n_centres: int, spread: float) -> np.ndarray:
    centres = unit(rng, n_centres, d)
    X = centres[rng.integers(0, n_centres, size=n)] + spread / np.sqrt(d) * rng.normal(size=(n, d))
    return (X / np.linalg.norm(X, axis=1, keepdims=True)).astype(np.float32)


def brute_force(X: np.ndarray, ids: np.ndarray, Q: np.ndarray, k: int):
    d = np.sqrt(np.maximum(((Q[:, None, :].astype(np.float64) - X[None, :, :]) ** 2).sum(-1), 0))
    order = np.argsort(d, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(d, order, axis=1), ids[order]


def check_knn_with_ties(D_ref, I_ref, D, I, tol=1e-5):
    """Distances equal within tol; ids equal as sets, leaving out results tied with the k-th one."""
    np.testing.assert_allclose(D, D_ref, atol=tol)
    for i in range(len(D_ref)):
        cut = D_ref[i, -1] - tol
        assert set(I_ref[i][D_ref[i] < cut].tolist()) == set(I[i][D[i] < cut].tolist())


def test_flat_matches_brute_force_with_ids_and_ties():
    rng = np.random.default_rng(0)
    X = unit(rng, 500, 32)
    X = np.vstack([X, X[:20]])  # exact duplicates under other ids: ties
    ids = 1000 + 7 * np.arange(len(X), dtype=np.int64)
    Q = np.vstack([unit(rng, 30, 32), X[:5]])
    index = VectorIndex.build(X, ids)
    assert index.kind == "flat" and len(index) == len(X) and index.dim == 32
    D, I = index.search(Q, 10)
    assert D.shape == I.shape == (35, 10) and I.dtype == np.int64
    assert (np.diff(D, axis=1) >= -1e-6).all()  # nearest first
    D_ref, I_ref = brute_force(X, ids, Q, 10)
    check_knn_with_ties(D_ref, I_ref, D, I)
    assert set(I.ravel().tolist()) <= set(ids.tolist())
    # a query equal to a stored vector finds it (or its duplicate) at distance ~0
    assert np.allclose(D[30:, 0], 0, atol=1e-3)
    assert all(I[30 + j, 0] in (ids[j], ids[500 + j]) for j in range(5))


def test_add_then_search_equals_build_at_once():
    rng = np.random.default_rng(1)
    X = unit(rng, 300, 16)
    ids = 5 + 3 * np.arange(300, dtype=np.int64)
    index = VectorIndex.build(X[:100], ids[:100])
    index.add(X[100:], ids[100:])
    Q = unit(rng, 10, 16)
    D_ref, I_ref = brute_force(X, ids, Q, 5)
    check_knn_with_ties(D_ref, I_ref, *index.search(Q, 5))
    np.testing.assert_array_equal(index.ids(), ids)


def test_k_larger_than_n_pads_with_minus_one():
    rng = np.random.default_rng(2)
    X = unit(rng, 3, 8)
    for kind in ("flat", "hnsw"):
        index = VectorIndex.build(X, np.array([10, 20, 30]), kind=kind)
        D, I = index.search(X[0], 6)  # a 1-D query is one query
        assert I.shape == (1, 6)
        assert sorted(I[0, :3].tolist()) == [10, 20, 30] and I[0, 0] == 10
        assert (I[0, 3:] == -1).all() and np.isinf(D[0, 3:]).all() and np.isfinite(D[0, :3]).all()
    empty = VectorIndex.build(np.zeros((0, 8), np.float32), np.zeros(0, np.int64))
    D, I = empty.search(X, 2)
    assert (I == -1).all() and np.isinf(D).all() and len(empty) == 0


@pytest.mark.parametrize("kind", ["pq", "hnsw"])
def test_approximate_recall_at_10(kind):
    rng = np.random.default_rng(3)
    X = clustered(rng, 20_000, 64, n_centres=200, spread=0.6)
    ids = 1000 + 7 * np.arange(len(X), dtype=np.int64)
    Q = clustered(rng, 200, 64, n_centres=200, spread=0.6)
    exact = VectorIndex.build(X, ids, kind="flat")
    approx = VectorIndex.build(X, ids, kind=kind)
    assert approx.kind == kind
    D_ref, I_ref = exact.search(Q, 10)
    D, I = approx.search(Q, 10)
    recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(I_ref.tolist(), I.tolist())])
    assert recall >= 0.95, recall
    assert (I >= 1000).all() and ((I - 1000) % 7 == 0).all()
    if kind == "pq":  # candidates are re-ranked with exact distances
        same = I == I_ref
        np.testing.assert_allclose(D[same], D_ref[same], rtol=1e-4)


def test_pq_index_needs_enough_rows_to_train():
    rng = np.random.default_rng(6)
    with pytest.raises(InputError, match="at least 64 vectors"):
        VectorIndex.build(unit(rng, 10, 8), np.arange(10), kind="pq")
    index = VectorIndex.build(unit(rng, 100, 8), np.arange(100), kind="pq")
    index.add(unit(rng, 3, 8), np.array([500, 501, 502]))  # later additions need no training
    assert len(index) == 103 and index.search(unit(rng, 1, 8), 5)[1].shape == (1, 5)


def test_auto_kind_follows_threshold(monkeypatch):
    rng = np.random.default_rng(4)
    X = unit(rng, 100, 8)
    assert VectorIndex.build(X, np.arange(100)).kind == "flat"
    monkeypatch.setattr(search, "APPROX_THRESHOLD", 80)
    assert VectorIndex.build(X, np.arange(100)).kind == "pq"


@pytest.mark.parametrize("kind", ["flat", "pq", "hnsw"])
def test_save_load_round_trip(tmp_path, kind):
    rng = np.random.default_rng(5)
    X = unit(rng, 1000, 24)
    ids = 1000 + 7 * np.arange(1000, dtype=np.int64)
    index = VectorIndex.build(X, ids, kind=kind, stamp="vectors:42:model-v1")
    Q = unit(rng, 20, 24)
    before = index.search(Q, 10)
    path = tmp_path / "items.faiss"
    index.save(path)
    meta = json.loads((tmp_path / "items.faiss.json").read_text())
    assert meta | {"format": None} == {"format": None, "kind": kind, "dim": 24, "n": 1000, "stamp": "vectors:42:model-v1"}
    assert VectorIndex.read_meta(path)["stamp"] == "vectors:42:model-v1"
    loaded = VectorIndex.load(path)
    assert loaded.kind == kind and loaded.stamp == index.stamp and len(loaded) == 1000
    after = loaded.search(Q, 10)
    np.testing.assert_array_equal(after[1], before[1])
    np.testing.assert_array_equal(after[0], before[0])
    # a loaded index keeps growing under the same ids
    loaded.add(unit(rng, 2, 24), np.array([5, 6]))
    assert len(loaded) == 1002


def test_load_refuses_missing_or_mismatched(tmp_path):
    rng = np.random.default_rng(6)
    path = tmp_path / "i.faiss"
    with pytest.raises(LibraryError, match="rebuild"):
        VectorIndex.load(path)
    VectorIndex.build(unit(rng, 10, 8), np.arange(10)).save(path)
    side = tmp_path / "i.faiss.json"
    meta = json.loads(side.read_text())
    side.write_text(json.dumps({**meta, "n": 11}))
    with pytest.raises(LibraryError, match="does not match"):
        VectorIndex.load(path)
    path.write_bytes(b"not an index")
    side.write_text(json.dumps(meta))
    with pytest.raises(LibraryError, match="cannot read index"):
        VectorIndex.load(path)


def test_validation_errors():
    rng = np.random.default_rng(7)
    X = unit(rng, 10, 8)
    index = VectorIndex.build(X, np.arange(10))
    with pytest.raises(InputError, match="dimension 9 but the index has dimension 8"):
        index.search(unit(rng, 1, 9), 3)
    with pytest.raises(InputError, match="dimension 9 but the index has dimension 8"):
        index.add(unit(rng, 1, 9), [99])
    bad = X[:2].copy()
    bad[1, 3] = np.nan
    with pytest.raises(InputError, match="NaN or infinite"):
        index.search(bad, 3)
    with pytest.raises(InputError, match="NaN or infinite"):
        VectorIndex.build(bad, [1, 2])
    for k in (0, -1, 2.5):
        with pytest.raises(InputError, match="k must be"):
            index.search(X[:1], k)
    with pytest.raises(InputError, match="L2-normalised"):
        index.search(X[:1] * 3, 3)
    with pytest.raises(InputError, match="already in the index"):
        index.add(X[:1], [3])
    with pytest.raises(InputError, match="unique"):
        VectorIndex.build(X[:2], [4, 4])
    with pytest.raises(InputError, match="one id per vector"):
        VectorIndex.build(X, np.arange(9))
    with pytest.raises(InputError, match="non-negative"):
        VectorIndex.build(X[:1], [-1])
    with pytest.raises(InputError, match="Must be one of"):
        VectorIndex.build(X, np.arange(10), kind="ivf")
