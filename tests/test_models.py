"""Models declare what they can do (no attribute probing), and the one per-file work function gives
the same boxes (in original-image coordinates) and the same reasons whichever path runs it: called
directly, in the thread path (decode + detect in a pool, embedding in batches in the model thread),
in a worker process, in a Ray actor (called in this process), or through a whole index run."""
from __future__ import annotations

import inspect
import io
import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Any, Optional

import numpy as np
import pytest
from PIL import Image

from peoplemap.config import Settings
from peoplemap.embed import Detector, Embedder, Model, ModelBase, available_models, create_embedder
from peoplemap.embed.base import PARALLEL
from peoplemap.embed.registry import register
from peoplemap.errors import ModelError
from peoplemap.indexing_work import (FileResult, Job, ModelThread, _process_work, process_init,
                                     work_ahead, work_file)
from peoplemap.ingest import FileEntry
from peoplemap.types import Region

from conftest import FakeEmbedder


# -- test models (module level: a spawned worker process imports this module to know them) -------
class Strips(ModelBase):
    """Four vertical strips of every image are its "faces"; vectors are the crop shrunk to 4x4.
    Detection raises on 77-px-wide images and embedding on all-red crops."""

    name = "pm-strips"
    version = "1"
    dim = 48
    item_kind = "face"
    decode_max_side = 120
    """A 640x480 JPEG is draft-decoded at 1/4 (160x120): boxes must be scaled back."""

    def __init__(self, settings: Optional[Settings] = None, **_: Any) -> None:
        pass

    def describe(self) -> dict:
        return {"model": self.name, "version": self.version}

    def detect(self, image: np.ndarray) -> list[Region]:
        h, w = image.shape[:2]
        if w == 77:
            raise ValueError("no strips in a 77-px image")
        step = w // 4
        return [Region((k * step, 0, step, h), score=0.5 + k / 10) for k in range(4)]

    def embed(self, crops) -> np.ndarray:
        out = np.zeros((len(crops), self.dim), np.float32)
        for i, c in enumerate(crops):
            if c[..., 0].min() > 200 and c[..., 1].max() < 50:
                raise RuntimeError("cannot embed a red crop")
            out[i] = np.asarray(Image.fromarray(c).resize((4, 4), Image.BOX), np.float32).ravel() - 127.5
        return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)


class BrokenStrips(Strips):
    """Returns vectors one column too long: a broken model, which must end the run."""

    name = "pm-strips-broken"

    def embed(self, crops) -> np.ndarray:
        return np.zeros((len(crops), self.dim + 1), np.float32)


register("pm-strips", "test-only: four strips per image")(Strips)
register("pm-strips-broken", "test-only: wrong vector length")(BrokenStrips)

RED_REASON = "model pm-strips failed on this image: cannot embed a red crop"
NARROW_REASON = "model pm-strips failed on this image: no strips in a 77-px image"


# -- declared capabilities -----------------------------------------------------------------------
def _tiny_onnx(path: Path) -> Path:
    """An ONNX model mapping (n, 3, 8, 8) images to their 3 channel means."""
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("GlobalAveragePool", ["x"], ["p"]),
         helper.make_node("Flatten", ["p"], ["y"], axis=1)],
        "gap", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 3, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 3])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def _models(tmp_path: Path, settings: Settings) -> dict[str, Model]:
    out = {}
    for name in available_models():
        if name == "onnx":
            out[name] = create_embedder(f"onnx:{_tiny_onnx(tmp_path / 'gap.onnx')}", settings=settings,
                                        item_kind="image")
        else:
            out[name] = create_embedder(name, settings=settings)
    return out


def test_every_registered_model_declares_its_capabilities(tmp_path: Path, settings: Settings) -> None:
    models = _models(tmp_path, settings)
    assert {"mobilenetv2", "body", "face", "onnx", "fake"} <= set(models)
    for name, m in models.items():
        assert isinstance(m, Detector) and isinstance(m, Embedder) and isinstance(m, Model), name
        for attr in ("parallel", "two_phase", "collection_whitening", "decode_max_side", "item_kind",
                     "match_distance", "min_group_score", "merge_distance", "compatible_versions",
                     "load", "detect", "embed", "preprocess", "embed_preprocessed"):
            inspect.getattr_static(m, attr)  # declared on the class (or its base), not discovered
        assert m.parallel in PARALLEL, name
        assert isinstance(m.two_phase, bool) and isinstance(m.collection_whitening, bool), name
        if m.two_phase:
            assert type(m).preprocess is not ModelBase.preprocess, name
            assert type(m).embed_preprocessed is not ModelBase.embed_preprocessed, name
        m.load()
    assert models["face"].parallel == "processes" and models["mobilenetv2"].parallel == "threads"
    assert models["mobilenetv2"].two_phase and not models["body"].two_phase
    assert models["body"].collection_whitening and not models["face"].collection_whitening
    img = np.full((40, 30, 3), 90, np.uint8)
    assert models["mobilenetv2"].detect(img) == [Region(None)]
    assert models["onnx"].detect(img) == [Region(None)]
    assert models["fake"].detect(img) == [Region(None)]
    assert models["onnx"].embed([img]).shape == (1, 3)


def test_a_model_without_declared_capabilities_is_refused() -> None:
    class Bare:  # no ModelBase: no load, no parallel, ...
        name, version, dim, item_kind, decode_max_side = "pm-bare", "1", 3, "image", None

        def __init__(self, **_: Any) -> None:
            pass

        def describe(self) -> dict:
            return {}

        def detect(self, image):
            return [Region(None)]

        def embed(self, crops):
            return np.zeros((len(crops), 3), np.float32)

    class OddParallel(FakeEmbedder):
        parallel = "gpu"  # type: ignore[assignment]

    class OddScore(FakeEmbedder):
        min_group_score = "low"  # type: ignore[assignment]

    class OddVersions(FakeEmbedder):
        compatible_versions = ["1"]  # type: ignore[assignment]

    register("pm-bare", "test-only")(Bare)
    register("pm-odd", "test-only")(OddParallel)
    register("pm-odd-score", "test-only")(OddScore)
    register("pm-odd-versions", "test-only")(OddVersions)
    with pytest.raises(ModelError, match="min_group_score as a number or None"):
        create_embedder("pm-odd-score")
    with pytest.raises(ModelError, match="compatible_versions as a tuple of strings"):
        create_embedder("pm-odd-versions")
    with pytest.raises(ModelError, match=r"Bare has no load\(\).*ModelBase"):
        create_embedder("pm-bare")
    with pytest.raises(ModelError, match=r"parallel='gpu'.*\['threads', 'processes'\]"):
        create_embedder("pm-odd")


# -- one per-file work, every path ---------------------------------------------------------------
def _files(folder: Path) -> list[Job]:
    """good.jpg (640x480, draft-decoded), corrupt.jpg, narrow.png (detect raises), red.png (embed
    raises), in that order."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    field = rng.integers(0, 256, (4, 4, 3)).astype(np.float32)
    good = np.clip(np.kron(field, np.ones((120, 160, 1))) + rng.normal(0, 4, (480, 640, 3)), 0, 255)
    Image.fromarray(good.astype(np.uint8)).save(folder / "good.jpg", quality=92)
    buf = io.BytesIO()
    Image.fromarray(good.astype(np.uint8)).save(buf, "JPEG")
    (folder / "corrupt.jpg").write_bytes(buf.getvalue()[:len(buf.getvalue()) // 3])
    Image.fromarray(np.full((60, 77, 3), 128, np.uint8)).save(folder / "narrow.png")
    red = np.zeros((80, 100, 3), np.uint8)
    red[..., 0] = 255
    Image.fromarray(red).save(folder / "red.png")
    out = []
    for name in ("good.jpg", "corrupt.jpg", "narrow.png", "red.png"):
        p = folder / name
        out.append(Job(FileEntry(str(p), p.stat().st_size, p.stat().st_mtime), None))
    return out


def _summary(results: list[FileResult]) -> list[tuple]:
    """What the writer takes from each result: the reason of an unusable file, or the image's
    hash, size, regions and vector shape."""
    return [(Path(r.job.entry.path).name, r.reason) + (() if r.reason else (
        r.sha256, r.width, r.height, [(g.box, round(g.score, 6)) for g in r.regions],
        None if r.vectors is None else r.vectors.shape)) for r in results]


def _thread_path(model: Model, jobs: list[Job], settings: Settings) -> list[FileResult]:
    stages = dict.fromkeys(("decode_wait", "detect", "prepare", "embed"), 0.0)
    results = list(work_ahead(jobs, model, settings, stages))
    with ModelThread(model, stages) as mt:
        mt.submit(results).result()  # one batch: one model call, then file by file after it raises
    return results


def _process_path(name: str, jobs: list[Job], settings: Settings) -> list[FileResult]:
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(1, mp_context=ctx, initializer=process_init,
                             initargs=(name, settings, __name__)) as pool:
        return [pool.submit(_process_work, job, settings).result() for job in jobs]


def _ray_actor_path(name: str, jobs: list[Job], settings: Settings) -> list[FileResult]:
    """What a Ray run's actor makes of the files, as the driver reads it back (no cluster needed)."""
    pytest.importorskip("pyarrow")
    from peoplemap.engine_ray import EmbedBatch, _decode_rows

    actor = EmbedBatch(name, settings, __name__)
    table = actor({"i": np.arange(len(jobs)), "path": np.array(
        [j.entry.path.encode() for j in jobs], dtype=object)})
    return [res for _i, res, _secs in _decode_rows(table, jobs, actor._e.dim)]


def test_work_file_gives_the_same_results_on_every_path(tmp_path: Path, settings: Settings) -> None:
    jobs = _files(tmp_path / "photos")
    settings = replace(settings, workers=2)
    model = create_embedder("pm-strips")
    direct = [work_file(model, job, settings) for job in jobs]
    expected_boxes = [((x, 0, 160, 480), round(0.5 + k / 10, 6)) for k, x in enumerate(range(0, 640, 160))]
    good, corrupt, narrow, red = _summary(direct)
    assert good[1] is None and good[3:5] == (640, 480) and good[5] == expected_boxes
    assert good[6] == (4, 48)
    assert corrupt[1].startswith("truncated or corrupt")
    assert narrow[1] == NARROW_REASON and red[1] == RED_REASON
    assert [(r.regions, r.vectors, r.crops) for r in direct[1:]] == [([], None, None)] * 3

    threaded = _thread_path(model, jobs, settings)
    in_process = _process_path("pm-strips", jobs, settings)
    on_ray = _ray_actor_path("pm-strips", jobs, settings)
    assert _summary(threaded) == _summary(direct)
    assert _summary(in_process) == _summary(direct)
    assert _summary(on_ray) == _summary(direct)
    for results in (threaded, in_process, on_ray):
        assert results[0].crops is None  # no pixels kept once embedded
        np.testing.assert_allclose(results[0].vectors, direct[0].vectors, atol=1e-6)


def test_wrong_vectors_end_the_run_on_every_path(tmp_path: Path, settings: Settings) -> None:
    jobs = _files(tmp_path / "photos")[:1]
    model = create_embedder("pm-strips-broken")
    with pytest.raises(ModelError, match=r"pm-strips-broken returned \(4, 49\)"):
        work_file(model, jobs[0], settings)
    with pytest.raises(ModelError, match=r"pm-strips-broken returned \(4, 49\)"):
        _thread_path(model, jobs, settings)
    with pytest.raises(ModelError, match=r"pm-strips-broken returned \(4, 49\)"):
        _process_path("pm-strips-broken", jobs, settings)
    with pytest.raises(ModelError, match=r"pm-strips-broken returned \(4, 49\)"):
        _ray_actor_path("pm-strips-broken", jobs, settings)


def test_index_run_records_model_failures_and_goes_on(tmp_path: Path, library) -> None:
    _files(tmp_path / "photos")
    s = library.index(tmp_path / "photos", model="pm-strips")
    reasons = {Path(k.path).name: k.reason for k in s.skipped}
    assert reasons.pop("corrupt.jpg").startswith("truncated or corrupt")
    assert reasons == {"narrow.png": NARROW_REASON, "red.png": RED_REASON}
    assert s.items_added == 4 and s.new == 4
    boxes = sorted(it.box for it in library.items("pm-strips"))
    assert boxes == [(x, 0, 160, 480) for x in range(0, 640, 160)]
    again = library.index(tmp_path / "photos", model="pm-strips")
    assert again.unchanged == 4 and again.items_added == 0
