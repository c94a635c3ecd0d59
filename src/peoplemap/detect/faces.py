"""Faces with dlib: HOG or MMOD-CNN boxes, 5-point landmarks, aligned 300x300 wide chips.

Every region's crop is a wide chip (`dlib.get_face_chip`, size 300, padding 1.0): its centre 150x150
is the chip dlib's ResNet face descriptor expects (size 150, padding 0.25, at the same scale;
`center_chip`), and it holds the forehead and cheeks that the 112x112 ArcFace-aligned face of the
second descriptor needs (`embed.mobilefacenet`), so an embedder can embed crops directly. The dlib
models are loaded lazily, once per process, and each loaded object is used under its own lock: dlib
objects are not safe to call from two threads at once (and dlib holds the GIL while it runs, so a
lock costs no parallelism).

Pre-cropped face photos (lab sets) often defeat the detector, whose 80 px window wants some margin
around the face. An image that looks like such a crop (small, near square) is first scanned padded
with its own edge pixels, then bare; with no detection either way the landmarks are fitted on the
whole image. A fallback region has box = the whole image and score 0.0; it is only returned when the
image is not flat, the fitted landmarks have a face's geometry (`plausible_landmarks`) and the HOG
detector scores the aligned chip as face-like (`chip_face_score`). Measured, about 1 in 150 non-face
squares still passes all three and yields a junk "face".
"""
from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from importlib.util import find_spec
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import numpy as np

from ..errors import InputError, ModelError
from ..types import Region

log = logging.getLogger(__name__)

INSTALL = "pip install 'peoplemap[face]'"
SHAPE_MODEL = "shape_predictor_5_face_landmarks.dat"
CNN_MODEL = "mmod_human_face_detector.dat"
RECOGNITION_MODEL = "dlib_face_recognition_resnet_model_v1.dat"
DETECTORS = ("hog", "cnn")

CHIP_SIZE = 150
CHIP_PADDING = 0.25
WIDE_SIZE = 300
WIDE_PADDING = 1.0
"""A wide chip spans 1 + 2 x 1.0 = 3 face widths in 300 px, dlib's chip 1.5 in 150 px: the same
100 px a face width, so dlib's chip is the wide chip's centre (`center_chip`)."""
HOG_THRESHOLD = -0.2
"""HOG scores below 0 are dlib's "less sure" detections. -0.2 is the lowest threshold with no false
face on any shared set; it finds a blurred 55 px background face in bbt2 (score -0.18) that 0 misses.
-0.3 adds the first false ones. The CNN detector keeps its threshold of 0."""
MAX_UPSAMPLE = 2
UPSAMPLE_BUDGET = {"hog": 6_000_000, "cnn": 1_500_000}
"""The CNN detector's automatic upsampling (dlib doublings): the most whose scanned area stays within
this many pixels. Measured CPU time per megapixel scanned (dlib 20.0.1 wheel, one core): CNN ~3.7 s."""
SCAN_PIXELS = 1_000_000
MAX_SCAN_SCALE = 2.0
"""HOG's automatic scan size: an image smaller than SCAN_PIXELS is enlarged by
min(MAX_SCAN_SCALE, sqrt(SCAN_PIXELS / its pixels)) and scanned once, on its luminance. The 80 px HOG
window then finds faces from 80/scale px: 40 px in photos up to 500x500, 4-8% of the width in larger
ones. Measured on celeba_wild_dev (benchmarks/bench_faces.py): the former rule (the most doublings
within 6 MP, 16x the pixels of a 500 px photo) spent 2.9x the HOG time for faces under that size,
mostly background faces and junk; grey instead of RGB saves another ~20% (dlib's detector was trained
on grey images)."""
CNN_FIRST_PIXELS = 100_000
CNN_FALLBACK_PIXELS = 250_000
"""A photo in which HOG finds no face is scanned by the MMOD CNN detector, scaled to this many
pixels (~0.06 s at 100,000 px on one core in onnxruntime, `mmod_detector`; dlib's own takes ~0.8 s):
it finds the turned and tilted faces HOG misses, large enough to be the photo's subject.
celeba_wild_dev, photos without a face: 44 with HOG alone, 18 with the CNN at 100,000 px, 10 at
250,000 px (the 8 found are each the labeled person: mean distance of their 3 nearest faces of that
person 0.24-0.39); 500,000 px finds no more. Small photos are enlarged to that size (at most
MAX_SCAN_SCALE times): 4 left without a face, the 7 more found are 170-200 px portraits and two
photos under 250,000 px; 6 of their 7 nearest faces are of the labeled person. The CNN looks at
CNN_FIRST_PIXELS first: most of the photos it rescues are found there, at 40% of the cost."""

UNSURE_SCORE = 0.0
"""A photo whose HOG faces all score below this (dlib's "less sure" detections) is also scanned by
the CNN, as one with no HOG face is. On celeba_wild_dev 21 of 1,218 photos have only such faces, 15
of them not crop-like: there the CNN finds the same face with a better-fitted box in 14 (HOG's unsure
boxes sit off the face or are too large) and, in the 15th, the real face, which a watermark's text
across it hid from HOG (its unsure HOG "face" was on the text). rank-1 0.974 -> 0.975."""
OVERLAP = 0.3
"""Two boxes whose intersection is at least this share of the smaller one's area are one face."""

CROP_MAX_SIDE = 400
CROP_ASPECT = (0.6, 1.6)
"""An image at most 400 px on its long side with width/height in [0.6, 1.6] may be a face crop
(att_orl 92x112, extended Yale B 168x192, yale 320x243, 150x150 chips); a photo with people in it is
larger (the shared group photos are >= 594x383)."""
RETRY_PAD = 0.25
"""Padding, as a fraction of the long side, added (edge pixels) around a face-crop-like image before
it is scanned."""
MIN_GREY_STD = 8.0
"""A crop-like image flatter than this (grey-level standard deviation) is not given a fallback face."""
FALLBACK_MIN_SCORE = -0.5
"""A fallback chip must look like a face to the HOG detector: its best score on the chip padded by a
quarter, at any threshold, must reach this. Measured: whole-image chips of real faces (extended Yale B,
att_orl, yale) score >= -0.36; random background squares from the group photos, re-ID crops and noise
score <= -0.41, 99% below -0.54."""


def import_dlib() -> Any:
    """The dlib module, or ModelError naming the extra to install."""
    try:
        import dlib
    except ImportError as e:
        raise ModelError(f"the face model needs dlib ({e}): {INSTALL}") from e
    return dlib


def model_path(filename: str) -> Path:
    """A model file shipped in face_recognition_models (found without importing it: its __init__
    needs pkg_resources)."""
    spec = find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise ModelError(f"the face model needs the face_recognition_models package: {INSTALL}")
    path = Path(list(spec.submodule_search_locations)[0]) / "models" / filename
    if not path.is_file():
        raise ModelError(f"face_recognition_models is installed but {path} is missing; reinstall it: {INSTALL}")
    return path


@dataclass
class Shared:
    """One loaded dlib object and the lock every caller holds while using it."""

    obj: Any
    lock: threading.Lock


_models: dict[str, Shared] = {}
_models_lock = threading.Lock()


def shared_model(key: str, load: Callable[[], Any]) -> Shared:
    """The process-wide instance cached under `key` (a model file path), loaded on first use."""
    with _models_lock:
        m = _models.get(key)
        if m is None:
            log.info("loading dlib model %s", key)
            m = _models[key] = Shared(load(), threading.Lock())
        return m


def _hog() -> Shared:
    return shared_model("dlib:frontal_face_detector", lambda: import_dlib().get_frontal_face_detector())


def _cnn() -> Shared:
    path = model_path(CNN_MODEL)
    return shared_model(str(path), lambda: import_dlib().cnn_face_detection_model_v1(str(path)))


def mmod_detector() -> Any:
    """dlib's MMOD CNN face detector converted to run in onnxruntime (`embed.dlib_dnn.MmodDetector`,
    same boxes and scores as dlib's, ~13x faster on this wheel), one per process; None, with a
    warning once, where it cannot be built: dlib's own detector is used then."""
    from ..embed import dlib_dnn
    from ..embed.onnx_session import memory_session

    return dlib_dnn.converted(
        CNN_MODEL, lambda: model_path(CNN_MODEL),
        lambda layers, name: dlib_dnn.MmodDetector.from_layers(
            layers, lambda model: memory_session(model, name, threads=1), name),
        "the CNN face detector runs in dlib (about 13x slower)")


def _cnn_faces(img: np.ndarray, upsample: int = 0) -> tuple[list[Any], list[float]]:
    """The MMOD CNN detector's rectangles and confidences in `img` (upsampled `upsample` times)."""
    mmod = mmod_detector() if upsample == 0 else None
    if mmod is not None:
        rectangle = import_dlib().rectangle
        found = mmod.detect(img)
        return [rectangle(*d[:4]) for d in found], [d[4] for d in found]
    cnn = _cnn()
    with cnn.lock:
        dets = cnn.obj(img, upsample)
    return [d.rect for d in dets], [d.confidence for d in dets]


def _shape() -> Shared:
    path = model_path(SHAPE_MODEL)
    return shared_model(str(path), lambda: import_dlib().shape_predictor(str(path)))


def scan_scale(height: int, width: int) -> float:
    """How much HOG enlarges an image before its one scan (see SCAN_PIXELS): 1.0 for images of at
    least SCAN_PIXELS, else up to MAX_SCAN_SCALE so that about SCAN_PIXELS are scanned."""
    n = height * width
    return 1.0 if n >= SCAN_PIXELS else min(MAX_SCAN_SCALE, (SCAN_PIXELS / n) ** 0.5)


def resized(img: np.ndarray, scale: float, grey: bool = False) -> np.ndarray:
    """`img` scaled by `scale` (bilinear), optionally as luminance (h, w) uint8; C-contiguous."""
    from PIL import Image

    h, w = img.shape[:2]
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    pil = Image.fromarray(img)
    if grey:
        pil = pil.convert("L")
    if size != (w, h):
        pil = pil.resize(size, Image.BILINEAR)
    return np.ascontiguousarray(np.asarray(pil))


def auto_upsample(height: int, width: int, detector: str = "hog") -> int:
    """dlib doublings for an image: the most (at most 2) whose scanned area stays within the
    detector's pixel budget (UPSAMPLE_BUDGET). The CNN detector's automatic choice; HOG scans once at
    `scan_scale` instead."""
    budget = UPSAMPLE_BUDGET[detector]
    up = 0
    while up < MAX_UPSAMPLE and height * width * 4 ** (up + 1) <= budget:
        up += 1
    return up


def looks_like_face_crop(height: int, width: int) -> bool:
    """Small and near square: possibly a photo that is all face (see CROP_MAX_SIDE)."""
    return max(height, width) <= CROP_MAX_SIDE and CROP_ASPECT[0] <= width / height <= CROP_ASPECT[1]


def plausible_landmarks(points: np.ndarray, width: float) -> bool:
    """Whether 5 dlib landmarks (eye corners 0-1 and 2-3, nose 4) fitted in a box `width` wide have
    a frontal face's geometry. Bounds hold every detected face in the shared face sets, with margin:
    eye distance 0.32-0.56 of the box, roll within 10 deg, nose 0.42-1.12 eye distances below the
    eye line and 0.35-0.77 of the way across."""
    right_eye, left_eye, nose = points[:2].mean(0), points[2:4].mean(0), points[4]
    v = right_eye - left_eye
    iod = float(np.hypot(*v))
    if not 0.22 * width <= iod <= 0.7 * width:
        return False
    if abs(np.degrees(np.arctan2(v[1], v[0]))) > 25:
        return False
    rel = nose - left_eye
    across = float(rel @ v) / iod**2
    down = float(v[0] * rel[1] - v[1] * rel[0]) / iod**2
    return 0.2 <= across <= 0.8 and 0.3 <= down <= 1.4


def is_fallback(region: Region, shape: Sequence[int]) -> bool:
    """Whether `region` is a whole-image fallback face of an image of this (height, width, ...)."""
    return region.score == 0.0 and region.box == (0, 0, int(shape[1]), int(shape[0]))


def overlap(a: Sequence[float], b: Sequence[float]) -> float:
    """The intersection of boxes (x, y, w, h) a and b over the smaller one's area."""
    w = min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0])
    h = min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1])
    if w <= 0 or h <= 0:
        return 0.0
    return float(w * h) / max(1e-9, min(a[2] * a[3], b[2] * b[3]))


def confirmed(unsure: Sequence[Region], cnn: Sequence[Region]) -> list[Region]:
    """HOG's unsure faces checked by the CNN's faces of the same photo: a face both found is the
    CNN's (its box fits the face better); faces only one of them found are all kept."""
    kept = [r for r in unsure if not any(overlap(r.box, c.box) >= OVERLAP for c in cnn)]
    return [*cnn, *kept]


def as_rgb(image: np.ndarray, what: str = "image") -> np.ndarray:
    """A C-contiguous (h, w, 3) uint8 view/copy; grey (h, w) is repeated into three channels."""
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8:
        desc = f"{image.dtype} {image.shape}" if isinstance(image, np.ndarray) else type(image).__name__
        raise InputError(f"{what} must be an RGB uint8 array of shape (h, w, 3), got {desc}")
    if image.ndim == 2:
        image = np.repeat(image[:, :, None], 3, axis=2)
    if image.ndim != 3 or image.shape[2] != 3 or image.shape[0] == 0 or image.shape[1] == 0:
        raise InputError(f"{what} must be an RGB uint8 array of shape (h, w, 3), got shape {image.shape}")
    return np.ascontiguousarray(image)


class FaceDetector:
    """Find faces and return them as regions whose crop is the aligned 300x300 wide chip
    (`center_chip` is dlib's 150x150 chip).

    detector: "hog" (dlib frontal HOG, fast) or "cnn" (dlib MMOD CNN, more robust, ~70x slower on CPU).
    upsample: dlib doublings of the image before scanning; None chooses by size (HOG: one scan of the
    luminance at `scan_scale`; CNN: `auto_upsample`).
    min_face: faces narrower than this many pixels of the image passed are dropped.
    fallback_cnn: (HOG) an image with no HOG face, or a photo (not crop-like) with only unsure ones
    (score < UNSURE_SCORE), is scanned by the CNN detector, shrunk to at most CNN_FALLBACK_PIXELS; its regions carry the
    CNN's confidence as score and replace the unsure HOG faces they overlap (`confirmed`).
    fallback_whole_image: for face-crop-like images with no detection, fit the landmarks on the whole
    image (score 0.0). Such images are always scanned padded first, then bare.
    """

    def __init__(self, detector: str = "hog", upsample: Optional[int] = None, min_face: int = 20,
                 fallback_whole_image: bool = True, fallback_cnn: bool = True) -> None:
        if detector not in DETECTORS:
            raise InputError(f"Unknown face detector: {detector!r}. Must be one of {list(DETECTORS)}")
        if upsample is not None and (isinstance(upsample, bool) or not isinstance(upsample, int)
                                     or not 0 <= upsample <= 4):
            raise InputError(f"upsample must be None (automatic) or an integer 0..4, got {upsample!r}")
        if isinstance(min_face, bool) or not isinstance(min_face, int) or min_face < 1:
            raise InputError(f"min_face must be a positive integer (pixels), got {min_face!r}")
        self.detector = detector
        self.upsample = upsample
        self.min_face = min_face
        self.fallback_whole_image = bool(fallback_whole_image)
        self.fallback_cnn = bool(fallback_cnn) and detector == "hog"

    def describe(self) -> dict[str, Any]:
        return {
            "detector": "dlib frontal HOG" if self.detector == "hog" else f"dlib MMOD CNN ({CNN_MODEL})",
            "upsample": self.upsample if self.upsample is not None else (
                f"auto: one scan of the luminance enlarged by min({MAX_SCAN_SCALE}, sqrt({SCAN_PIXELS} / h*w))"
                if self.detector == "hog" else
                f"auto: most doublings (<= {MAX_UPSAMPLE}) keeping h*w*4^n <= {UPSAMPLE_BUDGET[self.detector]} px"),
            "cnn_fallback": (f"no HOG face, or a photo's only unsure ones (score < {UNSURE_SCORE}): MMOD CNN "
                             f"({CNN_MODEL}) on the image scaled to ~{CNN_FIRST_PIXELS} px, "
                             f"then ~{CNN_FALLBACK_PIXELS} px (enlarged at most {MAX_SCAN_SCALE}x)"
                             if self.fallback_cnn else "off"),
            "threshold": HOG_THRESHOLD if self.detector == "hog" else 0.0,
            "min_face_px": self.min_face,
            "landmarks": SHAPE_MODEL,
            "alignment": (f"5-point, dlib.get_face_chip size {WIDE_SIZE} padding {WIDE_PADDING}; dlib's descriptor "
                          f"on its centre {CHIP_SIZE}x{CHIP_SIZE} (padding {CHIP_PADDING})"),
            "face_crops": (f"images <= {CROP_MAX_SIDE} px with aspect {CROP_ASPECT[0]}-{CROP_ASPECT[1]} are "
                           f"scanned padded by {RETRY_PAD} with edge pixels first, then bare"),
            "fallback": (f"such an image with no face: landmarks on the whole image (score 0) if grey std >= "
                         f"{MIN_GREY_STD}, the landmark geometry is a face's and the chip's HOG face score >= "
                         f"{FALLBACK_MIN_SCORE}") if self.fallback_whole_image else "off",
        }

    def load(self) -> None:
        """Load this detector's dlib models now instead of on the first image."""
        if self.detector == "hog":
            _hog()
        if self.detector == "cnn" or self.fallback_cnn:
            if mmod_detector() is None or (self.detector == "cnn" and self.upsample):
                _cnn()
        _shape()

    # -- detection -----------------------------------------------------------------------------
    def detect(self, rgb: np.ndarray) -> list[Region]:
        """Faces in an RGB uint8 image: boxes (x, y, w, h) clipped to it, scores, aligned wide chips."""
        img = as_rgb(rgb)
        h, w = img.shape[:2]
        crop_like = looks_like_face_crop(h, w)
        if crop_like:
            # A face filling the frame is found far more reliably with a margin around it, and weak
            # detections on the bare crop are misplaced (extended Yale B: mAP 0.998 padded-first vs
            # 0.961 bare-first). One doubling makes an 80 px window find faces from 40 px.
            pad = int(round(RETRY_PAD * max(h, w)))
            padded = np.ascontiguousarray(np.pad(img, ((pad, pad), (pad, pad), (0, 0)), mode="edge"))
            regions = self._detect_in(padded, pad, (h, w))
            if regions:
                log.debug("%d face(s) in a %dx%d crop-like image scanned padded", len(regions), w, h)
                return regions
        regions = self._detect_in(img, 0, (h, w))
        # a crop-like image's unsure faces stay HOG's: on the lab sets (extended Yale B, bbt) the
        # CNN's boxes of such crops were worse (mAP 0.999 -> 0.997)
        if self.fallback_cnn and (not regions or not crop_like and all(r.score < UNSURE_SCORE for r in regions)):
            regions = confirmed(regions, self._cnn_fallback(img))
        if regions or not crop_like or not self.fallback_whole_image:
            return regions
        chip = self.fallback_chip(img)
        return [] if chip is None else [Region(box=(0, 0, w, h), score=0.0, crop=chip)]

    def _detect_in(self, img: np.ndarray, offset: int, size: tuple[int, int]) -> list[Region]:
        """Detections in `img` (the image padded by `offset` px), boxes in unpadded coordinates."""
        h, w = img.shape[:2]
        if self.detector == "hog":
            hog = _hog()
            if self.upsample is None:
                scale = scan_scale(h, w)
                scan = resized(img, scale, grey=True)
                with hog.lock:
                    rects, scores, _ = hog.obj.run(scan, 0, HOG_THRESHOLD)
                return self._regions(img, _unscaled(rects, scale), scores, offset, size)
            with hog.lock:
                rects, scores, _ = hog.obj.run(img, self.upsample, HOG_THRESHOLD)
        else:
            up = self.upsample if self.upsample is not None else auto_upsample(h, w, "cnn")
            rects, scores = _cnn_faces(img, up)
        return self._regions(img, rects, scores, offset, size)

    def _cnn_fallback(self, img: np.ndarray) -> list[Region]:
        """The CNN detector's faces in an image scaled to about CNN_FIRST_PIXELS, then, if it
        finds none, to about CNN_FALLBACK_PIXELS (a large face is found at the first, cheaper
        size; a smaller one needs the second). A small image is enlarged, at most MAX_SCAN_SCALE
        times: the detector's 80 px window misses the faces of 170 px portraits at their own size."""
        h, w = img.shape[:2]
        regions: list[Region] = []
        scanned = 0.0
        for limit in (CNN_FIRST_PIXELS, CNN_FALLBACK_PIXELS):
            scale = min(MAX_SCAN_SCALE, (limit / (h * w)) ** 0.5)
            if scale == scanned:
                break
            scanned = scale
            rects, scores = _cnn_faces(resized(img, scale) if scale != 1.0 else img)
            regions = self._regions(img, _unscaled(rects, scale), scores, 0, (h, w))
            if regions:
                break
        log.debug("CNN fallback: %d face(s) in a %dx%d image", len(regions), w, h)
        return regions

    def _regions(self, img: np.ndarray, rects: Sequence[Any], scores: Sequence[float], offset: int,
                 size: tuple[int, int]) -> list[Region]:
        """Regions of the boxes `rects` of `img` (padded by `offset`): landmarks, chips, clipped boxes."""
        dlib = import_dlib()
        keep = [(r, float(s)) for r, s in zip(rects, scores) if min(r.width(), r.height()) >= self.min_face]
        if not keep:
            return []
        shapes = dlib.full_object_detections()
        sp = _shape()
        with sp.lock:
            for r, _ in keep:
                shapes.append(sp.obj(img, r))
        chips = dlib.get_face_chips(img, shapes, size=WIDE_SIZE, padding=WIDE_PADDING)
        H, W = size
        out = []
        for (r, score), chip in zip(keep, chips):
            x0, y0 = max(0, r.left() - offset), max(0, r.top() - offset)
            x1, y1 = min(W, r.right() + 1 - offset), min(H, r.bottom() + 1 - offset)
            if x1 <= x0 or y1 <= y0:  # a box found wholly in the padding
                continue
            out.append(Region(box=(x0, y0, x1 - x0, y1 - y0), score=score, crop=np.ascontiguousarray(chip)))
        return out

    # -- whole-image landmarks ------------------------------------------------------------------
    def landmarks_whole(self, rgb: np.ndarray) -> tuple[Any, np.ndarray]:
        """The 5-point shape fitted on the whole image as the face box, and its points (5, 2)."""
        dlib = import_dlib()
        h, w = rgb.shape[:2]
        sp = _shape()
        with sp.lock:
            shape = sp.obj(rgb, dlib.rectangle(0, 0, w - 1, h - 1))
        points = np.array([[shape.part(i).x, shape.part(i).y] for i in range(5)], dtype=np.float64)
        return shape, points

    def align_whole(self, rgb: np.ndarray) -> np.ndarray:
        """The aligned wide chip of an image taken to be one face filling it (no plausibility check)."""
        img = as_rgb(rgb, "crop")
        shape, _ = self.landmarks_whole(img)
        return np.ascontiguousarray(import_dlib().get_face_chip(img, shape, size=WIDE_SIZE, padding=WIDE_PADDING))

    def fallback_chip(self, rgb: np.ndarray) -> Optional[np.ndarray]:
        """The whole-image wide chip if the image is not flat, the landmarks look like a face and the
        chip scores as one (see the module docstring), else None."""
        h, w = rgb.shape[:2]
        grey = rgb.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
        if float(grey.std()) < MIN_GREY_STD:
            log.debug("no fallback face: %dx%d image is flat (grey std %.1f)", w, h, float(grey.std()))
            return None
        shape, points = self.landmarks_whole(rgb)
        if not plausible_landmarks(points, float(w)):
            log.debug("no fallback face: landmarks in the %dx%d image do not look like a face", w, h)
            return None
        chip = np.ascontiguousarray(import_dlib().get_face_chip(rgb, shape, size=WIDE_SIZE, padding=WIDE_PADDING))
        score = chip_face_score(center_chip(chip))
        if score < FALLBACK_MIN_SCORE:
            log.debug("no fallback face: the %dx%d image's chip scores %.2f as a face", w, h, score)
            return None
        return chip


def _unscaled(rects: Sequence[Any], scale: float) -> list[Any]:
    """dlib rectangles found in an image scaled by `scale`, mapped back to the image's pixels."""
    if scale == 1.0:
        return list(rects)
    dlib = import_dlib()
    return [dlib.rectangle(int(round(r.left() / scale)), int(round(r.top() / scale)),
                           int(round((r.right() + 1) / scale)) - 1, int(round((r.bottom() + 1) / scale)) - 1)
            for r in rects]


def center_chip(wide: np.ndarray) -> np.ndarray:
    """dlib's 150x150 chip (padding 0.25) inside a wide chip: its centre."""
    at = (WIDE_SIZE - CHIP_SIZE) // 2
    return np.ascontiguousarray(wide[at:at + CHIP_SIZE, at:at + CHIP_SIZE])


def chip_face_score(chip: np.ndarray) -> float:
    """The HOG detector's best score on an aligned chip padded by a quarter with its edge pixels
    (-inf when it has no candidate at all): how face-like the chip is."""
    pad = CHIP_SIZE // 4
    img = np.ascontiguousarray(np.pad(chip, ((pad, pad), (pad, pad), (0, 0)), mode="edge"))
    hog = _hog()
    with hog.lock:
        _, scores, _ = hog.obj.run(img, 0, -3.0)
    return max(float(s) for s in scores) if len(scores) else float("-inf")
