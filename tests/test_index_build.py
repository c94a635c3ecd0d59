"""The "ivfpq" index kind and the chunked builder (peoplemap.index_build): recall against brute
force, save/load, training from a sample and filling shard by shard from a library's catalog, and
the library's search using the built index."""
from __future__ import annotations

import json
import time

import numpy as np
import pytest

from peoplemap import Library
from peoplemap.config import Settings
from peoplemap.errors import InputError
from peoplemap.index_build import build_ivfpq
from peoplemap.search import VectorIndex, ivfpq_nlist, ivfpq_spec

from test_search import brute_force, clustered, unit

MODEL = "generated-64"


def _recall(I_ref: np.ndarray, I: np.ndarray) -> float:
    return float(np.mean([len(set(a) & set(b)) / I.shape[1] for a, b in zip(I_ref.tolist(), I.tolist())]))


def test_spec_follows_size_and_dimension():
    assert ivfpq_nlist(100) == 32 and ivfpq_nlist(10**6) == 4096 and ivfpq_nlist(10**9) == 65536
    assert ivfpq_nlist(1) == 16
    assert ivfpq_spec(128, 10**6) == "IVF4096,PQ32x8np,Refine(SQ8)"  # 32 bytes, 4 dims per byte
    assert ivfpq_spec(1280, 10**6) == "IVF4096,PQ64x8np,Refine(SQ8)"  # at most 64 bytes
    assert ivfpq_spec(30, 100).startswith("IVF32,PQ6x8")  # a divisor of the dimension


def test_ivfpq_recall_and_save_load(tmp_path):
    rng = np.random.default_rng(3)
    X = clustered(rng, 10_000, 64, n_centres=200, spread=0.6)
    ids = 1000 + 7 * np.arange(len(X), dtype=np.int64)
    Q = clustered(rng, 200, 64, n_centres=200, spread=0.6)
    index = VectorIndex.build(X, ids, kind="ivfpq", stamp="s1")
    assert index.kind == "ivfpq" and len(index) == len(X)
    D_ref, I_ref = VectorIndex.build(X, ids, kind="flat").search(Q, 10)  # exact
    D, I = index.search(Q, 10)
    assert _recall(I_ref, I) >= 0.9
    assert (I >= 1000).all() and ((I - 1000) % 7 == 0).all()
    same = I == I_ref  # re-ranked on 8-bit scalar codes: close to the exact distances
    np.testing.assert_allclose(D[same], D_ref[same], atol=0.02)
    path = tmp_path / "x.faiss"
    index.save(path)
    assert json.loads((tmp_path / "x.faiss.json").read_text())["kind"] == "ivfpq"
    loaded = VectorIndex.load(path)
    assert loaded.kind == "ivfpq" and loaded.stamp == "s1"
    D2, I2 = loaded.search(Q, 10)  # nprobe and k_factor are restored on load
    np.testing.assert_array_equal(I2, I)
    loaded.add(unit(rng, 2, 64), np.array([5, 6]))  # trained: later additions need no training
    assert len(loaded) == len(X) + 2


def test_ivfpq_needs_enough_rows_to_train():
    rng = np.random.default_rng(6)
    with pytest.raises(InputError, match="at least 256 vectors"):
        VectorIndex.build(unit(rng, 100, 16), np.arange(100), kind="ivfpq")


def _fill(lib: Library, X: np.ndarray, first: int = 0) -> list[int]:
    """Store rows of X as one-item images of MODEL, as indexing does; returns their item ids."""
    now = time.time()
    row = lib.catalog.one("SELECT id FROM vector_sets WHERE model = ?", (MODEL,))
    with lib.catalog.write() as c:
        set_id = row[0] if row else c.execute(
            "INSERT INTO vector_sets(model, version, dim, item_kind, description, created_at) "
            "VALUES (?,?,?,?,?,?)", (MODEL, "1", X.shape[1], "face", json.dumps({"model": MODEL}), now)
        ).lastrowid
        ids = []
        for k, x in enumerate(np.ascontiguousarray(X, dtype="<f4")):
            n = first + k
            image_id = c.execute(
                "INSERT INTO images(path, sha256, size, mtime, width, height, format, added_at) "
                "VALUES (?,?,?,?,?,?,?,?)", (f"/g/{n:06d}.jpg", f"{n:064x}", 1, now, 8, 8, "JPEG", now)
            ).lastrowid
            item = c.execute("INSERT INTO items(image_id, set_id, x, y, w, h, score) "
                             "VALUES (?,?,0,0,8,8,1.0)", (image_id, set_id)).lastrowid
            c.execute("INSERT INTO vectors(item_id, vector) VALUES (?, ?)", (item, x.tobytes()))
            c.execute("INSERT INTO processed(image_id, set_id, n_items) VALUES (?, ?, 1)", (image_id, set_id))
            ids.append(item)
        c.execute("UPDATE vector_sets SET generation = generation + 1 WHERE id = ?", (set_id,))
    return ids


@pytest.fixture
def big_lib(tmp_path):
    rng = np.random.default_rng(11)
    X = clustered(rng, 6000, 64, n_centres=100, spread=0.6)
    lib = Library.open(tmp_path / "lib", create=True, settings=Settings(cache_dir=str(tmp_path)))
    ids = np.asarray(_fill(lib, X), dtype=np.int64)
    yield lib, X, ids, rng
    lib.close()


def test_shards_and_sample_cover_the_set(big_lib):
    lib, X, ids, _rng = big_lib
    set_id = lib.vector_set(MODEL).id
    shards = list(lib.store.items.id_shards(set_id, 1000))
    assert [len(s) for s in shards] == [1000] * 6
    np.testing.assert_array_equal(np.concatenate(shards), ids)
    sample = lib.store.items.sample_ids(set_id, 500)
    assert len(sample) == 500 and np.isin(sample, ids).all() and (np.diff(sample) > 0).all()
    np.testing.assert_array_equal(sample, lib.store.items.sample_ids(set_id, 500))  # deterministic
    # spread over the whole set, not its first rows
    assert sample.min() < ids[600] and sample.max() > ids[-600]


def test_build_in_shards_equals_search_and_serves_the_library(big_lib):
    lib, X, ids, rng = big_lib
    calls = []
    index = build_ivfpq(lib, MODEL, shard=700, train_size=2000,
                        progress=lambda stage, done, total: calls.append((stage, done, total)))
    assert index.kind == "ivfpq" and len(index) == len(X)
    np.testing.assert_array_equal(np.sort(index.ids()), ids)
    assert calls[0] == ("ivfpq", 0, 6000) and calls[-1] == ("ivfpq", 6000, 6000)
    assert len(calls) == 1 + 9  # one call per shard of 700
    Q = X[rng.choice(len(X), 100, replace=False)]
    D_ref, I_ref = brute_force(X, ids, Q, 10)
    D, I = index.search(Q, 10)
    assert _recall(I_ref, I) >= 0.9
    # saved as the library's index with the set's stamp: search uses it as it is
    used = lib.index_for(MODEL)
    assert used.kind == "ivfpq" and len(used) == len(X)
    np.testing.assert_array_equal(used.search(Q, 10)[1], I)
    # items added later are added to it, not rebuilt into another kind
    new = _fill(lib, clustered(rng, 50, 64, n_centres=100, spread=0.6), first=len(X))
    grown = lib.index_for(MODEL)
    assert grown.kind == "ivfpq" and len(grown) == len(X) + 50 and set(new) <= set(grown.ids().tolist())


def test_build_refuses_a_set_too_small(tmp_path):
    rng = np.random.default_rng(1)
    with Library.open(tmp_path / "lib", create=True, settings=Settings(cache_dir=str(tmp_path))) as lib:
        _fill(lib, unit(rng, 100, 16))
        with pytest.raises(InputError, match="at least 256 items"):
            build_ivfpq(lib, MODEL)
        with pytest.raises(InputError, match="shard"):
            build_ivfpq(lib, MODEL, shard=0)


def test_cli_index_builds_the_ivfpq_search_index(tmp_path):
    from click.testing import CliRunner

    from conftest import make_person_images
    from peoplemap.cli import main

    photos = tmp_path / "photos"
    make_person_images(photos, n_people=26, per_person=10)
    lib = tmp_path / "lib"
    env = {"PEOPLEMAP_CACHE_DIR": str(tmp_path / "cache")}
    r = CliRunner(env=env).invoke(main, ["index", str(photos), "--library", str(lib), "--model", "fake",
                                         "--search-index", "ivfpq"])
    assert r.exit_code == 0, r.output
    assert "Built an ivfpq search index of 260 items." in r.stdout
    with Library.open(lib) as L:
        index = L.index_for("fake")
        assert index.kind == "ivfpq" and len(index) == 260
        hit = L.search(next(photos.rglob("*.png")), k=3, model="fake")[0].hits[0]
        assert hit.distance < 0.1  # the query image itself, found through the ivfpq index
