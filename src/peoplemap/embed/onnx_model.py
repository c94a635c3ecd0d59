"""Bring your own model: `--model onnx:PATH` embeds with any ONNX file that maps images to vectors.

Preprocessing (all optional), from keyword options or from a JSON sidecar next to the model
(`PATH.json`, e.g. `{"input_size": [128, 256], "color": "bgr", "mean": [0.485, 0.456, 0.406]}`),
keyword options winning:
- input_size (W, H): read from the model's input shape when static, else 128x256 for bodies,
  112x112 for faces, 224x224 for whole images; also accepted as "128x256";
- color "rgb" | "bgr"; scale (default 1/255); mean / std per channel (default 0 / 1), applied as
  (pixel * scale - mean) / std; also accepted as "0.5,0.5,0.5";
- item_kind "body" (default) | "face" | "image": what one item is. Bodies use the `body` model's
  detector for regions (whole image for person crops), faces the dlib face detector (aligned
  chips), images the whole image.
The layout (NCHW or NHWC) and channel count (3, or 1 for grey models) are read from the model's input
shape. The first output, flattened per image, is L2-normalised. The version is the file's sha256
prefix plus a hash of the preprocessing, so a changed file or setting never mixes with old vectors.
"""
from __future__ import annotations

import hashlib
import json
import logging
import math
import os
from dataclasses import fields, replace
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np

from ..config import Settings, load_settings
from ..errors import InputError, ModelError
from ..types import Region
from . import base
from .onnx_session import LazySession, Session, describe_runtime, file_sha256, make_session, settings_session
from .registry import register

log = logging.getLogger(__name__)

ITEM_KINDS = ("body", "face", "image")
COLORS = ("rgb", "bgr")
DEFAULT_SIZE = {"body": (128, 256), "face": (112, 112), "image": (224, 224)}
OPTIONS = ("input_size", "color", "mean", "std", "scale", "item_kind", "detector")


def _floats(name: str, value: Any, n: int) -> tuple[float, ...]:
    if isinstance(value, str):
        value = [v for v in value.replace(" ", "").split(",") if v]
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        value = [value] * n
    try:
        out = tuple(float(v) for v in value)
    except (TypeError, ValueError):
        raise InputError(f"{name} must be {n} numbers, got {value!r}") from None
    if len(out) == 1:
        out = out * n
    if len(out) != n or not all(math.isfinite(v) for v in out):
        raise InputError(f"{name} must be {n} finite numbers, got {value!r}")
    return out


def _size(value: Any) -> Optional[tuple[int, int]]:
    if value is None:
        return None
    if isinstance(value, str):
        parts = value.lower().replace(",", "x").split("x")
    else:
        parts = list(value) if isinstance(value, (list, tuple)) else [value]
    try:
        w, h = (int(p) for p in parts)
    except (TypeError, ValueError):
        raise InputError(f"input_size must be (width, height) or 'WxH', got {value!r}") from None
    if not (1 <= w <= 4096 and 1 <= h <= 4096):
        raise InputError(f"input_size must be within 1..4096 pixels per side, got {value!r}")
    return w, h


class OnnxEmbedder(base.ModelBase):
    """A user-supplied ONNX model: crops -> resize -> normalise -> model -> flatten -> L2."""

    decode_max_side: int | None = None

    def __init__(self, path: str | os.PathLike[str], settings: Settings | None = None, *,
                 input_size: Any = None, color: str | None = None, mean: Any = None, std: Any = None,
                 scale: Any = None, item_kind: str | None = None, detector: str | None = None) -> None:
        self.settings = settings if settings is not None else load_settings()
        self.path = Path(os.fspath(path)).expanduser()
        if not str(path):
            raise InputError("onnx model needs a path: --model onnx:PATH")
        if not self.path.is_file():
            raise ModelError(f"ONNX model file not found: {self.path}")
        given = {k: v for k, v in dict(input_size=input_size, color=color, mean=mean, std=std, scale=scale,
                                       item_kind=item_kind, detector=detector).items() if v is not None}
        opts = {**self._sidecar(), **given}
        self.item_kind = str(opts.get("item_kind", "body"))
        if self.item_kind not in ITEM_KINDS:
            raise InputError(f"item_kind must be one of {list(ITEM_KINDS)}, got {self.item_kind!r}")
        self.color = str(opts.get("color", "rgb")).lower()
        if self.color not in COLORS:
            raise InputError(f"color must be one of {list(COLORS)}, got {opts.get('color')!r}")
        self.mean = _floats("mean", opts.get("mean", 0.0), 3)
        self.std = _floats("std", opts.get("std", 1.0), 3)
        if any(s == 0 for s in self.std):
            raise InputError(f"std must not contain 0, got {self.std}")
        self.scale = _floats("scale", opts.get("scale", 1.0 / 255.0), 1)[0]
        self._size_option = _size(opts.get("input_size"))
        self.detector_name = str(opts.get("detector", "auto"))
        self.sha256 = file_sha256(self.path)
        self.name = f"onnx:{self.path.name}"
        self._session = LazySession(self._open)
        self._dim: Optional[int] = None
        self._detector: Optional[base.Detector] = None
        self._input_name = ""
        self._layout = "NCHW"
        self._channels = 3
        self._size: tuple[int, int] = self._size_option or DEFAULT_SIZE[self.item_kind]
        self._fixed_batch: Optional[int] = None
        prep = json.dumps({"size": self._size_option, "color": self.color, "mean": self.mean, "std": self.std,
                           "scale": self.scale, "kind": self.item_kind}, sort_keys=True)
        self.version = f"{self.sha256[:16]}-p{hashlib.sha256(prep.encode()).hexdigest()[:8]}"

    def _sidecar(self) -> dict[str, Any]:
        side = self.path.with_name(self.path.name + ".json")
        if not side.is_file():
            return {}
        try:
            data = json.loads(side.read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            raise InputError(f"cannot read the model's options file {side}: {e}") from e
        if not isinstance(data, dict):
            raise InputError(f"{side} must hold a JSON object of options {list(OPTIONS)}")
        unknown = sorted(set(data) - set(OPTIONS))
        if unknown:
            raise InputError(f"unknown option(s) {unknown} in {side}; allowed: {list(OPTIONS)}")
        return data

    # -- metadata ------------------------------------------------------------------------------
    @property
    def dim(self) -> int:
        """Length of the output vector (loads the model the first time)."""
        self._get_session()
        assert self._dim is not None
        return self._dim

    def describe(self) -> dict[str, Any]:
        self._get_session()
        return {
            "model": self.name, "version": self.version, "file": str(self.path), "sha256": self.sha256,
            "input": f"{self._size[0]}x{self._size[1]} {self.color.upper()} {self._layout}"
                     f"{' grey' if self._channels == 1 else ''}",
            "resize": "PIL bilinear (aspect ratio not kept)",
            "normalisation": {"scale": self.scale, "mean": list(self.mean), "std": list(self.std)},
            "output": f"first output flattened, {self._dim}-d, L2-normalised",
            "item_kind": self.item_kind, **describe_runtime(self._session.loaded, self.settings),
        }

    # -- loading -------------------------------------------------------------------------------
    def load(self) -> None:
        """Load and check the model now (ModelError if it is not a usable image -> vector model)."""
        self._get_session()

    def _get_session(self) -> Session:
        return self._session.get()

    def _open(self) -> Session:
        session = settings_session(self.path, self.settings)
        try:
            self._inspect(session)
        except ModelError as e:
            if session.runtime != "openvino" or self.settings.runtime != "auto":
                raise
            # OpenVINO compiled it but cannot run it as an image -> vector model: try onnxruntime.
            log.warning("%s does not run in OpenVINO (%s); using onnxruntime instead", self.path.name, e)
            session = make_session(self.path, self.settings.threads, "onnxruntime", "fp32")
            self._inspect(session)
        return session

    def _inspect(self, session: Session) -> None:
        """Read layout, size and batch from the model's input, and the vector length from a probe."""
        inputs = session.get_inputs()
        if len(inputs) != 1:
            raise ModelError(f"{self.path.name}: an embedding model must have exactly one input, "
                             f"it has {len(inputs)}: {[i.name for i in inputs]}")
        inp = inputs[0]
        shape = list(inp.shape)
        if len(shape) != 4:
            raise ModelError(f"{self.path.name}: input {inp.name!r} must be a 4-D image batch "
                             f"(NCHW or NHWC), got shape {shape}")
        if "float" not in str(inp.type):
            raise ModelError(f"{self.path.name}: input {inp.name!r} must be float, got {inp.type}")
        if shape[1] in (1, 3):
            layout, ch, h, w = "NCHW", shape[1], shape[2], shape[3]
        elif shape[3] in (1, 3):
            layout, ch, h, w = "NHWC", shape[3], shape[1], shape[2]
        else:
            raise ModelError(f"{self.path.name}: cannot tell the channel axis of input shape {shape}: "
                             "need 1 or 3 channels at axis 1 (NCHW) or 3 (NHWC)")
        static = isinstance(h, int) and isinstance(w, int) and h > 0 and w > 0
        if static:
            if self._size_option is not None and self._size_option != (w, h):
                raise InputError(f"{self.path.name} takes {w}x{h} images; input_size "
                                 f"{self._size_option[0]}x{self._size_option[1]} does not fit it")
            self._size = (w, h)
        self._input_name, self._layout, self._channels = inp.name, layout, int(ch)
        self._fixed_batch = shape[0] if isinstance(shape[0], int) and shape[0] > 0 else None
        out = session.get_outputs()[0]
        if len(out.shape) < 2:
            raise ModelError(f"{self.path.name}: output {out.name!r} must have a batch axis and features "
                             f"(rank >= 2), got shape {out.shape}")
        probe = self._run(session, np.zeros((1, self._size[1], self._size[0], 3), dtype=np.uint8))
        self._dim = int(probe.shape[1])
        if self._dim < 1:
            raise ModelError(f"{self.path.name}: output has no features (shape {out.shape})")

    # -- embedding -----------------------------------------------------------------------------
    def detect(self, image: np.ndarray) -> list[Region]:
        if self.item_kind == "image":
            return list(base.WHOLE_IMAGE)
        if self._detector is None:
            if self.item_kind == "body":
                from ..detect.bodies import BodyDetector

                self._detector = BodyDetector(self.detector_name)
            else:
                from ..detect.faces import FaceDetector

                self._detector = FaceDetector()
        return self._detector.detect(image)

    def preprocess(self, crops: Sequence[np.ndarray]) -> np.ndarray:
        """RGB uint8 crops -> the model's float32 input batch."""
        self._get_session()
        return self._normalise(self._resize(crops))

    def _resize(self, crops: Sequence[np.ndarray], offset: int = 0) -> np.ndarray:
        from PIL import Image

        w, h = self._size
        pixels = np.empty((len(crops), h, w, 3), dtype=np.uint8)
        for i, c in enumerate(crops):
            base.check_crop(offset + i, c)
            pixels[i] = c if c.shape[:2] == (h, w) else np.asarray(
                Image.fromarray(np.ascontiguousarray(c)).resize((w, h), Image.Resampling.BILINEAR))
        return pixels

    def _normalise(self, pixels: np.ndarray) -> np.ndarray:
        x = pixels.astype(np.float32)
        if self.color == "bgr":
            x = x[..., ::-1]
        x = (x * np.float32(self.scale) - np.asarray(self.mean, np.float32)) / np.asarray(self.std, np.float32)
        if self._channels == 1:  # grey models: ITU-R 601 luma of the (normalised) channels
            x = (x @ np.array([0.299, 0.587, 0.114], np.float32))[..., None]
        if self._layout == "NCHW":
            x = x.transpose(0, 3, 1, 2)
        return np.ascontiguousarray(x, dtype=np.float32)

    def _run(self, session: Session, pixels: np.ndarray) -> np.ndarray:
        x = self._normalise(pixels)
        step = self._fixed_batch or max(1, self.settings.batch_size)
        parts = []
        for i in range(0, len(x), step):
            chunk = x[i:i + step]
            real = len(chunk)
            if self._fixed_batch and real < self._fixed_batch:  # pad a fixed-batch model's last call
                chunk = np.concatenate([chunk, np.zeros((self._fixed_batch - real, *chunk.shape[1:]), np.float32)])
            try:
                y = session.run(None, {self._input_name: chunk})[0]
            except Exception as e:  # the runtimes raise their own types for shape/type errors
                raise ModelError(f"{self.path.name} failed on a {chunk.shape} batch: {e}") from e
            y = np.asarray(y)
            if y.ndim < 2 or y.shape[0] != len(chunk):
                raise ModelError(f"{self.path.name}: output must be (batch, ...) with batch {len(chunk)}, "
                                 f"got shape {y.shape}")
            parts.append(y[:real].reshape(real, -1))
        return np.concatenate(parts).astype(np.float32, copy=False)

    def embed(self, crops: Sequence[np.ndarray]) -> np.ndarray:
        session = self._get_session()
        if len(crops) == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        step = max(1, self.settings.batch_size)
        out = [self._run(session, self._resize(crops[i:i + step], offset=i)) for i in range(0, len(crops), step)]
        X = np.concatenate(out)
        if X.shape[1] != self.dim:
            raise ModelError(f"{self.path.name}: output length changed from {self.dim} to {X.shape[1]}")
        if not np.isfinite(X).all():
            raise ModelError(f"{self.path.name} produced NaN or infinite values")
        return base.l2_normalize(X)



@register("onnx", "your own ONNX model: --model onnx:PATH (options in PATH.json)")
def create(path: str = "", settings: Settings | None = None, **options: Any) -> OnnxEmbedder:
    """Factory: options are the preprocessing options above or Settings fields (batch_size, threads)."""
    settings = settings if settings is not None else load_settings()
    setting_names = {f.name for f in fields(Settings)}
    unknown = sorted(set(options) - setting_names - set(OPTIONS))
    if unknown:
        raise InputError(f"unknown option(s) {unknown} for model 'onnx'; allowed: "
                         f"{sorted(OPTIONS)} and {sorted(setting_names)}")
    overrides = {k: v for k, v in options.items() if k in setting_names}
    if overrides:
        settings = replace(settings, **overrides)
    return OnnxEmbedder(path, settings, **{k: v for k, v in options.items() if k in OPTIONS})
