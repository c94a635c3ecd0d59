"""What the Library answers, as typed objects with one JSON form.

The CLI (`--json`), the app and any other front end serialise these same objects with `to_json()`,
so a person, a cluster, a vector set, a run or the library's info looks the same wherever it is
printed. `to_json` is written once (`jsonable`): dataclasses become objects, tuples and lists
arrays, paths strings, numpy scalars plain numbers; floats are rounded to 6 decimals.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import PurePath
from typing import Any, Optional

import numpy as np


def jsonable(value: Any) -> Any:
    """`value` as plain JSON data (dict / list / str / int / float / bool / None)."""
    if hasattr(value, "to_json") and not isinstance(value, type):
        return value.to_json()
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)
                if f.repr}
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [jsonable(v) for v in value]
    if isinstance(value, PurePath):
        return str(value)
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float):
        return round(value, 6) if math.isfinite(value) else None
    if isinstance(value, np.ndarray):
        return jsonable(value.tolist())
    return value


class Response:
    """Base of every response type: one JSON form for all of them."""

    def to_json(self) -> dict:
        return {f.name: jsonable(getattr(self, f.name))
                for f in dataclasses.fields(self) if f.repr}  # type: ignore[arg-type]


@dataclass(frozen=True)
class VectorSetInfo(Response):
    """One model's vectors in a library."""

    id: int
    model: str
    version: str
    dim: int
    item_kind: str
    description: dict
    n_items: int
    n_images: int
    generation: int
    """Bumped on every change to the set's vectors: derived files compare it to know they are stale."""


@dataclass(frozen=True)
class ClusterInfo(Response):
    id: int
    size: int
    item_ids: list[int]


@dataclass(frozen=True)
class ClusterSummary(Response):
    model: str
    profile: str
    params: dict
    n_items: int
    n_clusters: int
    n_noise: int
    seconds: float


@dataclass(frozen=True)
class Clustering(Response):
    """The current clustering of one vector set."""

    id: int
    set_id: int
    profile: str
    params: dict
    stale: bool
    """True when vectors were added or removed after this clustering ran."""
    created_at: float


@dataclass(frozen=True)
class Person(Response):
    id: int
    name: Optional[str]
    hidden: bool
    size: int
    item_ids: list[int]
    cover_item_id: Optional[int] = None
    """The face the user chose to show the person by (None: the app picks the best face)."""

    @property
    def label(self) -> str:
        """What to show: the name, or "Person N" (N is the person's stable number)."""
        return self.name or f"Person {self.id}"


@dataclass(frozen=True)
class AssignSummary(Response):
    """What placing new items did: items placed with existing clusters/people, or left unsorted."""

    model: str
    new_items: int = 0
    assigned: int = 0
    unsorted: int = 0
    seconds: float = 0.0


@dataclass(frozen=True)
class RunInfo(Response):
    """One index / cluster / forget run recorded in the library."""

    id: int
    kind: str
    status: str
    params: dict
    summary: Optional[dict]
    started_at: float
    finished_at: Optional[float]


@dataclass(frozen=True)
class SkippedFile(Response):
    path: str
    reason: str


@dataclass(frozen=True)
class ClusteringInfo(Response):
    profile: str
    params: dict
    stale: bool
    clusters: int
    unsorted: int


@dataclass(frozen=True)
class ModelInfo(Response):
    """A vector set as `info` shows it."""

    model: str
    version: str
    dim: int
    item_kind: str
    items: int
    images: int
    images_without_items: list[str]
    clustering: Optional[ClusteringInfo]


@dataclass(frozen=True)
class LibraryInfo(Response):
    """Counts, models, skipped files and the last runs of a library."""

    library: str
    images: int
    items: int
    skipped: list[SkippedFile] = field(default_factory=list)
    models: list[ModelInfo] = field(default_factory=list)
    last_runs: list[RunInfo] = field(default_factory=list)
