"""Request bodies (strict: wrong types and unknown fields are 422, nothing is coerced) and the
shapes the OpenAPI document shows for answers.

Answers are the response types' `to_json()` (peoplemap.responses; QueryResult.to_json for
search), the same JSON the CLI prints with `--json`. The models below only describe them for the
docs; tests/test_api.py checks every answer against its documented shape.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, StrictStr

from ..responses import Response

MAX_IDS = 100_000
ItemId = Annotated[StrictInt, Field(ge=0, le=2 ** 62)]
PersonRef = Union[Annotated[StrictInt, Field(ge=0, le=2 ** 62)],
                  Annotated[StrictStr, Field(min_length=1, max_length=200)]]
"""A person by id, or by exact name."""
ModelName = Annotated[StrictStr, Field(min_length=1, max_length=200)]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


# -- requests ------------------------------------------------------------------------------------
class PersonUpdate(Strict):
    """Rename and/or hide a person; at least one field."""

    name: Optional[Annotated[StrictStr, Field(min_length=1, max_length=200)]] = None
    hidden: Optional[StrictBool] = None
    on_duplicate: Literal["error", "merge", "keep_apart"] = "error"
    """When another person has the name: 409 (error), merge with them, or keep them apart ("NAME (2)")."""


class MergeRequest(Strict):
    others: Annotated[list[PersonRef], Field(min_length=1, max_length=1000)]
    """People to merge into this one."""


class SplitRequest(Strict):
    item_ids: Annotated[list[ItemId], Field(min_length=1, max_length=MAX_IDS)]
    name: Optional[Annotated[StrictStr, Field(min_length=1, max_length=200)]] = None


class ItemsRequest(Strict):
    item_ids: Annotated[list[ItemId], Field(min_length=1, max_length=MAX_IDS)]


class NewPersonRequest(Strict):
    item_ids: Annotated[list[ItemId], Field(min_length=1, max_length=MAX_IDS)]
    name: Optional[Annotated[StrictStr, Field(min_length=1, max_length=200)]] = None


class CoverRequest(Strict):
    item_id: Optional[ItemId]
    """One of the person's items, or null to let peoplemap pick."""


class DifferentRequest(Strict):
    other: PersonRef
    """The person this one is not."""


class IndexJobRequest(Strict):
    folder: Annotated[StrictStr, Field(min_length=1, max_length=4096)]
    """A folder under one of the server's roots: absolute, or relative to the first root."""
    model: Optional[ModelName] = None
    rebuild: StrictBool = False


class ClusterJobRequest(Strict):
    model: Optional[ModelName] = None
    profile: Literal["default", "seed"] = "default"
    min_cluster_size: Optional[Annotated[StrictInt, Field(ge=2, le=10 ** 7)]] = None


# -- answers (for the docs) ----------------------------------------------------------------------
class ErrorOut(BaseModel):
    status: int
    error: str
    message: str


class HitOut(BaseModel):
    path: str
    item_id: int
    box: Optional[list[int]]
    distance: float
    similarity: float
    cluster: Optional[int]
    person: Optional[str]
    person_id: Optional[int]


class QueryResultOut(BaseModel):
    """One face (or image) found in the query photo and its nearest items: QueryResult.to_json()."""

    query: str
    box: Optional[list[int]]
    cluster: Optional[int]
    confidence: float
    person: Optional[str]
    person_id: Optional[int]
    hits: list[HitOut]


@dataclass(frozen=True)
class ItemInfo(Response):
    """One item (a face, a body, or a whole image) with who it belongs to."""

    id: int
    image_id: int
    path: str
    box: Optional[list[int]]
    kind: str
    score: float
    cluster: Optional[int]
    person_id: Optional[int]
    person: Optional[str]


@dataclass(frozen=True)
class Forgotten(Response):
    person_id: int
    label: str
    items_removed: int


@dataclass(frozen=True)
class NotAFace(Response):
    removed: int


@dataclass(frozen=True)
class Different(Response):
    person_id: int
    other_id: int


ERRORS = {code: {"model": ErrorOut} for code in (400, 401, 403, 404, 409, 413, 415, 422)}
"""Documented error answers (each route lists the ones it can give)."""


def errors(*codes: int) -> dict:
    return {c: ERRORS[c] for c in codes}
