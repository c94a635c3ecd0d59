"""The eval runner: labeled folder -> (temporary) library -> retrieval and clustering scores.

Fast tests use generated images and the fake model; the slow ones run mobilenetv2 on ../shared/data.
"""
from __future__ import annotations

import json
import re
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from conftest import make_person_images, shared_set
from peoplemap.cli import main
from peoplemap.config import Settings
from peoplemap.errors import InputError
from peoplemap.eval_runner import EvalComparison, EvalReport, camera_of, evaluate_folder

CUHK01_CAMERAS = r"^\d{4}00(?:(?P<A>[12])|(?P<B>[34]))"
COL780_CAMERAS = r"^(\d\d)_"


@pytest.fixture
def labeled(tmp_path: Path) -> Path:
    """4 people x 5 images, plus a `_group` photo, a byte-identical copy and two SOURCE.txt files."""
    d = tmp_path / "labeled"
    make_person_images(d, n_people=4, per_person=5)
    group = d / "_group"
    group.mkdir()
    rng = np.random.default_rng(7)
    Image.fromarray(rng.integers(0, 256, (80, 64, 3), dtype=np.uint8)).save(group / "crowd.png")
    shutil.copyfile(d / "person1" / "img0.jpg", d / "person1" / "img0-copy.jpg")
    (d / "SOURCE.txt").write_text("generated for the test\n")
    (d / "person2" / "SOURCE.txt").write_text("not an image\n")
    return d


@pytest.fixture
def fast_settings(settings: Settings) -> Settings:
    """The session's model cache with a larger batch: real-model runs are faster."""
    return replace(settings, batch_size=32)


def test_counts_dedupe_and_perfect_scores(labeled: Path) -> None:
    # min_cluster_size=3: the provisional default (2) splits these 5-image people into pairs
    r = evaluate_folder(labeled, model="fake", min_cluster_size=3)
    assert isinstance(r, EvalReport)
    c = r.counts
    assert (c.n_identities, c.n_images, c.n_duplicates, c.n_items) == (4, 20, 1, 20)
    assert c.images_without_items == 0
    assert c.n_ignored_images == 1  # the `_group` photo
    assert c.n_skipped_files == 2  # both SOURCE.txt
    assert r.retrieval["protocol"] == "leave-one-out"
    assert r.retrieval["n_queries"] == 20 and r.retrieval["rank1"] == 1.0
    assert r.retrieval["mAP"] == 1.0
    assert r.clustering["bcubed_f"] == 1.0
    assert r.clustering["n_clusters"] == r.clustering["n_identities"] == 4
    assert r.seconds.total >= r.seconds.index > 0 and "embed" in r.seconds.index_stages
    assert r.library is None


def test_json_is_strict_and_complete(labeled: Path) -> None:
    d = evaluate_folder(labeled, model="fake", min_cluster_size=3).to_json()
    text = json.dumps(d, allow_nan=False)
    assert set(json.loads(text)) >= {"folder", "model", "profile", "counts", "retrieval",
                                     "clustering", "cluster_params", "seconds"}
    assert set(d["retrieval"]) >= {"rank1", "rank5", "rank10", "mAP", "n_queries", "protocol"}
    assert set(d["clustering"]) >= {"bcubed_f", "pairwise_f", "ari", "nmi", "noise_fraction",
                                    "n_clusters", "n_identities"}
    assert set(d["seconds"]) >= {"index", "cluster", "retrieval", "total", "index_stages"}
    assert set(d["counts"]) >= {"n_identities", "n_images", "n_items", "images_without_items"}
    assert d["cluster_params"]["min_cluster_size"] == 3


def test_tables(labeled: Path) -> None:
    r = evaluate_folder(labeled, model="fake")
    table = r.format_table()
    assert "rank-1" in table and "BCubed F" in table and "noise fraction" in table
    both = EvalComparison(design=r, peoplemap=r, seconds=1.0).format_table()
    header = both.splitlines()[1]
    assert "design (seed)" in header and "peoplemap" in header
    assert set(EvalComparison(design=r, peoplemap=r, seconds=1.0).to_json()) >= {"design", "peoplemap"}


def test_cross_camera_with_named_groups(labeled: Path) -> None:
    r = evaluate_folder(labeled, model="fake", camera_pattern=r"^img(?:(?P<even>[024])|(?P<odd>[13]))")
    assert r.retrieval["protocol"] == "cross-camera" and r.retrieval["n_cameras"] == 2
    assert r.retrieval["n_queries"] == 20 and r.retrieval["rank1"] == 1.0


def test_camera_of() -> None:
    names = ["0001001.png", "0001002.png", "0001003.png", "0001004.png"]
    assert [camera_of(re.compile(CUHK01_CAMERAS), n) for n in names] == ["A", "A", "B", "B"]
    assert camera_of(re.compile(COL780_CAMERAS), "02_7.png") == "02"
    assert camera_of(re.compile(r"c\d"), "x_c3_s1.jpg") == "c3"  # no group: the whole match
    assert camera_of(re.compile(COL780_CAMERAS), "face.jpg") is None


def test_keep_library(labeled: Path, tmp_path: Path) -> None:
    kept = tmp_path / "kept"
    r = evaluate_folder(labeled, model="fake", keep_library=kept)
    assert r.library == str(kept) and (kept / "library.sqlite").is_file()
    again = evaluate_folder(labeled, model="fake", keep_library=kept)  # incremental re-run
    assert again.counts == r.counts and again.retrieval["rank1"] == 1.0


@pytest.mark.parametrize("kwargs, message", [
    ({"camera_pattern": "img(["}, "not a valid regular expression"),
    ({"camera_pattern": r"^cam(\d)"}, "matches none of the"),
    ({"baseline": "best"}, "unknown baseline"),
    ({"profile": "fancy"}, "Unknown clustering profile"),
])
def test_bad_options(labeled: Path, kwargs: dict, message: str) -> None:
    with pytest.raises(InputError, match=re.escape(message)) as e:
        evaluate_folder(labeled, model="fake", **kwargs)
    if "camera_pattern" in kwargs and "none" in message:
        assert re.search(r"e\.g\. 'img\d\.(jpg|png)'", str(e.value))


def test_bad_folders(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="labeled folder not found"):
        evaluate_folder(tmp_path / "missing", model="fake")
    one = tmp_path / "one"
    make_person_images(one, n_people=1, per_person=3)
    (one / "_group").mkdir()
    (one / "_group" / "x.jpg").write_bytes((one / "person0" / "img0.jpg").read_bytes())
    with pytest.raises(InputError, match="at least 2"):
        evaluate_folder(one, model="fake")


def test_cli_json(labeled: Path) -> None:
    r = CliRunner().invoke(main, ["eval", str(labeled), "--model", "fake", "--json"])
    assert r.exit_code == 0, r.output
    data = json.loads(r.stdout)
    assert data["counts"]["n_identities"] == 4 and data["retrieval"]["rank1"] == 1.0
    r = CliRunner().invoke(main, ["eval", str(labeled), "--model", "fake"])
    assert r.exit_code == 0 and "rank-1" in r.stdout
    r = CliRunner().invoke(main, ["eval", str(labeled), "--model", "fake", "--camera-pattern", "(("])
    assert r.exit_code == 1 and r.output.startswith("Error: camera pattern")


@pytest.mark.slow
def test_real_faces_with_seed_baseline(fast_settings: Settings) -> None:
    r = evaluate_folder(shared_set("dlib_johns"), model="mobilenetv2", baseline="seed",
                        settings=fast_settings)
    assert isinstance(r, EvalComparison)
    for rep in (r.design, r.peoplemap):
        assert rep.counts.n_identities == 5
        assert rep.counts.n_duplicates == 1  # SOURCE.txt names one exact duplicate
        assert rep.counts.n_ignored_images == 1  # _group_photos_unlabeled/bald_guys.jpg
        assert 0 < rep.retrieval["rank1"] <= 1
        assert 0 <= rep.clustering["noise_fraction"] <= 1
    assert (r.design.model, r.design.profile) == ("mobilenetv2", "seed")
    assert r.peoplemap.profile == "default"
    assert r.design.retrieval == r.peoplemap.retrieval  # same vectors, one library
    header = r.format_table().splitlines()[1]
    assert "design (seed)" in header and "peoplemap" in header
    json.dumps(r.to_json(), allow_nan=False)


@pytest.mark.slow
def test_real_cross_camera(fast_settings: Settings) -> None:
    r = evaluate_folder(shared_set("col780_reid_2cam_8angle"), model="mobilenetv2",
                        camera_pattern=COL780_CAMERAS, settings=fast_settings)
    assert isinstance(r, EvalReport)
    assert r.counts.n_identities == 74 and r.counts.n_duplicates == 1
    assert r.retrieval["protocol"] == "cross-camera" and r.retrieval["n_cameras"] == 2
    assert r.retrieval["n_queries"] > 0 and 0 < r.retrieval["rank1"] <= 1


def test_chinese_whispers_baseline_on_the_same_vectors(labeled: Path) -> None:
    r = evaluate_folder(labeled, model="fake", min_cluster_size=3, baseline="chinese-whispers")
    assert isinstance(r, EvalComparison) and r.baseline == "chinese-whispers"
    assert r.design.model == r.peoplemap.model == "fake"
    assert (r.design.profile, r.peoplemap.profile) == ("chinese-whispers", "default")
    assert r.design.counts == r.peoplemap.counts
    assert "chinese-whispers" in r.format_table().splitlines()[1]
    ap = r.peoplemap.clustering["all_photos"]
    assert ap["n_photos"] == 20 and ap["without_items"] == 0
    assert ap["bcubed_f"] == pytest.approx(r.peoplemap.clustering["bcubed_f"])


def test_all_photos_and_all_items_reports() -> None:
    from peoplemap.eval_runner import MIXED_IDENTITIES, all_items_report, all_photos_report

    ids = np.array(["a", "a", "b", "b"], dtype=object)
    perfect = all_photos_report(ids, np.array([0, 0, 1, 1]), np.array([], dtype=object))
    assert perfect["bcubed_f"] == 1.0
    # a photo of "a" without a face is its own group: recall drops, precision stays
    missed = all_photos_report(ids, np.array([0, 0, 1, 1]), np.array(["a"], dtype=object))
    assert missed["n_photos"] == 5 and missed["without_items"] == 1
    assert missed["bcubed_precision"] == 1.0 and missed["bcubed_recall"] < 1.0
    # one junk cluster spanning MIXED_IDENTITIES people, one person, one unsorted item
    people = [f"p{k}" for k in range(MIXED_IDENTITIES)]
    identities = np.array(people + ["p0", "p0", "p1"], dtype=object)
    labels = np.array([0] * MIXED_IDENTITIES + [1, 1, -1])
    a = all_items_report(identities, labels)
    assert (a["n_clusters"], a["mixed_clusters"], a["items_in_mixed_clusters"]) == (2, 1, MIXED_IDENTITIES)
    assert a["max_identities_in_a_cluster"] == MIXED_IDENTITIES and a["unsorted_items"] == 1
