"""The `face` model: dlib face detection + 5-point alignment + ResNet 128-d face descriptor.

Weights ship in face_recognition_models (found with find_spec, never imported: its __init__ needs
pkg_resources). Each face is an item: `detect` finds faces and returns their aligned 150x150 chips,
`embed` turns chips into dlib descriptors, L2-normalised. dlib's raw descriptors have norms of about
1.45 (1.36-1.53 on dlib_johns), so dlib's documented same-person threshold of 0.6 Euclidean is about
0.41 between the stored vectors.
"""
from __future__ import annotations

import hashlib
import logging
import threading
from importlib.metadata import PackageNotFoundError, version as package_version
from typing import Any, Optional, Sequence

import numpy as np

from ..config import Settings, load_settings
from ..detect.faces import (CHIP_PADDING, CHIP_SIZE, CNN_MODEL, INSTALL, RECOGNITION_MODEL, SHAPE_MODEL,
                            FaceDetector, Shared, as_rgb, import_dlib, mmod_detector, model_path, shared_model)
from ..errors import InputError
from ..types import Region
from . import base, dlib_dnn
from .onnx_session import Session, file_sha256, memory_session
from .registry import register

log = logging.getLogger(__name__)

DIM = 128
REVISION = "1"
"""Bump when alignment or descriptor code changes what vector a face gets: it is part of `version`,
and vectors of different versions are never mixed (the library asks for `index --rebuild`)."""
DETECTION_REVISION = "4"
"""Which faces are found, recorded in `describe()`; not part of `version`, since a face found by
either detector gets a comparable vector (same alignment, same descriptor): libraries indexed
before keep working, new photos get the new detector, and `index --rebuild` re-detects old ones.
2: HOG scans once at `scan_scale` on the luminance; the CNN detector looks where HOG finds nothing.
3: the CNN looks at up to 250,000 px instead of 100,000 (photos without a face 1.5% -> 0.8%).
4: the CNN enlarges small photos (up to 2x) to its scanning size (photos without a face 0.9% -> 0.3%)."""
DECODE_MIN_SIDE = 1200
"""JPEGs may be draft-decoded at 1/2..1/8 while their shorter side stays >= 1200 px: a 12 MP photo is
scanned at 2000x1500 (~0.2 s of HOG instead of ~0.8 s, and a faster decode), where the 80 px detector
window still finds faces down to 4% of the photo's width; smaller photos are decoded at full size."""


MATCH_DISTANCE = 0.32
"""A new face (or a query) joins an existing person only when a member is this close (unit
vectors; dlib's raw-descriptor threshold of 0.6 is ~0.41 here). Measured with
benchmarks/bench_placement.py on celeba_wild_dev and lfw_devtest (people held out of the first
index, then added): the clustering's radius rule alone put 67% of the faces of people not in the
library with someone; at 0.32, under 1%, while 88% of known people's new faces join the right person."""


MERGE_DISTANCE = 0.345
"""Two groups of faces whose members are on average this close are one person: dlib's own
clustering threshold for these descriptors (0.5 on raw descriptors, as in its chinese whispers
example; `cluster.CW_THRESHOLD`), applied to the average over all pairs of the two groups instead of
to a single pair. Measured on the 8 shared face sets together (benchmarks/RESULTS.md): BCubed F over
all photos unchanged or higher on each from 0.34 to 0.35 (att_orl 0.968 -> 1.000, yale 0.956 ->
1.000, celeba_wild_dev +0.013, LFW DevTest -0.001); at 0.36 yale and at 0.37 extended Yale B lose."""


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
    """One item per face: dlib detector -> 5-point aligned 150x150 chip -> 128-d ResNet descriptor."""

    name = "face"
    dim = DIM
    item_kind = "face"
    parallel = "processes"
    """dlib holds the GIL and runs on one core: index runs spread images over worker processes."""
    decode_max_side: int | None = DECODE_MIN_SIDE
    match_distance: float | None = MATCH_DISTANCE
    merge_distance: float | None = MERGE_DISTANCE
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
        jit = f"-j{self.num_jitters}" if self.num_jitters else ""
        return f"dlib-resnet-v1+{self.detector.detector}-r{REVISION}{jit}-{h.hexdigest()[:12]}"

    @property
    def version(self) -> str:
        """'dlib-resnet-v1+<detector>-r<REVISION>[-j<jitters>]-<hash of dlib's version and the files
        that make the vector>' (the 32 MB of files are hashed once per process)."""
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
            "descriptor": f"dlib ResNet face_recognition_model_v1 on {CHIP_SIZE}x{CHIP_SIZE} chips, {DIM}-d",
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

    def detect(self, image: np.ndarray) -> list[Region]:
        return self.detector.detect(image)

    def embed(self, crops: Sequence[np.ndarray]) -> np.ndarray:
        """Descriptors of aligned 150x150 chips (as `detect` returns them; any 150x150 crop is taken to
        be one). A crop of another size is first aligned with landmarks fitted on its whole area."""
        if len(crops) == 0:
            return np.zeros((0, DIM), dtype=np.float32)
        chips = []
        for i, c in enumerate(crops):
            c = as_rgb(c, f"crop {i}")
            chips.append(c if c.shape[:2] == (CHIP_SIZE, CHIP_SIZE) else self.detector.align_whole(c))
        out = np.empty((len(chips), DIM), dtype=np.float32)
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


@register("face", "dlib HOG face detector + 5-point alignment + ResNet 128-d face descriptor")
def create(settings: Settings | None = None, detector: str = "hog", **options: Any) -> FaceEmbedder:
    """Factory: options upsample (None = by image size), min_face (px), fallback_whole_image,
    fallback_cnn, num_jitters."""
    return _create(settings, detector, options)


@register("face-cnn", "dlib MMOD CNN face detector (slower, more robust) + 5-point alignment + ResNet 128-d")
def create_cnn(settings: Settings | None = None, **options: Any) -> FaceEmbedder:
    """Factory: the `face` model with dlib's CNN detector."""
    return _create(settings, "cnn", options)
