"""The inference runtime: Settings.runtime / precision, OpenVINO vs onnxruntime sessions, fallbacks.

OpenVINO (the `mobilenet` extra installs it) is the default runtime when it is installed; these
tests compare its vectors with onnxruntime's on real images from ../shared/data, force each runtime,
and simulate a missing or failing OpenVINO.
"""
from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import shared_set
from peoplemap.config import PRECISIONS, RUNTIMES, Settings, load_settings
from peoplemap.embed import create_embedder
from peoplemap.embed import mobilenetv2 as mnv2
from peoplemap.embed import onnx_session
from peoplemap.embed.onnx_session import make_session, resolve_runtime
from peoplemap.errors import InputError, ModelError


@pytest.fixture
def no_openvino(monkeypatch: pytest.MonkeyPatch) -> None:
    """`import openvino` fails, as when the package is not installed."""
    monkeypatch.setitem(sys.modules, "openvino", None)
    monkeypatch.setattr(onnx_session, "_core", None)
    monkeypatch.setattr(onnx_session, "_bf16_native", None)


def real_images() -> tuple[list[np.ndarray], np.ndarray]:
    """32 CUHK01 person crops (8 people x 4 views) and 10 dlib_johns faces (5 people x 2), with labels."""
    images, labels = [], []
    cuhk = shared_set("cuhk01_campus_first486")
    for person in sorted(p for p in cuhk.iterdir() if p.is_dir())[:8]:
        for f in sorted(person.iterdir())[:4]:
            images.append(np.asarray(Image.open(f).convert("RGB")))
            labels.append(f"c{person.name}")
    johns = shared_set("dlib_johns")
    for person in sorted(p for p in johns.iterdir() if p.is_dir() and not p.name.startswith("_")):
        for f in sorted(person.glob("*.jpg"))[:2]:
            images.append(np.asarray(Image.open(f).convert("RGB")))
            labels.append(f"j{person.name}")
    return images, np.array(labels)


def _gap_model(path: Path) -> Path:
    """A tiny ONNX model: NCHW float image batch -> per-channel mean (3-d), dynamic batch."""
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper

    inp = helper.make_tensor_value_info("pixels", TensorProto.FLOAT, ["n", 3, 32, 32])
    out = helper.make_tensor_value_info("vec", TensorProto.FLOAT, ["n", 3])
    nodes = [helper.make_node("GlobalAveragePool", ["pixels"], ["pooled"]),
             helper.make_node("Flatten", ["pooled"], ["vec"], axis=1)]
    model = helper.make_model(helper.make_graph(nodes, "gap", [inp], [out]),
                              opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


# -- settings ----------------------------------------------------------------------------------------

def test_settings_defaults_and_validation() -> None:
    s = Settings(cache_dir="unused")
    assert (s.runtime, s.precision) == ("auto", "auto")
    assert RUNTIMES == ("auto", "openvino", "onnxruntime") and PRECISIONS == ("auto", "fp32", "bf16")
    with pytest.raises(InputError, match=r"runtime must be one of \['auto', 'openvino', 'onnxruntime'\], "
                                         r"got 'tensorrt'"):
        Settings(runtime="tensorrt")
    with pytest.raises(InputError, match=r"precision must be one of \['auto', 'fp32', 'bf16'\], got 'fp16'"):
        Settings(precision="fp16")
    with pytest.raises(InputError, match="bf16.*needs runtime"):
        Settings(runtime="onnxruntime", precision="bf16")


def test_settings_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PEOPLEMAP_RUNTIME", " OnnxRuntime ")
    monkeypatch.setenv("PEOPLEMAP_PRECISION", "FP32")
    s = load_settings()
    assert (s.runtime, s.precision) == ("onnxruntime", "fp32")
    assert load_settings(runtime="openvino").runtime == "openvino"  # keywords win over the environment
    monkeypatch.setenv("PEOPLEMAP_RUNTIME", "cuda")
    with pytest.raises(InputError, match=r"runtime must be one of .*got 'cuda'.*PEOPLEMAP_RUNTIME"):
        load_settings()


def test_resolve_runtime(monkeypatch: pytest.MonkeyPatch) -> None:
    assert resolve_runtime("onnxruntime", "auto") == ("onnxruntime", "fp32")
    assert resolve_runtime("openvino", "fp32") == ("openvino", "fp32")
    runtime, precision = resolve_runtime("auto", "auto")
    assert runtime == "openvino"  # installed in the test environment (the mobilenet extra)
    assert precision == ("bf16" if onnx_session.cpu_has_native_bf16() else "fp32")
    monkeypatch.setattr(onnx_session, "_bf16_native", False)
    assert resolve_runtime("auto", "auto") == ("openvino", "fp32")
    with pytest.raises(InputError, match="runtime must be one of"):
        resolve_runtime("gpu", "auto")


# -- a missing or failing OpenVINO -------------------------------------------------------------------

def test_explicit_openvino_missing_is_a_clear_error(no_openvino: None, tmp_path: Path) -> None:
    assert not onnx_session.openvino_available()
    with pytest.raises(ModelError, match=r"runtime 'openvino' is not installed: pip install openvino.*"
                                         r"PEOPLEMAP_RUNTIME=onnxruntime"):
        make_session(_gap_model(tmp_path / "gap.onnx"), 1, "openvino", "auto")
    e = create_embedder(f"onnx:{_gap_model(tmp_path / 'gap2.onnx')}", settings=Settings(
        cache_dir=str(tmp_path), runtime="openvino"), item_kind="image")
    with pytest.raises(ModelError, match="not installed"):
        e.load()


def test_auto_without_openvino_uses_onnxruntime(no_openvino: None, tmp_path: Path) -> None:
    assert resolve_runtime("auto", "auto") == ("onnxruntime", "fp32")
    e = create_embedder(f"onnx:{_gap_model(tmp_path / 'gap.onnx')}", settings=Settings(cache_dir=str(tmp_path)),
                        item_kind="image")
    red = np.zeros((20, 20, 3), np.uint8)
    red[..., 0] = 255
    np.testing.assert_allclose(e.embed([red]), [[1, 0, 0]], atol=1e-6)
    d = e.describe()
    assert (d["runtime"], d["precision"]) == ("onnxruntime", "fp32")
    assert "openvino" not in sys.modules or sys.modules["openvino"] is None


def test_openvino_compile_failure_falls_back_when_auto(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                                       caplog: pytest.LogCaptureFixture) -> None:
    class BrokenCore:
        def read_model(self, path: str) -> object:
            return object()

        def compile_model(self, model: object, device: str, config: dict) -> object:
            raise RuntimeError("Unsupported operation: MadeUpOp\nmore detail")

    monkeypatch.setattr(onnx_session, "_openvino_core", lambda: BrokenCore())
    path = _gap_model(tmp_path / "gap.onnx")
    with caplog.at_level(logging.WARNING, logger="peoplemap"):
        e = create_embedder(f"onnx:{path}", settings=Settings(cache_dir=str(tmp_path), precision="fp32"),
                            item_kind="image")
        assert e.embed([np.full((8, 8, 3), 9, np.uint8)]).shape == (1, 3)
    assert e.describe()["runtime"] == "onnxruntime"
    assert any("OpenVINO cannot load" in r.getMessage() and "MadeUpOp" in r.getMessage() for r in caplog.records)
    onnx_session.drop_session(path)
    with pytest.raises(ModelError, match="OpenVINO cannot load.*MadeUpOp.*PEOPLEMAP_RUNTIME=onnxruntime"):
        make_session(path, 1, "openvino", "fp32")


def test_junk_model_fails_in_both_runtimes(tmp_path: Path) -> None:
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"not a protobuf")
    with pytest.raises(ModelError, match="cannot load ONNX model"):
        make_session(junk, 1, "auto", "fp32")
    with pytest.raises(ModelError, match="OpenVINO cannot load"):
        make_session(junk, 1, "openvino", "fp32")


# -- the session interface -----------------------------------------------------------------------------

def test_openvino_session_looks_like_onnxruntime(tmp_path: Path) -> None:
    path = _gap_model(tmp_path / "gap.onnx")
    ov = make_session(path, 1, "openvino", "fp32")
    ort = make_session(path, 1, "onnxruntime", "auto")
    assert (ov.runtime, ov.precision, ort.runtime, ort.precision) == ("openvino", "fp32", "onnxruntime", "fp32")
    (i_ov,), (i_ort,) = ov.get_inputs(), ort.get_inputs()
    assert i_ov.name == i_ort.name == "pixels" and i_ov.type == i_ort.type == "tensor(float)"
    assert i_ov.shape == [None, 3, 32, 32] and i_ort.shape[1:] == [3, 32, 32]
    assert ov.get_outputs()[0].name == "vec" and ov.get_outputs()[0].shape == [None, 3]
    x = np.random.default_rng(0).random((5, 3, 32, 32), dtype=np.float32)
    a, b = ov.run(None, {"pixels": x})[0], ort.run(None, {"pixels": x})[0]
    np.testing.assert_allclose(a, b, atol=1e-6)
    first = ov.run(["vec"], {"pixels": x})[0]
    ov.run(None, {"pixels": x * 0})  # results are copies, not views of the runtime's buffers
    np.testing.assert_allclose(first, a, atol=1e-6)
    with pytest.raises(ModelError, match="no input 'image'"):
        ov.run(None, {"image": x})
    with pytest.raises(ModelError, match="no output 'nope'"):
        ov.run(["nope"], {"pixels": x})
    d = ov.describe()
    assert d["runtime"] == "openvino" and d["precision"] == "fp32" and d["threads"] == 1 and d["runtime_version"]


def test_openvino_splits_a_batch_over_its_streams(tmp_path: Path) -> None:
    """With 3 threads a batch of 37 runs as 3 slices at once; the rows come back in order, as copies."""
    path = _gap_model(tmp_path / "gap.onnx")
    ov = make_session(path, 3, "openvino", "fp32")
    x = np.random.default_rng(1).random((37, 3, 32, 32), dtype=np.float32)
    expected = x.mean(axis=(2, 3))
    got = ov.run(None, {"pixels": x})[0]
    np.testing.assert_allclose(got, expected, atol=1e-5)
    ov.run(None, {"pixels": x[::-1].copy()})
    np.testing.assert_allclose(got, expected, atol=1e-5)  # not overwritten by the next call
    for n in (1, 4, 8, 12):  # fewer than 4 images per slice: fewer slices, same answer
        np.testing.assert_allclose(ov.run(None, {"pixels": x[:n]})[0], expected[:n], atol=1e-5)


def test_session_cache_is_keyed_by_runtime_precision_and_threads(tmp_path: Path) -> None:
    path = _gap_model(tmp_path / "gap.onnx")
    a = make_session(path, 1, "openvino", "fp32")
    assert make_session(path, 1, "openvino", "fp32") is a
    assert make_session(path, 2, "openvino", "fp32") is not a
    assert make_session(path, 1, "onnxruntime", "fp32") is not a
    assert make_session(path, 1, "openvino", "bf16") is not a
    assert make_session(path, 1, "auto", "fp32") is not a  # auto may fall back: its own entry
    onnx_session.drop_session(path)
    assert make_session(path, 1, "openvino", "fp32") is not a


# -- real model, real images ----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def model_settings(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    return Settings(cache_dir=str(tmp_path_factory.getbasetemp() / "model-cache"), batch_size=16)


@pytest.mark.slow
def test_mobilenetv2_openvino_matches_onnxruntime_on_real_images(model_settings: Settings) -> None:
    images, labels = real_images()
    vecs, runs = {}, {}
    for runtime, precision in (("onnxruntime", "fp32"), ("openvino", "fp32"), ("openvino", "bf16")):
        e = mnv2.MobileNetV2Embedder(replace(model_settings, runtime=runtime, precision=precision))
        vecs[runtime, precision] = e.embed(images)
        d = e.describe()
        runs[runtime, precision] = (d["runtime"], d["precision"])
    assert runs[("onnxruntime", "fp32")] == ("onnxruntime", "fp32")
    assert runs[("openvino", "fp32")] == ("openvino", "fp32")
    ref = vecs["onnxruntime", "fp32"]
    cos_fp32 = (vecs["openvino", "fp32"] * ref).sum(axis=1)
    assert cos_fp32.min() > 0.9999
    # bf16 keeps 8 bits of mantissa: measured on these images, cosine to fp32 has median ~0.992, min ~0.975.
    cos_bf16 = (vecs["openvino", "bf16"] * ref).sum(axis=1)
    assert np.median(cos_bf16) >= 0.99 and cos_bf16.min() >= 0.97, (np.median(cos_bf16), cos_bf16.min())
    # What matters for search: each image's nearest other image is of the same person as often.
    def same_person_rate(X: np.ndarray) -> float:
        S = X @ X.T
        np.fill_diagonal(S, -2)
        return float((labels[S.argmax(axis=1)] == labels).mean())

    base = same_person_rate(ref)
    assert base > 0.5
    for key, X in vecs.items():
        assert abs(same_person_rate(X) - base) <= 0.05, key


@pytest.mark.slow
def test_default_runtime_is_recorded_and_onnxruntime_can_be_forced(model_settings: Settings,
                                                                  monkeypatch: pytest.MonkeyPatch,
                                                                  tmp_path: Path) -> None:
    from peoplemap import Library

    images, _ = real_images()
    default = mnv2.MobileNetV2Embedder(model_settings)
    before = default.describe()  # not loaded yet: what would run
    assert before["loaded"] is False and before["runtime"] == "openvino"
    default.load()
    d = default.describe()
    assert "loaded" not in d and d["runtime"] == "openvino"
    assert d["precision"] == ("bf16" if onnx_session.cpu_has_native_bf16() else "fp32")
    version = default.version

    monkeypatch.setenv("PEOPLEMAP_RUNTIME", "onnxruntime")
    forced = create_embedder("mobilenetv2", settings=load_settings(cache_dir=model_settings.cache_dir))
    forced.load()
    assert forced.describe()["runtime"] == "onnxruntime" and forced._get_session().runtime == "onnxruntime"
    assert forced.version == version  # a runtime switch never makes old vectors incompatible
    assert (forced.embed(images[:4]) * default.embed(images[:4])).sum(axis=1).min() > 0.97

    # The vector set's description records what ran; re-indexing with the other runtime is allowed.
    folder = shared_set("cuhk01_campus_first486") / "0001"
    with Library.open(tmp_path / "lib", create=True, settings=replace(model_settings, runtime="onnxruntime")) as lib:
        lib.index(folder, model="mobilenetv2")
        desc = json.loads(lib.catalog.one("SELECT description FROM vector_sets")[0])
        assert (desc["runtime"], desc["precision"]) == ("onnxruntime", "fp32")
    with Library.open(tmp_path / "lib", settings=model_settings) as lib:
        s = lib.index(folder, model="mobilenetv2")
        assert s.unchanged == 4 and s.items_added == 0


def test_face_workers_run_dlibs_networks_in_one_onnxruntime_thread_each() -> None:
    """A face worker process runs dlib's converted networks in onnxruntime on one thread each (the
    face model spreads photos over processes), and never loads OpenVINO (whose bf16 would change
    the vectors)."""
    code = ("import sys; from peoplemap.config import load_settings; "
            "from peoplemap.indexing_work import process_init; "
            "process_init('face', load_settings()); "  # what each worker runs when it starts
            "from peoplemap.embed.face import descriptor_session; "
            "from peoplemap.detect.faces import mmod_detector; "
            "print(sorted({'openvino', 'onnxruntime'} & set(sys.modules)), descriptor_session().threads, "
            "mmod_detector().session.threads)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "['onnxruntime'] 1 1"


def test_openvino_sends_no_telemetry(tmp_path: Path) -> None:
    """`import openvino` would send a Google Analytics event and write ~/intel/openvino_ga_cid; through
    peoplemap it does neither, and opens no socket while compiling and running a model."""
    model = _gap_model(tmp_path / "gap.onnx")
    code = f"""
import json, os, socket, sys, time
calls = []
real_getaddrinfo, real_connect = socket.getaddrinfo, socket.socket.connect
socket.getaddrinfo = lambda *a, **k: calls.append(("getaddrinfo", str(a[0]))) or real_getaddrinfo(*a, **k)
socket.socket.connect = lambda self, addr: calls.append(("connect", str(addr))) or real_connect(self, addr)
import numpy as np
from peoplemap.embed.onnx_session import make_session
s = make_session({str(model)!r}, 1, "openvino", "fp32")
s.run(None, {{"pixels": np.zeros((2, 3, 32, 32), np.float32)}})
time.sleep(0.5)  # telemetry is sent from a background thread
ovc = sys.modules.get("openvino.tools.ovc.telemetry_utils")
print(json.dumps({{"calls": calls, "tm": ovc.tm.__name__ if ovc else None,
                  "telemetry_importable": "openvino_telemetry" not in sys.modules or sys.modules["openvino_telemetry"] is not None,
                  "cid": os.path.exists(os.path.expanduser("~/intel/openvino_ga_cid"))}}))
"""
    home = tmp_path / "home"
    home.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("CI", "TF_BUILD", "JENKINS_URL")}
    env["HOME"] = str(home)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["calls"] == []
    assert result["tm"] in (None, "openvino.tools.ovc.telemetry_stub")
    assert result["telemetry_importable"] is True  # only blocked while openvino was imported
    assert result["cid"] is False and not (home / "intel").exists()
