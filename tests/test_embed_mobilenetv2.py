"""The mobilenetv2 embedder on the real shipped weights, plus the ONNX cache helpers it uses."""
from __future__ import annotations

import json
import logging
import os
import sys
import threading
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from peoplemap.config import Settings
from peoplemap.embed import Embedder, available_models, create_embedder
from peoplemap.embed import mobilenetv2 as mnv2
from peoplemap.embed.base import WHOLE_IMAGE
from peoplemap.embed.onnx_session import cached_onnx_path, drop_session, export_atomic
from peoplemap.errors import InputError, ModelError

DATA = Path(os.environ.get("PEOPLEMAP_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
JOHNS = DATA / "dlib_johns"


@pytest.fixture(scope="session")
def settings(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    # batch_size 4 so that the 7-image tests cross a batch boundary.
    return Settings(cache_dir=str(tmp_path_factory.mktemp("pm-cache")), batch_size=4)


@pytest.fixture(scope="session")
def embedder(settings: Settings) -> mnv2.MobileNetV2Embedder:
    e = mnv2.MobileNetV2Embedder(settings)
    e.embed([np.zeros((32, 32, 3), np.uint8)])  # export once for the whole session
    return e


def synthetic(seed: int, h: int = 180, w: int = 140) -> np.ndarray:
    """A smooth, structured RGB image (gradients plus a few rectangles), different per seed."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    img = np.stack([np.sin(xx / rng.uniform(5, 30) + c) * np.cos(yy / rng.uniform(5, 30)) for c in range(3)], -1)
    img = (img + 1) * 100
    for _ in range(4):
        y, x = rng.integers(0, h - 20), rng.integers(0, w - 20)
        img[y:y + rng.integers(10, 60), x:x + rng.integers(10, 60)] = rng.uniform(0, 255, 3)
    return np.clip(img, 0, 255).astype(np.uint8)


def load_rgb(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


def need_data() -> None:
    if not JOHNS.is_dir():
        pytest.skip(f"shared test data not found at {JOHNS}")


# -- ONNX cache helpers (fast) ---------------------------------------------------------------------

def test_cached_onnx_path_changes_with_key(tmp_path: Path) -> None:
    s = Settings(cache_dir=str(tmp_path))
    a = cached_onnx_path("m", "sha-a|opset=17", s)
    assert a == cached_onnx_path("m", "sha-a|opset=17", s)
    assert a != cached_onnx_path("m", "sha-b|opset=17", s)
    assert a.parent == s.model_dir and a.name.startswith("m-") and a.suffix == ".onnx"


def test_export_atomic_failure_leaves_nothing(tmp_path: Path) -> None:
    target = tmp_path / "models" / "x.onnx"

    def broken(tmp: Path) -> None:
        tmp.write_bytes(b"half a model")
        raise RuntimeError("exporter crashed")

    with pytest.raises(RuntimeError):
        export_atomic(target, broken)
    assert list(target.parent.iterdir()) == []

    export_atomic(target, lambda tmp: tmp.write_bytes(b"model"))
    assert target.read_bytes() == b"model"
    export_atomic(target, broken)  # existing file: the writer is not called
    assert target.read_bytes() == b"model" and len(list(target.parent.iterdir())) == 1


def test_export_atomic_concurrent_writers(tmp_path: Path) -> None:
    target = tmp_path / "x.onnx"
    started = threading.Barrier(2)

    def write(tmp: Path) -> None:
        started.wait(timeout=10)  # both writers are past the exists() check before either renames
        tmp.write_bytes(b"model")

    threads = [threading.Thread(target=export_atomic, args=(target, write)) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=10)
    assert target.read_bytes() == b"model" and [p.name for p in tmp_path.iterdir()] == ["x.onnx"]


# -- the model ------------------------------------------------------------------------------------

@pytest.mark.slow
def test_protocol_and_describe(embedder: mnv2.MobileNetV2Embedder) -> None:
    assert isinstance(embedder, Embedder)
    assert (embedder.name, embedder.dim, embedder.item_kind) == ("mobilenetv2", 1280, "image")
    assert embedder.decode_max_side == 224
    assert embedder.weights_sha256[:12] in embedder.version
    d = embedder.describe()
    json.dumps(d)  # stored with each vector set
    assert d["model"] == "mobilenetv2" and d["version"] == embedder.version
    assert d["weights"]["sha256"] == embedder.weights_sha256
    session = embedder._get_session()  # describe() reports what actually runs the model
    assert (d["runtime"], d["precision"]) == (session.runtime, session.precision)
    assert d["runtime"] in ("openvino", "onnxruntime") and d["precision"] in ("fp32", "bf16")
    assert embedder.detect(synthetic(0)) == WHOLE_IMAGE


@pytest.mark.slow
def test_shape_dtype_unit_norm(embedder: mnv2.MobileNetV2Embedder) -> None:
    v = embedder.embed([synthetic(1), synthetic(2, 64, 300), synthetic(3, 224, 224)])
    assert v.shape == (3, 1280) and v.dtype == np.float32 and v.flags.c_contiguous
    np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-5)
    assert embedder.embed([]).shape == (0, 1280)
    raw = embedder.embed_raw([synthetic(1)])
    assert raw.shape == (1, 1280) and np.all(raw >= 0) and np.linalg.norm(raw) > 1.5  # ReLU6 pool, not unit


@pytest.mark.slow
@pytest.mark.parametrize("runtime", ["onnxruntime", "openvino"])
def test_onnx_matches_torch_eager(settings: Settings, embedder: mnv2.MobileNetV2Embedder, runtime: str) -> None:
    """The exported model in fp32 matches torch closely in both runtimes; the default (bf16 where
    the CPU has it) stays within a cosine of 0.99."""
    import torch

    x = embedder.preprocess([synthetic(4), synthetic(5, 300, 120)])
    assert x.shape == (2, 3, 224, 224) and x.dtype == np.float32
    model = mnv2.load_torch_model(embedder.weights)
    with torch.no_grad():
        expected = model(torch.from_numpy(x)).numpy()
    fp32 = mnv2.MobileNetV2Embedder(replace(settings, runtime=runtime, precision="fp32"))
    assert (fp32._get_session().runtime, fp32._get_session().precision) == (runtime, "fp32")
    np.testing.assert_allclose(fp32.run_tensor(x), expected, atol=1e-4, rtol=0)
    got = embedder.run_tensor(x)
    cos = (got * expected).sum(1) / np.linalg.norm(got, axis=1) / np.linalg.norm(expected, axis=1)
    assert cos.min() > 0.99


@pytest.mark.slow
def test_preprocess_matches_reference_formula(embedder: mnv2.MobileNetV2Embedder) -> None:
    img = synthetic(6, 224, 224)  # already 224: no resize, so this checks the normalisation alone
    ref = (img.astype(np.float64) / 255 - mnv2.MEAN) / mnv2.STD
    np.testing.assert_allclose(embedder.preprocess([img])[0], ref.transpose(2, 0, 1), atol=1e-5)


@pytest.mark.slow
def test_deterministic_and_batch_equals_single(embedder: mnv2.MobileNetV2Embedder) -> None:
    imgs = [synthetic(10 + i, 100 + 20 * i, 160) for i in range(7)]
    batch = embedder.embed(imgs)
    np.testing.assert_array_equal(batch, embedder.embed(imgs))
    single = np.concatenate([embedder.embed([im]) for im in imgs])
    np.testing.assert_allclose(batch, single, atol=1e-5)


@pytest.mark.slow
def test_identical_nearer_than_unrelated(embedder: mnv2.MobileNetV2Embedder) -> None:
    need_data()
    img = load_rgb(sorted((JOHNS / "John_Salley").glob("*.jpg"))[0])
    variants = [img.copy(), img[:, ::-1], np.asarray(Image.fromarray(img).resize((97, 97)))]
    noise = np.random.default_rng(0).integers(0, 256, img.shape, dtype=np.uint8)
    v = embedder.embed([img, *variants, noise])
    d = np.linalg.norm(v[1:] - v[0], axis=1)
    assert d[0] < 1e-5  # identical copy
    assert d[1] < d[3] and d[2] < d[3]  # flipped and resized copies are nearer than noise


@pytest.mark.slow
def test_cache_reused(settings: Settings, embedder: mnv2.MobileNetV2Embedder, caplog: pytest.LogCaptureFixture) -> None:
    path = embedder.onnx_path
    mtime = path.stat().st_mtime_ns
    drop_session(path)  # force the second embedder to open the file again
    with caplog.at_level(logging.INFO, logger="peoplemap"):
        other = mnv2.MobileNetV2Embedder(settings)
        assert other.onnx_path == path
        other.embed([synthetic(20)])
    assert path.stat().st_mtime_ns == mtime
    assert not [r for r in caplog.records if "exporting" in r.getMessage()]
    assert [p.name for p in settings.model_dir.iterdir()] == [path.name]


@pytest.mark.slow
def test_registry(settings: Settings) -> None:
    assert "mobilenetv2" in available_models()
    e = create_embedder("mobilenetv2", settings=settings, batch_size=2)
    assert isinstance(e, mnv2.MobileNetV2Embedder) and e.settings.batch_size == 2
    with pytest.raises(ModelError, match="mobilenetv2"):
        create_embedder("nope")
    with pytest.raises(InputError, match="bogus"):
        create_embedder("mobilenetv2", settings=settings, bogus=1)


@pytest.mark.slow
def test_bad_input(embedder: mnv2.MobileNetV2Embedder) -> None:
    for bad in (np.zeros((10, 10), np.uint8), np.zeros((10, 10, 3), np.float32), np.zeros((0, 10, 3), np.uint8)):
        with pytest.raises(InputError, match="crop 0"):
            embedder.embed([bad])
    with pytest.raises(InputError):
        embedder.run_tensor(np.zeros((1, 3, 100, 100), np.float32))


def test_missing_package_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(mnv2, "find_spec", lambda name: None)
    with pytest.raises(ModelError, match=r"pip install 'peoplemap\[mobilenet\]'"):
        mnv2.MobileNetV2Embedder(Settings(cache_dir="unused"))


def test_missing_torch_only_matters_when_not_cached(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "torch", None)  # makes `import torch` fail
    e = mnv2.MobileNetV2Embedder(Settings(cache_dir=str(tmp_path)))  # creating needs no torch
    with pytest.raises(ModelError, match=r"pip install 'peoplemap\[mobilenet\]'"):
        e.embed([synthetic(0)])
    assert not any(e.onnx_path.parent.glob("*"))


@pytest.mark.slow
def test_cached_model_needs_no_torch(settings: Settings, embedder: mnv2.MobileNetV2Embedder,
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    drop_session(embedder.onnx_path)
    monkeypatch.setitem(sys.modules, "torch", None)
    v = mnv2.MobileNetV2Embedder(settings).embed([synthetic(30)])
    assert v.shape == (1, 1280)


@pytest.mark.slow
def test_real_faces(embedder: mnv2.MobileNetV2Embedder) -> None:
    need_data()
    people = sorted(p for p in JOHNS.iterdir() if p.is_dir() and not p.name.startswith("_"))
    paths = [f for p in people for f in sorted(p.glob("*.jpg"))[:2]]
    assert len(paths) == 10
    v = embedder.embed([load_rgb(p) for p in paths])
    assert v.shape == (10, 1280) and np.isfinite(v).all()
    d = np.linalg.norm(v[:, None] - v[None], axis=2)
    assert (d.argmin(axis=1) == np.arange(10)).all()
    group = next((JOHNS / "_group_photos_unlabeled").glob("*.jpg"))
    big = embedder.embed([load_rgb(group)])  # 1986x1545 photo: the resize path on a large image
    assert big.shape == (1, 1280) and np.isfinite(big).all()
