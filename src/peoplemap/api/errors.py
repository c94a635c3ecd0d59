"""Every failure answers with one JSON form, {"status", "error", "message"}, and a status that
says whose fault it was; no traceback ever reaches a client (the server log has it).

    400 malformed request (not JSON, a broken multipart body, an empty upload)
    401 token missing, wrong, or in the URL            403 outside the roots, cross-site
    404 no such person, item, photo, job or route      409 the library is busy, or not indexed yet
    413 body, upload or image pixels over the limits   415 not an image; not JSON
    422 a value the library refuses (bad types, unknown items, a corrupt image)
"""
from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from starlette.exceptions import HTTPException

from ..errors import LibraryBusyError, LibraryError, NameTakenError, PeoplemapError
from .guard import error_body
from .jobs import JobConflict, JobNotFound
from .media import UploadRejected
from .roots import OutsideRoots

log = logging.getLogger(__name__)


class ApiError(Exception):
    """An answer other than success, raised by a route: `status` and a message for the client."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


def status_of(e: PeoplemapError) -> int:
    """The HTTP status of a library error: 409 for the library's state (busy, no vectors yet, no
    vectors of that model), 422 for a value it refuses (InputError, ImageError, ModelError)."""
    return 409 if isinstance(e, (LibraryBusyError, LibraryError, NameTakenError)) else 422


def json_error(status: int, message: str, **extra: object) -> Response:
    headers = {"WWW-Authenticate": 'Bearer realm="peoplemap"'} if status == 401 else None
    return Response(error_body(status, message, **extra), status_code=status,
                    media_type="application/json", headers=headers)


def install(app: FastAPI) -> None:
    """Register the handlers that turn exceptions into JSON errors."""

    @app.exception_handler(ApiError)
    async def api_error(_r: Request, e: ApiError) -> Response:
        return json_error(e.status, str(e))

    @app.exception_handler(PeoplemapError)
    async def library_error(_r: Request, e: PeoplemapError) -> Response:
        if isinstance(e, NameTakenError):  # the client asks its user: same person, or keep apart?
            return json_error(409, str(e), others=[getattr(o, "id", o) for o in e.others])
        return json_error(status_of(e), str(e))

    @app.exception_handler(UploadRejected)
    async def upload_rejected(_r: Request, e: UploadRejected) -> Response:
        return json_error(e.status, str(e))

    @app.exception_handler(OutsideRoots)
    async def outside_roots(_r: Request, e: OutsideRoots) -> Response:
        return json_error(e.status, str(e))

    @app.exception_handler(JobConflict)
    async def job_conflict(_r: Request, e: JobConflict) -> Response:
        return json_error(409, str(e))

    @app.exception_handler(JobNotFound)
    async def job_not_found(_r: Request, e: JobNotFound) -> Response:
        return json_error(404, str(e))

    @app.exception_handler(HTTPException)
    async def http_error(_r: Request, e: HTTPException) -> Response:
        message = e.detail if isinstance(e.detail, str) else "request refused"
        if e.status_code == 404 and message == "Not Found":
            message = "no such route; GET /openapi.json or /docs lists them"
        elif e.status_code == 405:
            message = "this route does not take that method; /docs lists what it takes"
        return json_error(e.status_code, message)

    @app.exception_handler(RequestValidationError)
    async def invalid(_r: Request, e: RequestValidationError) -> Response:
        details = [{"where": ".".join(str(p) for p in err.get("loc", ())),
                    "message": str(err.get("msg", ""))} for err in e.errors()[:20]]
        malformed = any(err.get("type") == "json_invalid" for err in e.errors())
        status = 400 if malformed else 422
        first = details[0] if details else {"where": "", "message": "invalid request"}
        summary = ("the body is not valid JSON" if malformed else
                   f"{first['where']}: {first['message']}" if first["where"] else first["message"])
        return json_error(status, summary, details=details)

    @app.exception_handler(Exception)
    async def unexpected(r: Request, e: Exception) -> Response:
        log.exception("unexpected error answering %s %s", r.method, r.url.path)
        return json_error(500, f"internal error ({type(e).__name__}); the server log has the "
                               "details")
