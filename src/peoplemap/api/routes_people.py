"""/people: list, get, rename, hide, merge, split, confirm, reject, mark different, cover,
forget; and the review's questions (merge suggestions, groups of unsorted faces) and answers (a
new person from faces, "not a face").

Each route is one Library call; a person is named by id or exact name, as in the CLI. Answers are
Person.to_json(), the JSON `peoplemap people list --json` prints, and the review's
MergeSuggestion / ReviewGroup.to_json() (`peoplemap review ... --json`).
"""
from __future__ import annotations

from typing import Annotated, Optional

from fastapi import APIRouter, Path, Query
from fastapi.responses import JSONResponse

from ..responses import Person, jsonable
from ..review import MergeSuggestion, ReviewGroup
from .deps import Lib, ModelParam, person_or_404
from .errors import ApiError
from .media import forget_cached
from .schemas import (CoverRequest, DifferentRequest, Different, Forgotten, ItemsRequest,
                      MergeRequest, NewPersonRequest, NotAFace, PersonUpdate, SplitRequest, errors)

router = APIRouter(prefix="/people", tags=["people"])
review_router = APIRouter(tags=["review"])

Ref = Annotated[str, Path(max_length=200, description="A person's id, or exact name.")]


def answer(value: object, status: int = 200) -> JSONResponse:
    return JSONResponse(jsonable(value), status_code=status)


@router.get("", responses={200: {"model": list[Person]}, **errors(409, 422)})
def list_people(lib: Lib, model: ModelParam = None,
                include_hidden: Annotated[bool, Query(description="Include hidden people.")] = False
                ) -> JSONResponse:
    """People of the library, largest first (as `peoplemap people list --json`)."""
    return answer(lib.people(model, include_hidden=include_hidden))


@router.post("", status_code=201, responses={201: {"model": Person}, **errors(409, 415, 422)})
def new_person(body: NewPersonRequest, lib: Lib, model: ModelParam = None) -> JSONResponse:
    """Make a person of these items (a review group no existing person fits), confirmed."""
    return answer(lib.new_person(body.item_ids, body.name, model), 201)


@router.get("/suggestions", tags=["review"], responses={200: {"model": list[MergeSuggestion]},
                                                         **errors(404, 409, 422)})
def merge_suggestions(lib: Lib, model: ModelParam = None,
                      person: Annotated[Optional[str], Query(
                          max_length=200, description="Only pairs with this person.")] = None,
                      limit: Annotated[int, Query(ge=1, le=1000)] = 20) -> JSONResponse:
    """People likely to be one person, best first (answer with merge or different)."""
    pid = None if person is None else person_or_404(lib, person, model).id
    return answer(lib.merge_suggestions(model, person=pid, limit=limit))


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
        p = lib.name_person(p.id, body.name, model, on_duplicate=body.on_duplicate)
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


@router.put("/{ref}/cover", responses={200: {"model": Person}, **errors(404, 409, 415, 422)})
def set_cover(ref: Ref, body: CoverRequest, lib: Lib, model: ModelParam = None) -> JSONResponse:
    """Show the person by one of its items (`item_id`; null: peoplemap picks the best face)."""
    p = person_or_404(lib, ref, model)
    return answer(lib.set_cover(p.id, body.item_id, model))


@router.delete("/{ref}", responses={200: {"model": Forgotten}, **errors(404, 409)})
def forget(ref: Ref, lib: Lib, model: ModelParam = None) -> JSONResponse:
    """Forget a person: their items, vectors, thumbnails and derived indexes are deleted for good
    (as `peoplemap people forget`); the original photos are untouched. 409 while a job writes."""
    p = person_or_404(lib, ref, model)
    n = lib.forget_person(p.id, model)
    forget_cached()
    return answer(Forgotten(p.id, p.label, n))


@review_router.get("/review/groups", responses={200: {"model": list[ReviewGroup]},
                                                **errors(409)})
def review_groups(lib: Lib, model: ModelParam = None,
                  limit: Annotated[int, Query(ge=1, le=1000)] = 50) -> JSONResponse:
    """Unsorted and uncertain faces in groups of similar faces, each with a candidate person
    ("Are these <name>?": answer with confirm, reject, or a new person)."""
    return answer(lib.review_groups(model, limit=limit))


@review_router.post("/items/not-a-face", responses={200: {"model": NotAFace},
                                                    **errors(409, 415, 422)})
def not_a_face(body: ItemsRequest, lib: Lib, model: ModelParam = None) -> JSONResponse:
    """False detections: the items and their vectors are removed, and the same boxes are never
    taken as faces again."""
    n = lib.not_a_face(body.item_ids, model)
    forget_cached()
    return answer(NotAFace(n))
