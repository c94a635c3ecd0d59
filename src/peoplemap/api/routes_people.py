"""/people: list, get, rename, hide, merge, split, confirm, reject, mark different, forget.

Each route is one Library call; a person is named by id or exact name, as in the CLI. Answers are
Person.to_json(), the JSON `peoplemap people list --json` prints.
"""
from __future__ import annotations

from typing import Annotated, Optional

from fastapi import APIRouter, Path, Query
from fastapi.responses import JSONResponse

from ..responses import Person, jsonable
from .deps import Lib, ModelParam, person_or_404
from .errors import ApiError
from .media import forget_cached
from .schemas import (DifferentRequest, Different, Forgotten, ItemsRequest, MergeRequest,
                      PersonUpdate, SplitRequest, errors)

router = APIRouter(prefix="/people", tags=["people"])

Ref = Annotated[str, Path(max_length=200, description="A person's id, or exact name.")]


def answer(value: object, status: int = 200) -> JSONResponse:
    return JSONResponse(jsonable(value), status_code=status)


@router.get("", responses={200: {"model": list[Person]}, **errors(409, 422)})
def list_people(lib: Lib, model: ModelParam = None,
                include_hidden: Annotated[bool, Query(description="Include hidden people.")] = False
                ) -> JSONResponse:
    """People of the library, largest first (as `peoplemap people list --json`)."""
    return answer(lib.people(model, include_hidden=include_hidden))


@router.get("/{ref}", responses={200: {"model": Person}, **errors(404, 409)})
def get_person(ref: Ref, lib: Lib, model: ModelParam = None) -> JSONResponse:
    """One person: id, name, hidden, size, item ids."""
    return answer(person_or_404(lib, ref, model))


@router.patch("/{ref}", responses={200: {"model": Person}, **errors(404, 409, 415, 422)})
def update_person(ref: Ref, body: PersonUpdate, lib: Lib, model: ModelParam = None) -> JSONResponse:
    """Rename (`name`) and/or hide or show (`hidden`) a person."""
    if body.name is None and body.hidden is None:
        raise ApiError(422, "give `name` and/or `hidden`")
    p = person_or_404(lib, ref, model)
    if body.name is not None:
        p = lib.name_person(p.id, body.name, model)
    if body.hidden is not None:
        p = lib.hide_person(p.id, body.hidden, model)
    return answer(p)


@router.post("/{ref}/merge", responses={200: {"model": Person}, **errors(404, 409, 415, 422)})
def merge(ref: Ref, body: MergeRequest, lib: Lib, model: ModelParam = None) -> JSONResponse:
    """Merge `others` into this person (their items become its confirmed members)."""
    target = person_or_404(lib, ref, model)
    others = [person_or_404(lib, o, model).id for o in body.others]
    return answer(lib.merge_people(target.id, others, model))


@router.post("/{ref}/split", status_code=201,
             responses={201: {"model": Person}, **errors(404, 409, 415, 422)})
def split(ref: Ref, body: SplitRequest, lib: Lib, model: ModelParam = None) -> JSONResponse:
    """Move `item_ids` out of this person into a new person (optionally `name`d); answers the
    new person."""
    p = person_or_404(lib, ref, model)
    return answer(lib.split_person(p.id, body.item_ids, model, body.name), 201)


@router.post("/{ref}/confirm", responses={200: {"model": Person}, **errors(404, 409, 415, 422)})
def confirm(ref: Ref, body: ItemsRequest, lib: Lib, model: ModelParam = None) -> JSONResponse:
    """These items are this person, for good: no clustering moves them."""
    p = person_or_404(lib, ref, model)
    return answer(lib.confirm_items(p.id, body.item_ids, model))


@router.post("/{ref}/reject", responses={200: {"model": Optional[Person]},
                                         **errors(404, 409, 415, 422)})
def reject(ref: Ref, body: ItemsRequest, lib: Lib, model: ModelParam = None) -> JSONResponse:
    """"Not this person": the items leave it and never come back. Answers the person, or null
    when nothing is left of it."""
    p = person_or_404(lib, ref, model)
    return answer(lib.reject_items(p.id, body.item_ids, model))


@router.post("/{ref}/different", responses={200: {"model": Different},
                                            **errors(404, 409, 415, 422)})
def different(ref: Ref, body: DifferentRequest, lib: Lib, model: ModelParam = None) -> JSONResponse:
    """This person and `other` are different people: never suggested or merged together."""
    a = person_or_404(lib, ref, model)
    b = person_or_404(lib, body.other, model)
    lib.mark_different(a.id, b.id, model)
    return answer(Different(a.id, b.id))


@router.delete("/{ref}", responses={200: {"model": Forgotten}, **errors(404, 409)})
def forget(ref: Ref, lib: Lib, model: ModelParam = None) -> JSONResponse:
    """Forget a person: their items, vectors, thumbnails and derived indexes are deleted for good
    (as `peoplemap people forget`); the original photos are untouched. 409 while a job writes."""
    p = person_or_404(lib, ref, model)
    n = lib.forget_person(p.id, model)
    forget_cached()
    return answer(Forgotten(p.id, p.label, n))
