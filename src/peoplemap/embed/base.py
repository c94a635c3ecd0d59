"""The model protocols, the defaults every model declares, and small helpers shared by models.

A model is a `Detector` (what to embed in an image) and an `Embedder` (crops -> vectors) with
declared capabilities (`Model`): how index runs parallelise it, whether it is run in two phases,
whether the library whitens its vectors. Models derive from `ModelBase`, which holds the defaults,
so nothing is discovered by probing attributes.
"""
from __future__ import annotations

from typing import Any, Literal, Protocol, Sequence, runtime_checkable

import numpy as np

from ..errors import ModelError
from ..types import Region

Parallel = Literal["threads", "processes"]
PARALLEL: tuple[str, ...] = ("threads", "processes")


@runtime_checkable
class Detector(Protocol):
    """Finds what to embed in an image."""

    def detect(self, image: np.ndarray) -> list[Region]:
        """Regions of this RGB uint8 image, boxes in its own pixels: [Region(None)] for the whole
        image, [] when there is nothing to embed."""
        ...


@runtime_checkable
class Embedder(Protocol):
    """Turns crops into vectors."""

    dim: int

    def embed(self, crops: Sequence[np.ndarray]) -> np.ndarray:
        """(n, dim) float32, L2-normalised rows, one per RGB uint8 crop."""
        ...


@runtime_checkable
class Model(Detector, Embedder, Protocol):
    """What the registry makes and index runs use: a detector and an embedder, with metadata and
    declared capabilities. Weights load lazily (on first `detect`/`embed`) or on `load()`."""

    name: str
    """Registry name, e.g. "mobilenetv2"; stored with every vector set."""
    version: str
    """Weights / code version; a change means stored vectors are not comparable."""
    item_kind: str
    """What one item is for this model: "image" (whole image), "face" or "body"."""
    decode_max_side: int | None
    """Images may be decoded reduced so that their shorter side is at least this (None: full size)."""
    parallel: Parallel
    """How index runs spread files: "threads" (the model releases the GIL) or "processes" (it holds
    the GIL, like dlib: worker processes decode, detect and embed)."""
    two_phase: bool
    """True: `preprocess` runs in the indexing thread and `embed_preprocessed` in the model thread."""
    collection_whitening: bool
    """True: the library fits PCA whitening on this model's stored vectors after each index run."""
    match_distance: float | None
    """Largest distance (unit vectors) at which a new item or a query may join an existing person;
    None: only the clustering's own radius rule applies (peoplemap.cluster.assign)."""
    compatible_versions: tuple[str, ...]
    """Former names of `version` that gave the same vectors (ModelBase: none)."""
    min_group_score: float | None
    """A group of items whose median detection score is below this is not a person (false
    detections resemble each other); None: no such rule."""
    merge_distance: float | None
    """The default clustering joins two groups whose members are on average (root mean square over
    all pairs) closer than this (peoplemap.cluster.merge_groups); None: no joining."""
    distance_scale: float
    """This model's distances in units of dlib's face descriptor's (unit vectors), in which the
    clustering profiles' and the review's distances are written (HDBSCAN's epsilon, chinese
    whispers' threshold, the review's grouping distances): they are multiplied by it. 1.0 for
    dlib's descriptor, and for models measured in the same units."""

    def describe(self) -> dict[str, Any]:
        """Name, version, preprocessing and parameters: recorded with each stored vector set."""
        ...

    def load(self) -> None:
        """Load weights now, so that a missing or broken model fails before a run writes anything."""
        ...

    def preprocess(self, crops: Sequence[np.ndarray]) -> Any:
        """Two-phase models: crops -> the model's input batch."""
        ...

    def embed_preprocessed(self, batch: Any) -> np.ndarray:
        """Two-phase models: embed() of a batch made by preprocess()."""
        ...


class ModelBase:
    """The declared capabilities' defaults: a whole-image, thread-parallel, one-phase model with
    nothing to load up front. Models override what differs (and define name, version, dim,
    describe and embed)."""

    item_kind: str = "image"
    decode_max_side: int | None = None
    parallel: Parallel = "threads"
    two_phase: bool = False
    collection_whitening: bool = False
    match_distance: float | None = None
    compatible_versions: tuple[str, ...] = ()
    """Versions that gave the same vectors under another name (a library made by one of them is
    used as it is, and its set takes the current version)."""
    min_group_score: float | None = None
    merge_distance: float | None = None
    distance_scale: float = 1.0

    def load(self) -> None:
        """Nothing to load up front."""

    def detect(self, image: np.ndarray) -> list[Region]:
        """The whole image."""
        return list(WHOLE_IMAGE)

    def preprocess(self, crops: Sequence[np.ndarray]) -> Any:
        raise ModelError(f"model {getattr(self, 'name', type(self).__name__)} is not two-phase")

    def embed_preprocessed(self, batch: Any) -> np.ndarray:
        raise ModelError(f"model {getattr(self, 'name', type(self).__name__)} is not two-phase")


def check_model(model: Any) -> Model:
    """The model itself, or ModelError naming the capability it does not declare properly."""
    what = type(model).__name__
    for attr in ("detect", "embed", "describe", "load"):
        if not callable(getattr(model, attr, None)):
            raise ModelError(f"model class {what} has no {attr}() method; models derive from "
                             "peoplemap.embed.base.ModelBase")
    parallel = getattr(model, "parallel", None)
    if parallel not in PARALLEL:
        raise ModelError(f"model class {what} declares parallel={parallel!r}; must be one of "
                         f"{list(PARALLEL)}")
    for flag in ("two_phase", "collection_whitening"):
        if not isinstance(getattr(model, flag, None), bool):
            raise ModelError(f"model class {what} must declare {flag} as True or False")
    for number in ("match_distance", "min_group_score", "merge_distance"):
        v = getattr(model, number, "missing")
        if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float))):
            raise ModelError(f"model class {what} must declare {number} as a number or None")
    scale = getattr(model, "distance_scale", None)
    if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not 0 < scale < 100:
        raise ModelError(f"model class {what} must declare distance_scale as a positive number")
    versions = getattr(model, "compatible_versions", None)
    if not isinstance(versions, tuple) or not all(isinstance(v, str) for v in versions):
        raise ModelError(f"model class {what} must declare compatible_versions as a tuple of strings")
    return model


def l2_normalize(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (zero rows stay zero); float32, C-contiguous."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    np.maximum(norms, 1e-12, out=norms)
    return np.ascontiguousarray(x / norms, dtype=np.float32)


def check_crop(i: int, c: object) -> None:
    """InputError unless crop i is a non-empty RGB uint8 array (h, w, 3)."""
    from ..errors import InputError

    if not isinstance(c, np.ndarray) or c.dtype != np.uint8 or c.ndim != 3 or c.shape[2] != 3:
        desc = f"{c.dtype} {c.shape}" if isinstance(c, np.ndarray) else type(c).__name__
        raise InputError(f"crop {i} must be an RGB uint8 array of shape (h, w, 3), got {desc}")
    if c.shape[0] == 0 or c.shape[1] == 0:
        raise InputError(f"crop {i} is empty: shape {c.shape}")


def crop(image: np.ndarray, region: Region) -> np.ndarray:
    """The pixels a region stands for: its own crop, the box clipped to the image, or the whole image."""
    if region.crop is not None:
        return region.crop
    if region.box is None:
        return image
    x, y, w, h = region.box
    H, W = image.shape[:2]
    x0, y0 = max(0, int(x)), max(0, int(y))
    x1, y1 = min(W, int(x + w)), min(H, int(y + h))
    if x1 <= x0 or y1 <= y0:
        return image
    return image[y0:y1, x0:x1]


WHOLE_IMAGE = [Region(box=None, score=1.0)]
