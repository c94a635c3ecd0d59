"""The gate every request passes before any route sees it (a plain ASGI middleware).

In order:
0. Headers: at most 16 KB in all (431).
1. Host: without a token (loopback only) the Host header must name this machine, so a web page
   cannot reach the API through DNS rebinding.
2. Token: when the server has one, exactly one `Authorization: Bearer TOKEN` header, compared in
   constant time; a token anywhere in the URL is refused (URLs end up in logs and histories).
   Without it every request, the docs included, gets 401.
3. Cross-site: a request a browser marks as coming from another site (Origin not this host,
   Sec-Fetch-Site: cross-site) is refused, so no web page can post to the API.
4. Body: at most the upload limit (+ multipart framing) for uploads and 1 MB elsewhere, counted
   as it arrives whatever Content-Length says, and 8 full-size uploads' worth held in all (503
   past that); JSON routes take only application/json. A client that disconnects mid-upload just ends its request.
Every answer gets no-store, nosniff and a restrictive Content-Security-Policy.
"""
from __future__ import annotations

import hmac
import json
from typing import Any, Awaitable, Callable, Optional
from urllib.parse import parse_qsl, unquote

from .config import JSON_BODY_LIMIT, MULTIPART_SLACK, ServerConfig, is_loopback

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict]]
Send = Callable[[dict], Awaitable[None]]

UPLOAD_PATHS = frozenset({"/search"})
"""Routes that take a photo as their body (multipart/form-data, or the raw image)."""
UPLOAD_TYPES = ("multipart/form-data", "application/octet-stream", "image/")
BODIES_IN_MEMORY = 8
"""Request bodies are held in memory until answered, at most this many full-size uploads' worth
in all; past that a request gets 503 (retry later) rather than the server running out of memory."""
TOKEN_PARAMS = frozenset({"token", "access_token", "api_key", "apikey", "key", "auth", "bearer",
                          "authorization", "jwt"})
DOCS_PATHS = ("/docs", "/docs-assets/")
API_CSP = b"default-src 'none'; frame-ancestors 'none'"
DOCS_CSP = (b"default-src 'self'; script-src 'self' 'unsafe-inline'; style-src 'self' "
            b"'unsafe-inline'; img-src 'self' data:; frame-ancestors 'none'")
MAX_HEADER_BYTES = 16 * 1024
"""Request headers beyond this are refused (431), however the HTTP parser received them."""
DRAIN_LIMIT = 64 * 1024 * 1024
"""An oversize body is read and dropped up to this much, so the client sees the 413 answer."""

STATUS_NAMES = {400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found",
                405: "method_not_allowed", 409: "conflict", 413: "too_large",
                415: "unsupported_media_type", 422: "invalid", 431: "headers_too_large", 429: "too_many_requests",
                500: "internal_error", 503: "unavailable"}


def error_body(status: int, message: str, **extra: Any) -> bytes:
    """The one JSON form of every error: {"status", "error", "message"} (+ details)."""
    return json.dumps({"status": status, "error": STATUS_NAMES.get(status, "error"),
                       "message": message, **extra}, ensure_ascii=False).encode("utf-8")


class Guard:
    def __init__(self, app: Callable, config: ServerConfig):
        self.app = app
        self.config = config
        self._token = config.token.encode() if config.token else None
        self._buffered = 0  # bytes of request bodies held by all requests (one event loop: no lock)
        self._budget = BODIES_IN_MEMORY * (config.max_upload_bytes + MULTIPART_SLACK)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self.app(scope, receive, send)
            return
        if scope["type"] != "http":  # no websockets here
            if scope["type"] == "websocket":
                await send({"type": "websocket.close", "code": 1008})
            return
        send = _with_security_headers(send, scope.get("path", ""))
        refusal = self._check_request(scope)
        if refusal is not None:
            status, message, extra = refusal
            await _drain(receive, JSON_BODY_LIMIT)
            await _answer(send, status, message, extra)
            return
        held = [0]  # bytes of this request's body counted in self._buffered
        try:
            await self._serve(scope, receive, send, held)
        finally:
            self._buffered -= held[0]

    async def _serve(self, scope: Scope, receive: Receive, send: Send, held: list[int]) -> None:
        body = await self._read_body(scope, receive, send, held)
        if body is None:
            return  # answered already, or the client went away
        sent = False

        async def replay() -> dict:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()  # only a disconnect can come now

        await self.app(scope, replay, send)

    # -- checks before the body ------------------------------------------------------------------
    def _check_request(self, scope: Scope) -> Optional[tuple[int, str, dict]]:
        headers: dict[bytes, list[bytes]] = {}
        size = 0
        for k, v in scope.get("headers", []):
            headers.setdefault(k.lower(), []).append(v)
            size += len(k) + len(v) + 4
        if size > MAX_HEADER_BYTES:
            return 431, f"the request headers are larger than {MAX_HEADER_BYTES} bytes", {}
        host = _one(headers, b"host")
        if self._token is None and not _is_local_host(host):
            return (400, f"Host {host!r} is not this server; a server without a token answers "
                         "only requests addressed to localhost / 127.0.0.1 / [::1]", {})
        if self._token is not None:
            refusal = self._check_token(scope, headers)
            if refusal is not None:
                return refusal
        origin = _one(headers, b"origin")
        if origin is not None and origin != "null" and host is not None:
            o = origin.split("://", 1)[-1].rstrip("/")
            if o.lower() != host.lower():
                return (403, f"cross-origin requests are refused (Origin {origin!r} is not "
                             f"{host!r})", {})
        if origin == "null" or _one(headers, b"sec-fetch-site") == "cross-site":
            return 403, "cross-site requests are refused", {}
        return None

    def _check_token(self, scope: Scope, headers: dict[bytes, list[bytes]]
                     ) -> Optional[tuple[int, str, dict]]:
        assert self._token is not None
        token = self._token.decode()
        query = scope.get("query_string", b"").decode("latin-1")
        pairs = parse_qsl(query, keep_blank_values=True)
        if (any(k.lower() in TOKEN_PARAMS for k, _v in pairs) or token in unquote(query)
                or token in scope.get("path", "")):
            return (401, "a token in the URL is refused (URLs end up in logs and browser "
                         "histories); send it as the header Authorization: Bearer TOKEN", {})
        values = headers.get(b"authorization", [])
        if not values:
            return (401, "this server needs a token: send the header Authorization: Bearer TOKEN "
                         "(the operator has it: `peoplemap serve` says where)", {})
        if len(values) > 1:
            return 401, "send one Authorization header, not several", {}
        scheme, _, given = values[0].partition(b" ")
        if scheme.lower() != b"bearer" or not hmac.compare_digest(given.strip(), self._token):
            return 401, "wrong token: send the header Authorization: Bearer TOKEN", {}
        return None

    # -- the body ----------------------------------------------------------------------------------
    async def _read_body(self, scope: Scope, receive: Receive, send: Send,
                         held: list[int]) -> Optional[bytes]:
        """The whole body, within its route's limit; None when refused (answered) or the client
        disconnected."""
        path = scope.get("path", "")
        upload = path in UPLOAD_PATHS
        limit = self.config.max_upload_bytes + MULTIPART_SLACK if upload else JSON_BODY_LIMIT
        headers = {k.lower(): v for k, v in scope.get("headers", [])}
        declared = headers.get(b"content-length")
        if declared is not None and b"transfer-encoding" in headers:
            # RFC 9112 6.1: a request with both may be an attempt at request smuggling.
            await _answer(send, 400, "send Content-Length or Transfer-Encoding, not both")
            return None
        if declared is not None:
            try:
                n = int(declared)
                if n < 0:
                    raise ValueError
            except ValueError:
                await _answer(send, 400, "Content-Length is not a number")
                return None
            if n > limit:
                await _drain(receive, DRAIN_LIMIT)
                await _answer(send, 413, _too_large(upload, limit, self.config.max_upload_bytes))
                return None
        has_body = (declared not in (None, b"0")) or b"transfer-encoding" in headers
        if has_body and scope.get("method") in ("POST", "PUT", "PATCH"):
            ctype = headers.get(b"content-type", b"").decode("latin-1").lower().strip()
            if upload:
                if not ctype.startswith(UPLOAD_TYPES):
                    await _drain(receive, DRAIN_LIMIT)
                    await _answer(send, 415, "send the photo as multipart/form-data (field "
                                             "\"image\") or as the raw body (Content-Type "
                                             "application/octet-stream or image/*)")
                    return None
            elif ctype.split(";")[0].strip() != "application/json":
                await _drain(receive, DRAIN_LIMIT)
                await _answer(send, 415, "send the request body as JSON (Content-Type: "
                                         "application/json)")
                return None
        chunks: list[bytes] = []
        total = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return None
            chunk = message.get("body", b"")
            total += len(chunk)
            if total > limit:
                await _drain(receive, DRAIN_LIMIT - total)
                await _answer(send, 413, _too_large(upload, limit, self.config.max_upload_bytes))
                return None
            if self._buffered + len(chunk) > self._budget:
                await _drain(receive, DRAIN_LIMIT - total)
                await _answer(send, 503, "the server holds too many uploads right now; retry in a "
                                         "moment")
                return None
            self._buffered += len(chunk)
            held[0] += len(chunk)
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)


def _too_large(upload: bool, limit: int, upload_limit: int) -> str:
    if upload:
        return (f"the upload is larger than the limit of {upload_limit // (1024 * 1024)} MB "
                "(Settings.max_upload_mb, PEOPLEMAP_MAX_UPLOAD_MB)")
    return f"the request body is larger than the limit of {limit} bytes"


def _one(headers: dict[bytes, list[bytes]], name: bytes) -> Optional[str]:
    values = headers.get(name)
    return values[0].decode("latin-1").strip() if values else None


def _is_local_host(host: Optional[str]) -> bool:
    if not host:
        return False
    h = host.strip()
    if h.startswith("["):  # [::1]:8600
        name = h[1:h.find("]")] if "]" in h else h
    else:
        name = h.rsplit(":", 1)[0] if h.count(":") == 1 else h
    return is_loopback(name)


async def _drain(receive: Receive, budget: int) -> None:
    """Read and drop what is left of the body (up to `budget` bytes) so the answer can be read."""
    while budget > 0:
        message = await receive()
        if message["type"] != "http.request":
            return
        budget -= len(message.get("body", b""))
        if not message.get("more_body", False):
            return


async def _answer(send: Send, status: int, message: str, extra: Optional[dict] = None) -> None:
    body = error_body(status, message, **(extra or {}))
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    if status == 401:
        headers.append((b"www-authenticate", b'Bearer realm="peoplemap"'))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def _with_security_headers(send: Send, path: str) -> Send:
    docs = path == DOCS_PATHS[0] or path.startswith(DOCS_PATHS[1])
    extra = [(b"x-content-type-options", b"nosniff"), (b"referrer-policy", b"no-referrer"),
             (b"x-frame-options", b"DENY"),
             (b"content-security-policy", DOCS_CSP if docs else API_CSP)]

    async def wrapped(message: dict) -> None:
        if message["type"] == "http.response.start":
            headers = list(message.get("headers", []))
            names = {k.lower() for k, _v in headers}
            headers += [(k, v) for k, v in extra if k not in names]
            if b"cache-control" not in names:
                headers.append((b"cache-control", b"no-store"))
            message = {**message, "headers": headers}
        await send(message)

    return wrapped
