"""Helpers of the HTTP API tests (no tests here): a real `peoplemap serve` process on a free
127.0.0.1 port, polled with a deadline, and the test plugin its processes import.

Imported by the server and its job workers through PEOPLEMAP_TEST_PLUGINS (with conftest, which
registers the fast "fake" model), it registers "slowfake": the fake model taking a set time per
batch, so a job can be cancelled or killed half-way.
"""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, Optional

import httpx

from conftest import FakeEmbedder
from peoplemap.embed.registry import register

TESTS = Path(__file__).resolve().parent
SRC = TESTS.parent / "src"
SLOW_ENV = "PEOPLEMAP_TEST_SLOW_S"


class SlowFake(FakeEmbedder):
    """The fake model, sleeping PEOPLEMAP_TEST_SLOW_S seconds per batch (default 0.1)."""

    name = "slowfake"

    def embed(self, crops):
        time.sleep(float(os.environ.get(SLOW_ENV, "0.1")))
        return super().embed(crops)


register("slowfake", "test-only fake model that takes its time")(SlowFake)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(check: Callable[[], object], deadline_s: float, what: str, step_s: float = 0.05):
    """Poll `check` until it returns something truthy; fail after `deadline_s` seconds."""
    end = time.monotonic() + deadline_s
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > end:
            raise AssertionError(f"timed out after {deadline_s}s waiting for {what}")
        time.sleep(step_s)  # polling interval, not a wait for the server


class Server:
    """`python -m peoplemap.cli serve ...` in a subprocess; its log goes to a file."""

    def __init__(self, library: Path, *, roots: tuple[Path, ...] = (), token: Optional[str] = None,
                 args: tuple[str, ...] = (), env: Optional[dict] = None, model: str = "fake"):
        self.library = library
        self.roots = roots
        self.token = token
        self.args = args
        self.extra_env = env or {}
        self.model = model
        self.port = 0
        self.proc: Optional[subprocess.Popen] = None
        self.log_path = library.parent / f"{library.name}-server.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def env(self) -> dict:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join([str(TESTS), str(SRC), env.get("PYTHONPATH", "")])
        env["PEOPLEMAP_TEST_PLUGINS"] = "conftest,test_api_helpers"
        env["PEOPLEMAP_DEFAULT_MODEL"] = self.model
        env.pop("PEOPLEMAP_API_TOKEN", None)
        env.update(self.extra_env)
        return env

    def command(self) -> list[str]:
        cmd = [sys.executable, "-m", "peoplemap.cli", "serve", "--library", str(self.library),
               "--port", str(self.port)]
        for r in self.roots:
            cmd += ["--root", str(r)]
        if self.token:
            cmd += ["--token", self.token]
        return cmd + list(self.args)

    def start(self, deadline_s: float = 90) -> "Server":
        for _attempt in range(3):
            self.port = free_port()
            log = open(self.log_path, "ab")
            self.proc = subprocess.Popen(self.command(), env=self.env(), stdout=log,
                                         stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
            log.close()
            end = time.monotonic() + deadline_s
            while time.monotonic() < end:
                if self.proc.poll() is not None:
                    break
                try:
                    r = httpx.get(self.url + "/health", headers=self.headers(), timeout=2)
                    if r.status_code in (200, 401):
                        return self
                except httpx.TransportError:
                    pass
                time.sleep(0.1)  # polling interval
            if self.proc.poll() is None:
                self.stop()
                raise AssertionError(f"server did not answer within {deadline_s}s:\n{self.log()}")
            if "address already in use" not in self.log().lower():
                break
        raise AssertionError(f"server exited with {self.proc.returncode}:\n{self.log()}")

    def headers(self) -> dict:
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}

    def client(self, **kw) -> httpx.Client:
        return httpx.Client(base_url=self.url, headers=self.headers(), timeout=60, **kw)

    def alive(self) -> bool:
        """The process runs and answers /health with 200."""
        if self.proc is None or self.proc.poll() is not None:
            return False
        r = httpx.get(self.url + "/health", headers=self.headers(), timeout=10)
        return r.status_code == 200 and r.json() == {"status": "ok"}

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-20000:]
        except OSError:
            return ""

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(timeout=40)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def wait_job(client: httpx.Client, job_id: int, deadline_s: float = 120,
             until: Callable[[dict], bool] = lambda j: j["status"] not in ("running", "cancelling")
             ) -> dict:
    """Poll GET /jobs/{id} until `until(job)` holds (default: the job ended)."""
    def check():
        j = client.get(f"/jobs/{job_id}").json()
        return j if until(j) else None

    return wait_until(check, deadline_s, f"job {job_id}")


def run_job(client: httpx.Client, kind: str, body: dict, deadline_s: float = 180) -> dict:
    """Start a job, wait for it, and check it finished."""
    r = client.post(f"/jobs/{kind}", json=body)
    assert r.status_code == 202, r.text
    job = wait_job(client, r.json()["id"], deadline_s)
    assert job["status"] == "done", job
    return job


def png_declaring(width: int, height: int) -> bytes:
    """A tiny PNG whose header declares width x height pixels (a decompression bomb's header)."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr)
            + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b""))
