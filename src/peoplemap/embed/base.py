"""The Embedder protocol every model implements, and small helpers shared by models."""
from __future__ import annotations

from typing import Any, Protocol, Sequence, runtime_checkable

import numpy as np

from ..types import Region


@runtime_checkable
class Embedder(Protocol):
    """A model that finds what to embed in an image and turns it into vectors.

    Models load their weights lazily (on first `regions`/`embed` call), so creating one is cheap.
    A model may also offer `load()`, called before an index run writes anything, so that a missing
    or broken model fails early.
    """

    name: str
    """Registry name, e.g. "mobilenetv2"; stored with every vector set."""
    version: str
    """Weights / code version; a change means stored vectors are not comparable."""
    dim: int
    item_kind: str
    """What one item is for this model: "image" (whole image), "face" or "body"."""
    decode_max_side: int | None
    """Images may be decoded reduced so that their shorter side is at least this (None: full size)."""

    def describe(self) -> dict[str, Any]:
        """Name, version, preprocessing and parameters: recorded with each stored vector set."""
        ...

    def regions(self, image: np.ndarray) -> list[Region]:
        """What to embed in this RGB uint8 image: [Region(None)] for whole-image models."""
        ...

    def embed(self, crops: Sequence[np.ndarray]) -> np.ndarray:
        """(n, dim) float32, L2-normalised rows, one per RGB uint8 crop."""
        ...


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
