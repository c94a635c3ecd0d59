"""What routes share: the server's Library, configuration and jobs, and the lookups that turn a
missing person or item into 404."""
from __future__ import annotations

from typing import Annotated, Optional

from fastapi import Depends, Query, Request

from ..library import Library
from ..responses import Person
from ..types import Item
from .config import ServerConfig
from .errors import ApiError
from .jobs import JobManager

ModelParam = Annotated[Optional[str], Query(
    max_length=200, description="Vector set (model name); default: the latest indexed.")]


def get_lib(request: Request) -> Library:
    return request.app.state.lib


def get_config(request: Request) -> ServerConfig:
    return request.app.state.config


def get_jobs(request: Request) -> JobManager:
    return request.app.state.jobs


Lib = Annotated[Library, Depends(get_lib)]
Config = Annotated[ServerConfig, Depends(get_config)]
Jobs = Annotated[JobManager, Depends(get_jobs)]


def person_or_404(lib: Library, ref: str | int, model: Optional[str]) -> Person:
    """A person by id or exact name (the Library's rule); ApiError 404 when there is none."""
    text = str(ref).strip()
    people = lib.people(model, include_hidden=True)
    found = (text.isdigit() and any(p.id == int(text) for p in people)) or any(
        p.name and p.name.casefold() == text.casefold() for p in people)
    if not found:
        raise ApiError(404, f"no person {text!r} in this library; GET /people lists them")
    return lib.person(text, model)


def item_or_404(lib: Library, item_id: int, model: Optional[str]) -> Item:
    items = lib.items(model, ids=[item_id])
    if not items:
        raise ApiError(404, f"no item {item_id} in the {lib.vector_set(model).model} vector set")
    return items[0]
