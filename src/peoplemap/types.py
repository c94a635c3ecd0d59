"""The few central types that cross stage boundaries.

Invariant: an item id is the `items.id` row of the Library's SQLite catalog and means the same thing
everywhere: in stored vectors, FAISS index ids, cluster labels and search hits.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Optional

import numpy as np

NOISE = -1
"""Cluster label of items that belong to no cluster (shown to users as "unsorted")."""

Box = tuple[int, int, int, int]
"""(x, y, w, h) in pixels of the EXIF-oriented original image."""

ProgressCallback = Callable[[str, int, Optional[int]], None]
"""progress(stage, done, total): called by long-running library functions; total may be None."""


def no_progress(stage: str, done: int, total: int | None) -> None:
    """Default progress callback: does nothing."""


@dataclass(frozen=True)
class Region:
    """Something to embed inside one image: the whole image (box None) or a detected face/body."""

    box: Optional[Box]
    score: float = 1.0
    crop: Optional[np.ndarray] = field(default=None, repr=False, compare=False)
    """RGB uint8 pixels to embed (aligned face chip, body crop); None means 'crop box from the image'."""


@dataclass(frozen=True)
class Item:
    id: int
    image_id: int
    path: str
    box: Optional[Box]
    kind: str  # "image" | "face" | "body"
    score: float = 1.0


@dataclass(frozen=True)
class Hit:
    item_id: int
    path: str
    box: Optional[Box]
    distance: float
    """Euclidean distance between L2-normalised vectors (0 = identical, 2 = opposite)."""
    similarity: float
    """Cosine similarity, 1 - distance**2 / 2."""
    cluster: Optional[int]
    """Cluster id of the hit, None when the library is not clustered or the item is unsorted."""
    person: Optional[str] = None
    """Name of the hit's person, when named."""
    person_id: Optional[int] = None
    taken: Optional[str] = None
    """When the hit's photo was taken ("YYYY-MM-DD HH:MM:SS", the camera's local time), if known."""


@dataclass(frozen=True)
class Assignment:
    """Where a new point lands among existing clusters."""

    cluster: Optional[int]
    confidence: float
    """0..1: how sure the assignment is; 0 when cluster is None."""


@dataclass(frozen=True)
class QueryResult:
    query: str
    region: Optional[Region]
    cluster: Optional[int]
    confidence: float
    hits: list[Hit]
    person: Optional[str] = None
    person_id: Optional[int] = None

    def to_json(self) -> dict:
        return {
            "query": self.query,
            "box": list(self.region.box) if self.region and self.region.box else None,
            "cluster": self.cluster,
            "confidence": round(float(self.confidence), 4),
            "person": self.person,
            "person_id": self.person_id,
            "hits": [
                {
                    "path": h.path,
                    "item_id": h.item_id,
                    "box": list(h.box) if h.box else None,
                    "distance": round(float(h.distance), 6),
                    "similarity": round(float(h.similarity), 6),
                    "cluster": h.cluster,
                    "person": h.person,
                    "person_id": h.person_id,
                    "taken": h.taken,
                }
                for h in self.hits
            ],
        }
