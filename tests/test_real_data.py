"""End to end on real labeled images from ../shared/data with the real mobilenetv2 model, through
the CLI contract: index, cluster (both profiles), search --json, export, info."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from peoplemap import Library, NOISE
from peoplemap.cli import main

from conftest import shared_set

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def johns_lib(tmp_path_factory):
    """dlib_johns (55 face photos of 5 Johns + 1 group photo + SOURCE.txt) indexed by the CLI."""
    base = tmp_path_factory.mktemp("johns")
    lib = base / "lib"
    env = {"PEOPLEMAP_CACHE_DIR": str(tmp_path_factory.getbasetemp() / "model-cache")}
    r = CliRunner(env=env).invoke(main, ["index", str(shared_set("dlib_johns")), "--library", str(lib), "--model", "mobilenetv2",
                                         "--json"])
    assert r.exit_code == 0, r.output
    return lib, json.loads(r.stdout), env  # progress lines go to stderr


def test_index_summary_counts_real_files(johns_lib):
    _lib, s, _env = johns_lib
    files = [p for p in shared_set("dlib_johns").rglob("*") if p.is_file()]
    assert s["files_seen"] == len(files)
    assert [Path(k["path"]).name for k in s["skipped"]] == ["SOURCE.txt"]
    assert "not an image" in s["skipped"][0]["reason"]
    assert s["items_added"] == len(files) - 1


def test_search_json_contract_on_real_images(johns_lib):
    lib, _s, env = johns_lib
    r = CliRunner(env=env).invoke(main, ["cluster", "--library", str(lib)])
    assert r.exit_code == 0, r.output
    people = sorted(p for p in shared_set("dlib_johns").iterdir() if p.is_dir() and not p.name.startswith("_"))
    queries = [str(sorted(p.iterdir())[0]) for p in people[:2]]
    r = CliRunner(env=env).invoke(main, ["search", *queries, "--library", str(lib), "-k", "5", "--json"])
    assert r.exit_code == 0, r.output
    data = json.loads(r.stdout)
    assert len(data) == 2
    with Library.open(lib) as L:
        labels = L.labels()
    for q, d in zip(queries, data):
        assert d["query"] == q and len(d["hits"]) == 5
        assert d["hits"][0]["path"] == q and d["hits"][0]["distance"] == pytest.approx(0, abs=1e-3)
        assert [h["distance"] for h in d["hits"]] == sorted(h["distance"] for h in d["hits"])
        for h in d["hits"]:
            assert h["box"] is None  # whole-image model
            lab = labels[h["item_id"]]
            assert h["cluster"] == (None if lab == NOISE else lab)


def test_seed_profile_equals_design_code_on_same_vectors(johns_lib):
    """The design's perform_clustering, run on the library's stored vectors, gives the same
    partition as `peoplemap cluster --profile seed`."""
    from hdbscan import HDBSCAN
    from sklearn.decomposition import PCA
    from sklearn.preprocessing import StandardScaler

    lib, _s, env = johns_lib
    r = CliRunner(env=env).invoke(main, ["cluster", "--library", str(lib), "--profile", "seed"])
    assert r.exit_code == 0, r.output
    with Library.open(lib) as L:
        ids, X = L.vectors()
        ours = L.labels()

    def perform_clustering(features):  # the design's code, verbatim but for min(50, n - 1)
        scaler = StandardScaler()
        features_scaled = scaler.fit_transform(features)
        pca = PCA(n_components=min(50, len(features) - 1))
        features_reduced = pca.fit_transform(features_scaled)
        clusterer = HDBSCAN(min_cluster_size=3, metric="euclidean")
        return clusterer.fit_predict(features_reduced)

    theirs = perform_clustering(X)
    ours_arr = np.array([ours[int(i)] for i in ids])
    assert ((theirs == -1) == (ours_arr == NOISE)).all()
    pairs = {(int(a), int(b)) for a, b in zip(theirs, ours_arr) if a != -1}
    assert len(pairs) == len({a for a, _ in pairs}) == len({b for _, b in pairs})  # a bijection


def test_export_folders_and_csv_on_real_library(johns_lib, tmp_path):
    lib, _s, env = johns_lib
    run = CliRunner(env=env).invoke
    assert run(main, ["cluster", "--library", str(lib)]).exit_code == 0
    r = run(main, ["export", "--library", str(lib), "--format", "folders", "--out", str(tmp_path / "f")])
    assert r.exit_code == 0, r.output
    links = [p for p in (tmp_path / "f").rglob("*") if p.is_symlink()]
    assert len(links) == 56 and all(p.resolve().is_file() for p in links)
    r = run(main, ["export", "--library", str(lib), "--format", "csv", "--out", str(tmp_path / "x.csv")])
    rows = list(csv.DictReader(open(tmp_path / "x.csv", encoding="utf-8")))
    assert len(rows) == 56 and all(Path(row["path"]).exists() for row in rows)


def test_reid_set_index_and_rerun(tmp_path, settings):
    """A whole-body re-ID set: every crop indexed; a re-run finds nothing to do."""
    folder = shared_set("col780_reid_2cam_8angle")
    with Library.open(tmp_path / "lib", create=True, settings=settings) as lib:
        s = lib.index(folder, model="mobilenetv2")
        n_images = sum(1 for p in folder.rglob("*") if p.is_file() and p.name != "SOURCE.txt")
        assert s.items_added == n_images == 1184
        again = lib.index(folder, model="mobilenetv2")
        assert again.unchanged == s.files_seen and again.items_added == 0
        c = lib.cluster()
        assert c.n_items == n_images and c.n_clusters >= 1
