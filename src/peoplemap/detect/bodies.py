"""Bodies: where the people are in an image, as boxes for the `body` model to embed.

Two kinds of image reach a body model:
- re-ID-style person crops (tall and small: h/w >= 1.5, long side <= 400 px, like the 60x160 and
  48x128 crops of the shared re-ID sets, or crops a tracker saved). The whole image is the body.
- anything else (a photo with people in it). People are detected:
  "hog"  OpenCV's HOG + linear SVM people detector (Dalal & Triggs), when the installed OpenCV has
         it: `cv2.HOGDescriptor` exists in OpenCV 4.x but was removed from the main module in
         OpenCV 5, so with opencv-python 5 this backend is unavailable.
  "face" a body box hung below each face that dlib's frontal HOG face detector finds (needs the
         `face` extra). It finds only people facing the camera, and the box is a proportion rule.
  "auto" (default) "hog" if available, else "face" if dlib is installed, else no detector.
A scene image where nothing is found, or where no detector is available, has no body regions (no
items): nothing is invented. Boxes are (x, y, w, h) in the pixels of the image passed in.
"""
from __future__ import annotations

import logging
import threading
from typing import Any, Optional

import numpy as np

from ..errors import InputError, ModelError
from ..types import Region

log = logging.getLogger(__name__)

BACKENDS = ("auto", "hog", "face", "none")

CROP_MAX_SIDE = 400
CROP_MIN_ASPECT = 1.5
"""An image at most 400 px on its long side and at least 1.5 times as tall as wide is a person crop."""

DETECT_MAX_SIDE = 960
"""Images are scanned reduced to this long side: HOG costs ~1 s per megapixel on one core, and a
person shorter than ~13% of such a frame is too small to embed usefully anyway."""
PAD_FRACTION = 0.2
"""The HOG window (64x128) wants margin around a person; a person filling the frame top to bottom is
only found when the image is padded (with its edge pixels) by ~1/6 of its height or more."""
HOG_WIN_STRIDE = (8, 8)
HOG_PADDING = (8, 8)
HOG_SCALE = 1.05
HOG_MIN_SCORE = 0.5
"""SVM margin below which a HOG window is dropped; 0 keeps every positive window, which on photos
fires on trees, railings and door frames."""
NMS_IOU = 0.45
FACE_UPSAMPLE_PIXELS = 1_500_000
"""Images up to this size are doubled once for the face detector (80 px -> 40 px faces)."""
FACE_TO_BODY = (3.0, 7.0, 0.5)
"""Body box from a face box (fx, fy, fw, fh): width 3 fw centred on the face, top 0.5 fh above the
face, height 7 fh (an adult is ~7.5 heads tall and dlib's box covers ~0.8 of the head), clipped to
the image."""


def is_person_crop(height: int, width: int) -> bool:
    """True for a re-ID-style crop: the whole image is one person's body."""
    return max(height, width) <= CROP_MAX_SIDE and height >= CROP_MIN_ASPECT * width


def hog_available() -> bool:
    """Whether the installed OpenCV has the HOG people detector (OpenCV 4.x; not OpenCV 5)."""
    try:
        import cv2
    except ImportError:
        return False
    return hasattr(cv2, "HOGDescriptor") and hasattr(cv2, "HOGDescriptor_getDefaultPeopleDetector")


def dlib_available() -> bool:
    from importlib.util import find_spec

    return find_spec("dlib") is not None


def nms(boxes: np.ndarray, scores: np.ndarray, iou: float = NMS_IOU) -> list[int]:
    """Greedy non-maximum suppression over (x, y, w, h) boxes: indices kept, best score first."""
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    scores = np.asarray(scores, dtype=np.float64).ravel()
    x0, y0 = boxes[:, 0], boxes[:, 1]
    x1, y1 = x0 + boxes[:, 2], y0 + boxes[:, 3]
    area = np.maximum(boxes[:, 2], 0) * np.maximum(boxes[:, 3], 0)
    order = list(np.argsort(-scores, kind="stable"))
    keep: list[int] = []
    while order:
        i = order.pop(0)
        keep.append(int(i))
        if not order:
            break
        rest = np.array(order)
        iw = np.clip(np.minimum(x1[i], x1[rest]) - np.maximum(x0[i], x0[rest]), 0, None)
        ih = np.clip(np.minimum(y1[i], y1[rest]) - np.maximum(y0[i], y0[rest]), 0, None)
        inter = iw * ih
        union = area[i] + area[rest] - inter
        overlap = np.where(union > 0, inter / np.maximum(union, 1e-12), 0.0)
        # Also drop a box mostly inside the kept one or containing it: HOG fires on a person and on
        # their torso, and only the better-scoring of the two is kept.
        smaller = np.minimum(area[i], area[rest])
        inside = np.where(smaller > 0, inter / np.maximum(smaller, 1e-12), 0.0)
        order = [j for j, o, s in zip(order, overlap, inside) if o <= iou and s <= 0.8]
    return keep


_local = threading.local()
_dlib_lock = threading.Lock()
_dlib_detector: Any = None


def _hog() -> Any:
    """This thread's HOG descriptor (OpenCV objects are not shared across threads)."""
    hog = getattr(_local, "hog", None)
    if hog is None:
        import cv2

        hog = cv2.HOGDescriptor()
        hog.setSVMDetector(cv2.HOGDescriptor_getDefaultPeopleDetector())
        _local.hog = hog
    return hog


def _face_detector() -> Any:
    global _dlib_detector
    with _dlib_lock:
        if _dlib_detector is None:
            try:
                import dlib
            except ImportError as e:
                raise ModelError(f"body detection from faces needs dlib ({e}): pip install 'peoplemap[face]'") from e
            _dlib_detector = dlib.get_frontal_face_detector()
        return _dlib_detector


class BodyDetector:
    """Body regions of an image: the whole image for person crops, detections otherwise.

    backend: "auto", "hog", "face" or "none" (see the module docstring); "hog" and "face" raise
    ModelError on first use when their library is missing.
    min_score: detections scoring below this are dropped (HOG SVM margin; dlib face score).
    """

    def __init__(self, backend: str = "auto", min_score: Optional[float] = None,
                 max_side: int = DETECT_MAX_SIDE) -> None:
        if backend not in BACKENDS:
            raise InputError(f"Unknown body detector: {backend!r}. Must be one of {list(BACKENDS)}")
        if isinstance(max_side, bool) or not isinstance(max_side, int) or max_side < 128:
            raise InputError(f"max_side must be an integer >= 128 (pixels), got {max_side!r}")
        self.requested = backend
        self.max_side = max_side
        self._min_score = min_score

    @property
    def backend(self) -> str:
        """The backend actually used ("auto" resolved against what is installed)."""
        if self.requested != "auto":
            return self.requested
        if hog_available():
            return "hog"
        if dlib_available():
            return "face"
        return "none"

    @property
    def min_score(self) -> float:
        if self._min_score is not None:
            return float(self._min_score)
        return HOG_MIN_SCORE if self.backend == "hog" else 0.0

    def describe(self) -> dict[str, Any]:
        backend = self.backend
        detail = {
            "hog": f"OpenCV HOG people detector, scale {HOG_SCALE}, stride {HOG_WIN_STRIDE}, "
                   f"min score {self.min_score}, NMS IoU {NMS_IOU}, edge padding {PAD_FRACTION} of the height",
            "face": f"dlib frontal face detector, body = face box x {FACE_TO_BODY[0]} wide, "
                    f"{FACE_TO_BODY[1]} tall, starting {FACE_TO_BODY[2]} face heights above it",
            "none": "no detector: scene images yield no body",
        }[backend]
        return {"crops": f"long side <= {CROP_MAX_SIDE} px and h/w >= {CROP_MIN_ASPECT}: whole image",
                "scenes": detail, "scan_max_side": self.max_side, "backend": backend}

    def load(self) -> None:
        """Fail now (ModelError) if the chosen backend's library is missing."""
        backend = self.backend
        if backend == "hog":
            if not hog_available():
                raise ModelError("the HOG people detector needs OpenCV 4.x (OpenCV 5 removed "
                                 "cv2.HOGDescriptor): pip install 'opencv-python<5'")
            _hog()
        elif backend == "face":
            _face_detector()

    def detect(self, rgb: np.ndarray) -> list[Region]:
        """Body regions: [Region(None)] for a person crop, else detected boxes, best first."""
        if not isinstance(rgb, np.ndarray) or rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
            desc = f"{rgb.dtype} {rgb.shape}" if isinstance(rgb, np.ndarray) else type(rgb).__name__
            raise InputError(f"image must be an RGB uint8 array of shape (h, w, 3), got {desc}")
        h, w = rgb.shape[:2]
        if h == 0 or w == 0:
            raise InputError(f"image is empty: shape {rgb.shape}")
        if is_person_crop(h, w):
            return [Region(box=None, score=1.0)]
        backend = self.backend
        if backend == "none":
            return []
        self.load()
        scale = min(1.0, self.max_side / max(h, w))
        img = rgb if scale == 1.0 else _resize(rgb, scale)
        boxes, scores = (self._hog_boxes if backend == "hog" else self._face_boxes)(img)
        out = []
        for (x, y, bw, bh), s in zip(boxes, scores):
            x0, y0 = max(0, int(round(x / scale))), max(0, int(round(y / scale)))
            x1, y1 = min(w, int(round((x + bw) / scale))), min(h, int(round((y + bh) / scale)))
            if x1 - x0 >= 8 and y1 - y0 >= 16:
                out.append(Region(box=(x0, y0, x1 - x0, y1 - y0), score=float(s)))
        return out

    def _hog_boxes(self, img: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        import cv2

        h, w = img.shape[:2]
        pad_y, pad_x = int(PAD_FRACTION * h), int(PAD_FRACTION * h / 2)
        padded = cv2.copyMakeBorder(img, pad_y, pad_y, pad_x, pad_x, cv2.BORDER_REPLICATE)
        rects, weights = _hog().detectMultiScale(padded, hitThreshold=0.0, winStride=HOG_WIN_STRIDE,
                                                 padding=HOG_PADDING, scale=HOG_SCALE)
        if len(rects) == 0:
            return np.zeros((0, 4)), np.zeros(0)
        rects = np.asarray(rects, dtype=np.float64).reshape(-1, 4)
        scores = np.asarray(weights, dtype=np.float64).ravel()
        rects[:, 0] -= pad_x
        rects[:, 1] -= pad_y
        # Clip to the unpadded image; keep boxes that are still mostly inside it.
        x0, y0 = np.clip(rects[:, 0], 0, w), np.clip(rects[:, 1], 0, h)
        x1, y1 = np.clip(rects[:, 0] + rects[:, 2], 0, w), np.clip(rects[:, 1] + rects[:, 3], 0, h)
        inside = (x1 - x0) * (y1 - y0) >= 0.5 * rects[:, 2] * rects[:, 3]
        ok = inside & (scores >= self.min_score)
        clipped = np.stack([x0, y0, x1 - x0, y1 - y0], axis=1)[ok]
        scores = scores[ok]
        keep = nms(clipped, scores)
        return clipped[keep], scores[keep]

    def _face_boxes(self, img: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        h, w = img.shape[:2]
        up = 1 if h * w <= FACE_UPSAMPLE_PIXELS else 0
        det = _face_detector()
        with _dlib_lock:
            rects, scores, _ = det.run(np.ascontiguousarray(img), up, 0.0)
        bw_f, bh_f, top_f = FACE_TO_BODY
        boxes, kept = [], []
        for r, s in zip(rects, scores):
            if s < self.min_score:
                continue
            fx, fy, fw, fh = r.left(), r.top(), r.width(), r.height()
            cx = fx + fw / 2.0
            x0, y0 = max(0.0, cx - bw_f * fw / 2.0), max(0.0, fy - top_f * fh)
            x1, y1 = min(float(w), cx + bw_f * fw / 2.0), min(float(h), fy - top_f * fh + bh_f * fh)
            if x1 > x0 and y1 > y0:
                boxes.append((x0, y0, x1 - x0, y1 - y0))
                kept.append(float(s))
        if not boxes:
            return np.zeros((0, 4)), np.zeros(0)
        boxes_a, scores_a = np.asarray(boxes), np.asarray(kept)
        order = np.argsort(-scores_a, kind="stable")
        return boxes_a[order], scores_a[order]


def _resize(rgb: np.ndarray, scale: float) -> np.ndarray:
    from PIL import Image

    h, w = rgb.shape[:2]
    size = (max(1, int(round(w * scale))), max(1, int(round(h * scale))))
    return np.asarray(Image.fromarray(rgb).resize(size, Image.Resampling.BILINEAR))
