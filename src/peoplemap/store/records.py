"""Plain records that stage modules hand to the storage layer (and get back from it)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import numpy as np

from ..types import Box


@dataclass
class FoundItem:
    """One thing found in an image and its vector: box in the EXIF-oriented original's pixels
    (None for the whole image), detector score, L2-normalised float32 vector."""

    box: Optional[Box]
    score: float
    vector: np.ndarray


@dataclass
class ImageRecord:
    """One processed file for one vector set: its image row and the items found in it.

    image_id is the catalog row already holding this path (a changed file), or None for a new
    path. reuse_from: the id of an image with identical content whose items and vectors are copied
    instead of `items` (copies and moves are not embedded again)."""

    path: str
    size: int
    mtime: float
    image_id: Optional[int]
    sha256: str
    width: int
    height: int
    format: str
    items: list[FoundItem] = field(default_factory=list)
    reuse_from: Optional[int] = None


@dataclass
class SkipRecord:
    """A file that could not be used, with the reason; image_id as in ImageRecord."""

    path: str
    size: Optional[int]
    mtime: Optional[float]
    image_id: Optional[int]
    reason: str


@dataclass
class BatchCounts:
    """What one written batch added."""

    images: int = 0
    items: int = 0
    reused: int = 0
    without_items: int = 0
