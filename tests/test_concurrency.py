"""One writer at a time, readers any time: concurrent runs on one library, across processes.

(a) a second `peoplemap index` on a library that is being indexed exits 1 with a "busy" message;
(b) readers (threads in this process, and `peoplemap search` in other processes) keep working while
    an index run writes, with no error and never "database is locked";
(c) `peoplemap cluster` during an index run is refused with the same busy message.
"""
from __future__ import annotations

import io
import logging
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from PIL import Image

from peoplemap import Library
from peoplemap.config import Settings
from peoplemap.embed.registry import create_embedder
from test_crash import committed, make_jpegs

pytestmark = pytest.mark.slow

N_IMAGES = 800
"""Enough that the first run is still going while a second process starts, even on a busy machine."""
BATCH = 16
DEADLINE_S = 120


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("concurrency") / "photos"
    make_jpegs(d, N_IMAGES, size=128, seed=1)
    return d


def _env(settings: Settings) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PEOPLEMAP_")}
    env.update(PEOPLEMAP_CACHE_DIR=settings.cache_dir, PEOPLEMAP_BATCH_SIZE=str(BATCH))
    return env


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "peoplemap.cli", *args]


def _poll(cond, proc: subprocess.Popen, log: Path, what: str) -> None:
    deadline = time.monotonic() + DEADLINE_S
    while not cond():
        assert proc.poll() is None, f"the index run ended before {what}:\n{log.read_text()[-3000:]}"
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        try:
            proc.wait(timeout=0.05)
        except subprocess.TimeoutExpired:
            pass


class Writer:
    """`peoplemap index FOLDER` running in a child process."""

    def __init__(self, folder: Path, lib_dir: Path, settings: Settings, log: Path):
        create_embedder("mobilenetv2", settings=settings).load()  # exported before the child starts
        self.lib_dir, self.log = lib_dir, log
        with open(log, "wb") as out:
            self.proc = subprocess.Popen(
                _cli("index", str(folder), "--library", str(lib_dir), "--model", "mobilenetv2"),
                stdout=out, stderr=subprocess.STDOUT, env=_env(settings))

    def wait_busy(self) -> None:
        """Until the child has committed a batch of this run (so it holds the writer lock)."""
        db = self.lib_dir / "library.sqlite"
        start = committed(db)
        _poll(lambda: committed(db) > start, self.proc, self.log, "the first committed batch")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=30)


@pytest.fixture
def writer(folder: Path, tmp_path: Path, settings: Settings):
    w = Writer(folder, tmp_path / "lib", settings, tmp_path / "writer.log")
    try:
        yield w
    finally:
        w.stop()


def _assert_refused_busy(result: subprocess.CompletedProcess) -> None:
    out = result.stdout + result.stderr
    assert result.returncode == 1, out
    assert result.stderr.startswith("Error: ") and "busy" in result.stderr, out
    assert "peoplemap index" in result.stderr, out  # says what holds the library
    assert "Traceback" not in out and "database is locked" not in out, out


def test_second_index_is_refused_busy(writer: Writer, folder: Path, settings: Settings) -> None:
    writer.wait_busy()
    second = subprocess.run(
        _cli("index", str(folder), "--library", str(writer.lib_dir), "--model", "mobilenetv2"),
        capture_output=True, text=True, timeout=DEADLINE_S, env=_env(settings))
    assert writer.proc.poll() is None, "the first run finished: the test proved nothing"
    _assert_refused_busy(second)


def test_cluster_during_index_is_refused_busy(writer: Writer, settings: Settings) -> None:
    writer.wait_busy()
    result = subprocess.run(_cli("cluster", "--library", str(writer.lib_dir)),
                            capture_output=True, text=True, timeout=DEADLINE_S, env=_env(settings))
    assert writer.proc.poll() is None, "the index run finished: the test proved nothing"
    _assert_refused_busy(result)


def _jpeg_bytes(path: Path) -> bytes:
    buf = io.BytesIO()
    Image.open(path).save(buf, "JPEG")
    return buf.getvalue()


def test_readers_while_index_writes(folder: Path, tmp_path: Path, settings: Settings,
                                    caplog) -> None:
    caplog.set_level(logging.DEBUG)
    lib_dir = tmp_path / "lib"
    first = tmp_path / "first"
    make_jpegs(first, 40, size=128, seed=2)
    with Library.open(lib_dir, create=True, settings=settings) as lib:
        lib.index(first, model="mobilenetv2")
        lib.cluster(min_cluster_size=2)
    query_file = sorted(first.rglob("*.jpg"))[0]
    query = _jpeg_bytes(query_file)

    reader = Library.open(lib_dir, settings=settings)
    w = Writer(folder, lib_dir, settings, tmp_path / "writer.log")
    errors: list[BaseException] = []
    seen_sizes: set[int] = set()
    counts = {"thread": 0, "process": 0}
    cli_outputs: list[str] = []

    def read_loop() -> None:
        while w.proc.poll() is None:
            try:
                res = reader.search(query, k=5)
                assert len(res) == 1 and len(res[0].hits) == 5
                labels = reader.labels()
                assert labels
                items = reader.items(ids=[h.item_id for h in res[0].hits])
                assert [it.id for it in items] == [h.item_id for h in res[0].hits]
                reader.clusters()
                info = reader.info()
                seen_sizes.add(info.items)
                counts["thread"] += 1
            except BaseException as e:  # noqa: BLE001  (every failure is the finding)
                errors.append(e)
                return

    def cli_loop() -> None:
        while w.proc.poll() is None:
            r = subprocess.run(_cli("search", str(query_file), "--library", str(lib_dir), "-k", "3"),
                               capture_output=True, text=True, timeout=DEADLINE_S,
                               env=_env(settings))
            cli_outputs.append(r.stdout + r.stderr)
            if r.returncode != 0:
                errors.append(AssertionError(f"peoplemap search exited {r.returncode}: {r.stderr}"))
                return
            counts["process"] += 1

    try:
        w.wait_busy()
        threads = [threading.Thread(target=read_loop) for _ in range(2)]
        threads.append(threading.Thread(target=cli_loop))
        for t in threads:
            t.start()
        assert w.proc.wait(timeout=DEADLINE_S) == 0, w.log.read_text()[-3000:]
        for t in threads:
            t.join(timeout=DEADLINE_S)
    finally:
        w.stop()
        reader.close()
    print(f"reads during the index run: {counts['thread']} in threads, {counts['process']} by "
          f"`peoplemap search` processes; library sizes seen: {sorted(seen_sizes)}")
    assert not errors, repr(errors[0])
    assert counts["thread"] >= 5 and counts["process"] >= 1
    assert len(seen_sizes) >= 2, "the readers never saw the library grow: no real overlap"
    texts = [w.log.read_text(), *cli_outputs, *(r.getMessage() for r in caplog.records)]
    assert not any("database is locked" in t for t in texts)
    assert not any("Traceback" in t for t in texts)
    with Library.open(lib_dir, settings=settings) as lib:
        assert lib.info().items == N_IMAGES + 40
