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
    name: Optional[str] = None
    """The name a face region in the photo's metadata gives this face (peoplemap.metadata)."""


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
    meta: Optional["PhotoMeta"] = None
    """Date, orientation and place read from the file's metadata (None: not read)."""


@dataclass
class PhotoMeta:
    """What a photo's metadata says about when, where and how it was taken (peoplemap.metadata).

    taken: the local date and time the camera wrote ("YYYY-MM-DD HH:MM:SS"); utc_offset its offset
    ("+02:00") when recorded; orientation the EXIF orientation 1-8; latitude / longitude in decimal
    degrees (south and west negative), altitude in metres. sidecar_problems: (sidecar path, reason)
    for sidecars that were refused; sidecars: every sidecar path looked at (their old problems are
    cleared when the photo is processed again)."""

    taken: Optional[str] = None
    utc_offset: Optional[str] = None
    orientation: Optional[int] = None
    latitude: Optional[float] = None
    longitude: Optional[float] = None
    altitude: Optional[float] = None
    sidecar_mtime: Optional[float] = None
    """The newest modification time of the sidecars whose regions were read (None: none read)."""
    sidecars: list[str] = field(default_factory=list)
    sidecar_problems: list[tuple[str, str]] = field(default_factory=list)


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
