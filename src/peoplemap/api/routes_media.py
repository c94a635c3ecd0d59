"""Search by photo, items, thumbnails and photos with their boxes drawn."""
from __future__ import annotations

from typing import Annotated, Optional

from fastapi import APIRouter, Path, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, Response

from ..errors import ImageError
from ..people import persons_of
from ..responses import jsonable
from ..types import NOISE
from .deps import Config, Lib, ModelParam, item_or_404
from .errors import ApiError
from .media import (MAX_PHOTO_SIZE, MAX_THUMB_SIZE, PHOTO_SIZE, THUMB_SIZE, check_upload,
                    image_from_multipart, photo, thumbnail)
from .schemas import ItemInfo, QueryResultOut, errors

router = APIRouter()

ItemIdPath = Annotated[int, Path(ge=0, le=2 ** 62)]
JPEG = {"content": {"image/jpeg": {}}, "description": "A JPEG image."}


async def upload_bytes(request: Request) -> bytes:
    """The photo of a search request: the multipart file field "image", or the raw body. The
    Guard has already bounded the body's size; nothing is written to disk."""
    body = await request.body()
    ctype = request.headers.get("content-type", "")
    if ctype.lower().startswith("multipart/form-data"):
        return await run_in_threadpool(image_from_multipart, body, ctype)
    return body


@router.post("/search", tags=["search"], responses={
    200: {"model": list[QueryResultOut]}, **errors(400, 409, 413, 415, 422)},
    openapi_extra={"requestBody": {"required": True, "content": {
        "multipart/form-data": {"schema": {"type": "object", "required": ["image"], "properties": {
            "image": {"type": "string", "format": "binary"}}}},
        "application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}}})
async def search(request: Request, lib: Lib, config: Config,
                 k: Annotated[int, Query(ge=1, le=1000, description="Hits per face.")] = 10,
                 model: ModelParam = None) -> JSONResponse:
    """Who is in this photo? Every face (or the whole image, for whole-image models) found in
    the uploaded photo, each with its k nearest items and the person it is assigned to: the JSON
    of `peoplemap search --json`. The photo is only compared, never stored."""
    data = await upload_bytes(request)

    def work() -> list:
        check_upload(data, lib.settings, config.max_upload_bytes)
        with request.app.state.search_slots:  # bounds the decoded photos held at once
            return [r.to_json() for r in lib.search(data, k=k, model=model)]

    return JSONResponse(await run_in_threadpool(work))


@router.get("/items/{item_id}", tags=["items"], responses={200: {"model": ItemInfo},
                                                           **errors(404, 409)})
def get_item(item_id: ItemIdPath, lib: Lib, model: ModelParam = None) -> JSONResponse:
    """One item: its photo (path, image id), box, cluster and person."""
    it = item_or_404(lib, item_id, model)
    label = lib.labels(model, ids=[it.id]).get(it.id)
    who = persons_of(lib, [it.id]).get(it.id)
    return JSONResponse(jsonable(ItemInfo(
        id=it.id, image_id=it.image_id, path=it.path, box=None if it.box is None else list(it.box),
        kind=it.kind, score=it.score, cluster=None if label is None or label == NOISE else label,
        person_id=who[0] if who else None, person=who[1] if who else None)))


@router.get("/items/{item_id}/thumbnail", tags=["items"], response_class=Response,
            responses={200: JPEG, **errors(404, 409)})
def item_thumbnail(item_id: ItemIdPath, lib: Lib, model: ModelParam = None,
                   size: Annotated[int, Query(ge=16, le=MAX_THUMB_SIZE)] = THUMB_SIZE) -> Response:
    """A square JPEG of the item's face (its box cut from the original photo)."""
    it = item_or_404(lib, item_id, model)
    try:
        data = thumbnail(it, size, lib.settings)
    except (ImageError, OSError) as e:
        raise ApiError(404, f"the photo of item {item_id} cannot be read any more: "
                            f"{getattr(e, 'reason', None) or e}") from None
    return Response(data, media_type="image/jpeg")


def _photo(lib, image_id: int, model: Optional[str], size: int,
           highlight: Optional[int] = None) -> Response:
    found = lib.store.items.of_image(image_id, lib.vector_set(model).item_kind)
    if not found:
        raise ApiError(404, f"no photo {image_id} with items in this library")
    items = lib.items(model, ids=[it.id for it in found])  # this vector set's only
    people = persons_of(lib, [it.id for it in items])
    labels = {i: (name or f"Person {pid}") for i, (pid, name) in people.items()}
    try:
        data = photo(found[0].path, items, labels, size, lib.settings, highlight)
    except (ImageError, OSError) as e:
        raise ApiError(404, f"photo {image_id} cannot be read any more: "
                            f"{getattr(e, 'reason', None) or e}") from None
    return Response(data, media_type="image/jpeg")


@router.get("/items/{item_id}/photo", tags=["items"], response_class=Response,
            responses={200: JPEG, **errors(404, 409)})
def item_photo(item_id: ItemIdPath, lib: Lib, model: ModelParam = None,
               size: Annotated[int, Query(ge=64, le=MAX_PHOTO_SIZE)] = PHOTO_SIZE) -> Response:
    """The whole photo the item was found in, every item's box drawn and labelled with its
    person; this item's box highlighted."""
    it = item_or_404(lib, item_id, model)
    return _photo(lib, it.image_id, model, size, highlight=it.id)


@router.get("/photos/{image_id}", tags=["items"], response_class=Response,
            responses={200: JPEG, **errors(404, 409)})
def get_photo(image_id: ItemIdPath, lib: Lib, model: ModelParam = None,
              size: Annotated[int, Query(ge=64, le=MAX_PHOTO_SIZE)] = PHOTO_SIZE) -> Response:
    """A photo of the library (by image id, as items give it) with its items' boxes drawn."""
    return _photo(lib, image_id, model, size)
