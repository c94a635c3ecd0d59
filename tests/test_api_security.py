"""Hostile requests against a real `peoplemap serve` process with a token: none gets in, each is
answered with a clear status, and the server still answers after every one of them.

Also: the token file (made 0600, refused when others can read it), the token being required off
loopback, and a server without a token refusing foreign Host headers (DNS rebinding) and
cross-site requests.
"""
from __future__ import annotations

import io
import os
import socket
import stat
from pathlib import Path
from typing import Callable

import httpx
import pytest
from PIL import Image

from conftest import make_person_images
from test_api_helpers import Server, png_declaring, run_job, wait_until

from peoplemap.api.config import ServerConfig, is_loopback, load_or_create_token
from peoplemap.errors import InputError

TOKEN = "test-token-0123456789-abcdefghij"


@pytest.fixture(scope="module")
def guarded(tmp_path_factory):
    base = tmp_path_factory.mktemp("api-sec")
    root = base / "photos"
    make_person_images(root / "set1", n_people=3, per_person=4)
    outside = base / "outside"
    make_person_images(outside, n_people=1, per_person=2)
    (root / "door").symlink_to(outside)
    server = Server(base / "lib", roots=(root,), token=TOKEN,
                    env={"PEOPLEMAP_MAX_UPLOAD_MB": "2",
                         "PEOPLEMAP_MAX_IMAGE_PIXELS": "20000000"}).start()
    client = server.client()
    try:
        run_job(client, "index", {"folder": "set1"})
        yield server, client, root
    finally:
        client.close()
        server.stop()


def raw(server: Server, data: bytes) -> int:
    """Send raw bytes; the status code the server answers (0 if it just closed)."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as s:
        s.sendall(data)
        s.shutdown(socket.SHUT_WR)
        reply = b""
        while b"\r\n" not in reply:
            chunk = s.recv(4096)
            if not chunk:
                break
            reply += chunk
    parts = reply.split(b" ", 2)
    return int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 0


def bare(server: Server) -> httpx.Client:
    """A client that sends no token."""
    return httpx.Client(base_url=server.url, timeout=30)


def big_png(side: int) -> bytes:
    buf = io.BytesIO()
    Image.new("L", (side, side)).save(buf, "PNG", optimize=True)
    return buf.getvalue()


AUTH = {"Authorization": f"Bearer {TOKEN}"}
J = {"Content-Type": "application/json"}

# (name, request, allowed statuses): each request gets the server and answers a status code.
HOSTILE: list[tuple[str, Callable[[Server], int], set[int]]] = [
    ("no token", lambda s: bare(s).get("/people").status_code, {401}),
    ("no token on the docs", lambda s: bare(s).get("/docs").status_code, {401}),
    ("no token on the OpenAPI document", lambda s: bare(s).get("/openapi.json").status_code, {401}),
    ("no token on an unknown route", lambda s: bare(s).get("/admin").status_code, {401}),
    ("no token, a write", lambda s: bare(s).delete("/people/1").status_code, {401}),
    ("wrong token", lambda s: bare(s).get("/people", headers={"Authorization": "Bearer nope"})
     .status_code, {401}),
    ("token cut short", lambda s: bare(s).get("/people", headers={
        "Authorization": f"Bearer {TOKEN[:-1]}"}).status_code, {401}),
    ("token in the query string", lambda s: bare(s).get(f"/people?token={TOKEN}").status_code,
     {401}),
    ("token in the query string beside the header", lambda s: bare(s).get(
        f"/people?access_token={TOKEN}", headers=AUTH).status_code, {401}),
    ("token as another query parameter", lambda s: bare(s).get(
        f"/people?q={TOKEN}", headers=AUTH).status_code, {401}),
    ("token with the Basic scheme", lambda s: bare(s).get("/people", headers={
        "Authorization": f"Basic {TOKEN}"}).status_code, {401}),
    ("two Authorization headers", lambda s: raw(s, (
        f"GET /people HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer nope\r\n"
        f"Authorization: Bearer {TOKEN}\r\n\r\n").encode()), {401}),
    ("traversal with ..", lambda s: s.client().post("/jobs/index", json={"folder": "../.."})
     .status_code, {403}),
    ("traversal inside a path", lambda s: s.client().post("/jobs/index", json={
        "folder": "set1/../../../../etc"}).status_code, {403}),
    ("absolute path elsewhere", lambda s: s.client().post("/jobs/index", json={"folder": "/etc"})
     .status_code, {403}),
    ("symlink out of the root", lambda s: s.client().post("/jobs/index", json={"folder": "door"})
     .status_code, {403}),
    ("NUL byte in a folder", lambda s: s.client().post("/jobs/index", json={"folder": "set1\x00x"})
     .status_code, {422}),
    ("a 5,000-character folder", lambda s: s.client().post("/jobs/index", json={
        "folder": "a/" * 2500}).status_code, {422}),
    ("an ONNX model file by path", lambda s: s.client().post("/jobs/index", json={
        "folder": "set1", "model": "onnx:/etc/passwd"}).status_code, {422}),
    ("a 64 KB header", lambda s: raw(s, b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: "
                                     + b"a" * 65536 + b"\r\n\r\n"), {0, 400, 431}),
    ("2,000 headers", lambda s: raw(s, b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                                    + b"".join(b"X-H%d: v\r\n" % i for i in range(2000))
                                    + b"\r\n"), {0, 400, 431}),
    ("Content-Length and Transfer-Encoding both (smuggling)", lambda s: raw(s, (
        f"POST /people HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {TOKEN}\r\n"
        "Content-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n").encode()), {0, 400}),
    ("Content-Length that is not a number", lambda s: raw(s, (
        f"POST /jobs/cluster HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {TOKEN}\r\n"
        "Content-Type: application/json\r\nContent-Length: abc\r\n\r\n{}").encode()), {0, 400}),
    ("decompression bomb header (50,000 x 50,000 PNG)", lambda s: s.client().post(
        "/search", files={"image": ("bomb.png", png_declaring(50_000, 50_000))}).status_code, {413}),
    ("real 6,000 x 6,000 PNG over the pixel limit", lambda s: s.client().post(
        "/search", files={"image": ("big.png", big_png(6000))}).status_code, {413}),
    ("upload over the size limit", lambda s: s.client().post(
        "/search", content=os.urandom(3 * 1024 * 1024),
        headers={"Content-Type": "image/jpeg"}).status_code, {413}),
    ("text named .jpg", lambda s: s.client().post(
        "/search", files={"image": ("me.jpg", b"#!/bin/sh\nrm -rf /\n", "image/jpeg")}).status_code,
     {415}),
    ("HTML named .png", lambda s: s.client().post(
        "/search", files={"image": ("x.png", b"<html><script>alert(1)</script></html>")})
     .status_code, {415}),
    ("1,000 files in one upload", lambda s: s.client().post(
        "/search", files=[("image", (f"{i}.jpg", b"x")) for i in range(1000)]).status_code,
     {400, 413}),
    ("name of the wrong type", lambda s: s.client().patch("/people/1", json={"name": 123})
     .status_code, {404, 422}),
    ("merge others as a string", lambda s: s.client().post("/people/1/merge", json={"others": "2"})
     .status_code, {422}),
    ("item ids as strings", lambda s: s.client().post("/people/1/split", json={"item_ids": ["1"]})
     .status_code, {422}),
    ("item ids as booleans", lambda s: s.client().post("/items/not-a-face", json={
        "item_ids": [True]}).status_code, {422}),
    ("folder as a list", lambda s: s.client().post("/jobs/index", json={"folder": ["set1"]})
     .status_code, {422}),
    ("rebuild as a string", lambda s: s.client().post("/jobs/index", json={
        "folder": "set1", "rebuild": "yes"}).status_code, {422}),
    ("an unknown field", lambda s: s.client().post("/jobs/cluster", json={"shell": "rm -rf /"})
     .status_code, {422}),
    ("JSON that is an array", lambda s: s.client().post("/jobs/cluster", json=[1, 2])
     .status_code, {422}),
    ("JSON that does not parse", lambda s: s.client().post("/jobs/cluster", content=b"{'a':",
                                                           headers=J).status_code, {400}),
    ("JSON nested 200,000 deep", lambda s: s.client().post(
        "/jobs/cluster", content=b"[" * 200_000 + b"]" * 200_000, headers=J).status_code,
     {400, 413, 422}),
    ("JSON over 1 MB", lambda s: s.client().post("/people", json={
        "item_ids": list(range(300_000))}).status_code, {413}),
    ("JSON sent as a form", lambda s: s.client().post("/jobs/cluster", content=b"a=1", headers={
        "Content-Type": "application/x-www-form-urlencoded"}).status_code, {415}),
    ("negative id", lambda s: s.client().get("/items/-1").status_code, {422}),
    ("id past 64 bits", lambda s: s.client().get("/items/99999999999999999999999").status_code,
     {422}),
    ("k as a float", lambda s: s.client().post("/search?k=1.5", content=b"x", headers={
        "Content-Type": "image/jpeg"}).status_code, {422}),
    ("cross-origin POST", lambda s: s.client().post("/jobs/cluster", json={}, headers={
        "Origin": "http://evil.example"}).status_code, {403}),
    ("cross-site fetch", lambda s: s.client().delete("/people/1", headers={
        "Sec-Fetch-Site": "cross-site"}).status_code, {403}),
    ("TRACE", lambda s: s.client().request("TRACE", "/people").status_code, {405}),
    ("a websocket upgrade", lambda s: raw(s, (
        f"GET /people HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {TOKEN}\r\n"
        "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZQ==\r\n"
        "Sec-WebSocket-Version: 13\r\n\r\n").encode()), {0, 200, 400, 404, 426}),  # never 101
    ("a person reference that climbs folders", lambda s: s.client().get(
        "/people/..%2F..%2Fetc%2Fpasswd").status_code, {404}),
]


@pytest.mark.parametrize("name,request_,allowed", HOSTILE, ids=[h[0] for h in HOSTILE])
def test_hostile_request_is_refused_and_the_server_goes_on(guarded, name, request_, allowed):
    server, _client, _root = guarded
    status = request_(server)
    assert status in allowed, f"{name}: answered {status}, expected one of {sorted(allowed)}"
    assert server.alive(), f"{name}: the server stopped answering\n{server.log()}"


def test_at_least_twenty_hostile_requests():
    assert len(HOSTILE) >= 20


def test_refusals_say_why_in_json(guarded):
    server, client, _root = guarded
    r = bare(server).get("/people")
    assert r.status_code == 401 and r.headers["www-authenticate"].startswith("Bearer")
    assert "Authorization: Bearer" in r.json()["message"]
    r = bare(server).get(f"/people?token={TOKEN}")
    assert "URL" in r.json()["message"]
    r = client.post("/jobs/index", json={"folder": "../.."})
    assert r.json()["error"] == "forbidden" and "outside" in r.json()["message"]
    assert str(Path("/etc")) not in client.post("/jobs/index", json={"folder": "x"}).text
    r = client.patch("/people/1", json={"name": 123})
    assert r.status_code in (404, 422)
    r = client.post("/people/1/split", json={"item_ids": ["1"]})
    body = r.json()
    assert body["status"] == 422 and "item_ids" in body["message"] and body["details"]
    assert "Traceback" not in r.text
    # With the token, the docs are there, and the document declares the bearer scheme.
    assert client.get("/docs").status_code == 200
    assert client.get("/openapi.json").json()["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
    # Nothing got in: the library holds only what was indexed on purpose.
    info = client.get("/library").json()
    assert info["images"] == 12 and "outside" not in str(info)


def test_every_answer_carries_protective_headers(guarded):
    server, client, _root = guarded
    for r in (client.get("/people"), bare(server).get("/people"), client.get("/nope")):
        assert r.headers["x-content-type-options"] == "nosniff"
        assert r.headers["cache-control"] == "no-store"
        assert "default-src 'none'" in r.headers["content-security-policy"]
        assert "server" not in r.headers


def test_uploads_held_in_memory_are_bounded(guarded):
    """Bodies wait in memory until answered: 8 uploads' worth at most (here 8 x 2 MB), then 503;
    the memory comes back when the clients go."""
    server, client, root = guarded
    head = (f"POST /search HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {TOKEN}\r\n"
            "Content-Type: image/jpeg\r\nContent-Length: 2100000\r\n\r\n").encode()
    stalled = []
    try:
        for _ in range(8):  # each sends 2.05 MB of its 2.1 MB and waits
            s = socket.create_connection(("127.0.0.1", server.port), timeout=30)
            s.sendall(head + b"\xff" * 2_050_000)
            stalled.append(s)
        assert raw(server, head + b"\xff" * 2_100_000) == 503
    finally:
        for s in stalled:
            s.close()
    jpeg = next((root / "set1").rglob("*.jpg")).read_bytes()
    assert wait_until(lambda: client.post("/search", files={"image": ("q.jpg", jpeg)})
                      .status_code == 200, 30, "the held uploads to be released")


def test_token_file_is_made_private_and_refused_when_readable(tmp_path):
    lib = tmp_path / "lib"
    cfg = ServerConfig.make(lib, host="0.0.0.0")  # off loopback: a token is required
    f = lib / "api-token"
    assert cfg.token and f.read_text().strip() == cfg.token
    assert stat.S_IMODE(f.stat().st_mode) == 0o600
    assert ServerConfig.make(lib, host="0.0.0.0").token == cfg.token  # kept, not remade
    assert ServerConfig.make(lib).token is None  # loopback: no token unless asked
    assert ServerConfig.make(lib, require_token=True).token == cfg.token
    f.chmod(0o644)
    with pytest.raises(InputError, match="chmod 600"):
        load_or_create_token(f)
    f.unlink()
    f.symlink_to(tmp_path / "elsewhere")
    with pytest.raises(InputError, match="symlink"):
        load_or_create_token(f)
    with pytest.raises(InputError, match="at least 16"):
        ServerConfig.make(lib, token="short")
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.10")
    assert not is_loopback("example.com")


def test_server_refuses_to_start_with_a_readable_token_file(tmp_path):
    from peoplemap import Library

    lib = tmp_path / "lib"
    Library.open(lib, create=True).close()
    (lib / "api-token").write_text("x" * 40)
    (lib / "api-token").chmod(0o644)
    server = Server(lib, args=("--require-token",))
    with pytest.raises(AssertionError, match="chmod 600"):
        server.start(deadline_s=60)


def test_generated_token_guards_a_server(tmp_path):
    server = Server(tmp_path / "lib", args=("--require-token",)).start()
    try:
        token = (tmp_path / "lib" / "api-token").read_text().strip()
        assert "api-token" in server.log() and token not in server.log()
        assert bare(server).get("/health").status_code == 401
        r = bare(server).get("/health", headers={"Authorization": f"Bearer {token}"})
        assert r.status_code == 200
    finally:
        server.stop()


def test_server_without_token_answers_only_local_names(tmp_path):
    """DNS rebinding: a page served from evil.example resolving to 127.0.0.1 sends
    Host: evil.example; a server without a token refuses it, and cross-site requests."""
    server = Server(tmp_path / "lib").start()
    try:
        with bare(server) as c:
            assert c.get("/health").status_code == 200
            assert c.get("/health", headers={"Host": f"localhost:{server.port}"}).status_code == 200
            r = c.get("/health", headers={"Host": "evil.example"})
            assert r.status_code == 400 and "not this server" in r.json()["message"]
            r = c.post("/jobs/cluster", json={}, headers={"Origin": "http://evil.example"})
            assert r.status_code == 403
            r = c.post("/jobs/cluster", content=b"profile=seed",
                       headers={"Content-Type": "text/plain"})
            assert r.status_code == 415  # no form a web page can post gets through
        assert server.alive()
    finally:
        server.stop()
