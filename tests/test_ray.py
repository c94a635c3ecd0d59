"""`--engine ray` on a real two-node Ray cluster on 127.0.0.1 (a head and a second node joining it,
one CPU each), on real face photos from ../shared/data: the library must come out the same as
after a local run (rows, item ids, boxes, vectors within float tolerance, skipped files and their
reasons), also when a worker process is killed mid-run and when a run is interrupted and resumed.

`LocalRayCluster` starts the nodes with `ray start --block` in their own process group and stops
exactly those processes (and any left under its private temp dir), so a failing test never leaves
Ray running and never touches another Ray on the machine.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Optional

import numpy as np
import pytest
from click.testing import CliRunner

from peoplemap import Library
from peoplemap.cli import main
from peoplemap.config import Settings

from conftest import shared_set

pytestmark = pytest.mark.slow

MODEL = "face"
SETS = ("dlib_johns", "faceapi_bbt_faces")


# -- a real local cluster ------------------------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _pids_with(text: str) -> list[int]:
    """Processes whose command line contains `text`."""
    out = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/cmdline", "rb") as f:
                cmd = f.read().replace(b"\0", b" ").decode("utf-8", "replace")
        except OSError:
            continue
        if text in cmd:
            out.append(int(d))
    return out


def _stat() -> dict[int, tuple[int, int]]:
    """pid -> (parent pid, process group) of every live process."""
    out = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat", "rb") as f:
                fields = f.read().rsplit(b")", 1)[1].split()
        except OSError:
            continue
        if fields[0] != b"Z":
            out[int(d)] = (int(fields[1]), int(fields[2]))
    return out


class LocalRayCluster:
    """A Ray head plus `nodes - 1` nodes joining it, `cpus` CPUs each, on 127.0.0.1."""

    def __init__(self, nodes: int = 2, cpus: int = 1, object_store_mb: int = 200) -> None:
        self.nodes, self.cpus, self.object_store = nodes, cpus, object_store_mb * 10 ** 6
        # Short and private: Ray puts unix sockets under it (~100 characters at most).
        self.temp_dir = tempfile.mkdtemp(prefix="pmray", dir="/tmp")
        self.port = _free_port()
        self.address = f"127.0.0.1:{self.port}"
        self._procs: list[subprocess.Popen] = []

    def __enter__(self) -> "LocalRayCluster":
        try:
            self._start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _node(self, head: bool) -> None:
        ray = str(Path(sys.executable).with_name("ray"))
        args = [ray, "start", "--block", "--node-ip-address=127.0.0.1", f"--num-cpus={self.cpus}",
                "--num-gpus=0", f"--object-store-memory={self.object_store}", "--disable-usage-stats",
                f"--temp-dir={self.temp_dir}", f"--dashboard-agent-listen-port={_free_port()}",
                f"--dashboard-agent-grpc-port={_free_port()}", f"--metrics-export-port={_free_port()}",
                f"--runtime-env-agent-port={_free_port()}"]
        if head:  # the dashboard's head process runs even without the UI: a free port for it too
            args += ["--head", f"--port={self.port}", "--include-dashboard=false",
                     f"--dashboard-port={_free_port()}"]
        else:
            args += [f"--address={self.address}"]
        log = open(Path(self.temp_dir) / f"start-{len(self._procs)}.log", "wb")
        # Token authentication as the driver has it (off unless set): a token file that a local
        # `ray.init()` of Ray >= 2.5x left in ~/.ray must not switch the cluster to tokens.
        env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0",
               "RAY_AUTH_MODE": os.environ.get("RAY_AUTH_MODE", "disabled")}
        self._procs.append(subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, env=env,
                                            start_new_session=True))
        log.close()

    def _start(self) -> None:
        import ray

        self._node(head=True)
        self._wait(lambda: self._port_open(), 90, "the head node")
        for _ in range(self.nodes - 1):
            self._node(head=False)
        ray.init(address=self.address, log_to_driver=False, configure_logging=False)
        try:
            self._wait(lambda: sum(n["Alive"] for n in ray.nodes()) >= self.nodes, 90,
                       f"{self.nodes} nodes")
        finally:
            ray.shutdown()

    def _port_open(self) -> bool:
        with socket.socket() as s:
            return s.connect_ex(("127.0.0.1", self.port)) == 0

    def _wait(self, ok, seconds: float, what: str) -> None:
        deadline = time.monotonic() + seconds
        while not ok():
            for p in self._procs:
                if p.poll() is not None:
                    raise RuntimeError(f"`ray start` exited with {p.returncode} waiting for {what}: "
                                       + self.log_tail())
            if time.monotonic() > deadline:
                raise RuntimeError(f"timed out waiting for {what}: " + self.log_tail())
            time.sleep(0.2)

    def log_tail(self) -> str:
        out = []
        for f in sorted(Path(self.temp_dir).glob("start-*.log")):
            out.append(f"{f.name}: " + f.read_text(errors="replace")[-2000:])
        return "\n".join(out)

    def pids(self) -> set[int]:
        """Every live process of this cluster: the `ray start` process groups, anything naming its
        temp dir, and their descendants (Ray's worker processes)."""
        stat = _stat()
        groups = {p.pid for p in self._procs}
        found = {pid for pid, (_pp, pg) in stat.items() if pg in groups}
        found.update(pid for pid in _pids_with(self.temp_dir) if pid in stat)
        grew = True
        while grew:
            kids = {pid for pid, (pp, _pg) in stat.items() if pp in found} - found
            found |= kids
            grew = bool(kids)
        found.discard(os.getpid())
        return found

    def actor_pids(self, name: str) -> set[int]:
        """Worker processes of this cluster running an actor of class `name`."""
        return {pid for pid in self.pids() if name in _cmdline(pid)}

    def stop(self) -> None:
        """Kill this cluster's processes (and only those) and wait until they are gone. SIGKILL at
        once: the cluster and its temp dir are thrown away, and `ray start --block` takes ~20 s to
        stop on SIGTERM."""
        deadline = time.monotonic() + 30
        while True:
            left = self.pids()
            if not left or time.monotonic() > deadline:
                break
            for pid in left:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            time.sleep(0.2)
        for p in self._procs:
            try:
                p.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass
        shutil.rmtree(self.temp_dir, ignore_errors=True)
        if left:
            raise RuntimeError(f"Ray processes still running after SIGKILL: {sorted(left)}")


def _cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode("utf-8", "replace")
    except OSError:
        return ""


# -- fixtures ------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def cluster():
    with LocalRayCluster(nodes=2, cpus=1) as c:
        yield c
        assert not _ray_connected(), "a Ray run left its driver connected"


def _ray_connected() -> bool:
    import ray

    return ray.is_initialized()


@pytest.fixture(scope="module")
def ray_settings(tmp_path_factory) -> Settings:
    return Settings(cache_dir=str(tmp_path_factory.getbasetemp() / "model-cache"), batch_size=8,
                    workers=2)


def _farm(dest: Path) -> Path:
    """A folder of links to real face photos (about 100, several with groups) plus generated files
    that cannot be used: nothing is copied from ../shared/data."""
    for name in SETS:
        src = shared_set(name)
        for f in sorted(src.rglob("*")):
            if f.is_file():
                link = dest / name / f.relative_to(src)
                link.parent.mkdir(parents=True, exist_ok=True)
                link.symlink_to(f)
    bad = dest / "bad"
    bad.mkdir()
    (bad / "truncated.jpg").write_bytes((shared_set("dlib_johns") / "John_Simm").joinpath(
        sorted(os.listdir(shared_set("dlib_johns") / "John_Simm"))[0]).read_bytes()[:300])
    (bad / "empty.png").write_bytes(b"")
    (bad / "notes.jpg").write_text("not a picture\n")
    return dest


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    return _farm(tmp_path_factory.mktemp("ray-photos"))


@pytest.fixture(scope="module")
def local_lib(tmp_path_factory, photos, ray_settings):
    """The reference: the same folder indexed by the local engine."""
    path = tmp_path_factory.mktemp("local") / "lib"
    with Library.open(path, create=True, settings=ray_settings) as lib:
        summary = lib.index(photos, model=MODEL)
    return path, summary


def _snapshot(path: Path) -> dict:
    """Everything an index run writes, in comparable form (vectors separately)."""
    with Library.open(path) as lib:
        q = lib.catalog.query
        ids, X = lib.vectors(MODEL)
        return {
            "images": q("SELECT id, path, sha256, size, mtime, width, height, format FROM images "
                        "ORDER BY id"),
            "items": q("SELECT i.id, im.path, i.x, i.y, i.w, i.h, round(i.score, 6) FROM items i "
                       "JOIN images im ON im.id = i.image_id ORDER BY i.id"),
            "processed": q("SELECT im.path, p.n_items FROM processed p JOIN images im ON "
                           "im.id = p.image_id ORDER BY im.path"),
            "skipped": q("SELECT path, reason FROM skipped ORDER BY path"),
            "ids": ids.tolist(),
            "X": X,
        }


def _assert_same_library(ray_path: Path, local_path: Path) -> None:
    a, b = _snapshot(ray_path), _snapshot(local_path)
    for key in ("images", "items", "processed", "skipped", "ids"):
        assert a[key] == b[key], key
    assert a["X"].shape == b["X"].shape
    np.testing.assert_allclose(a["X"], b["X"], rtol=0, atol=1e-5)


_COUNTS = ("files_seen", "new", "changed", "unchanged", "removed", "reused", "items_added",
           "images_without_items")


# -- the tests -----------------------------------------------------------------------------------
def test_cli_ray_engine_matches_local(cluster, photos, local_lib, tmp_path, ray_settings):
    local_path, local_summary = local_lib
    lib = tmp_path / "lib"
    env = {"PEOPLEMAP_CACHE_DIR": ray_settings.cache_dir, "PEOPLEMAP_BATCH_SIZE": "8"}
    r = CliRunner(env=env).invoke(main, ["index", str(photos), "--library", str(lib), "--model", MODEL,
                                         "--engine", "ray", "--ray-address", cluster.address, "--json"])
    assert r.exit_code == 0, r.output
    s = json.loads(r.stdout)
    for k in _COUNTS:
        assert s[k] == getattr(local_summary, k), k
    assert s["items_added"] > s["files_seen"] - 5 - len(s["skipped"])  # group photos: several faces
    reasons = {Path(k["path"]).name: k["reason"] for k in s["skipped"]}
    assert set(reasons) == {"SOURCE.txt", "truncated.jpg", "empty.png", "notes.jpg"}
    assert reasons["empty.png"] == "empty file"
    assert s["stage_seconds"]["embed"] > 0 and s["stage_seconds"]["decode"] > 0
    _assert_same_library(lib, local_path)


def test_rerun_on_ray_sees_changes_like_local(cluster, photos, tmp_path, ray_settings, monkeypatch):
    """Incremental runs: nothing to do, then removed and added files, the same as locally. The
    first Ray run is cut into Ray Data runs of 30 files (engine_ray.WINDOW)."""
    from peoplemap import engine_ray

    monkeypatch.setattr(engine_ray, "WINDOW", 30)
    farm = _farm(tmp_path / "photos")
    paths = {"local": tmp_path / "local", "ray": tmp_path / "ray"}
    engines = {"local": "local", "ray": "ray"}
    for name, path in paths.items():
        with Library.open(path, create=True, settings=ray_settings) as lib:
            lib.index(farm, model=MODEL, engine=engines[name],
                      ray_address=cluster.address if name == "ray" else None)
    gone = sorted((farm / "dlib_johns" / "John_Salley").iterdir())[:3]
    for p in gone:
        p.unlink()
    (farm / "bad" / "empty.png").unlink()
    (farm / "new").mkdir()
    (farm / "new" / "simm.jpg").symlink_to(sorted((shared_set("dlib_johns") / "John_Simm").iterdir())[1])
    summaries = {}
    for name, path in paths.items():
        with Library.open(path, settings=ray_settings) as lib:
            summaries[name] = lib.index(farm, model=MODEL, engine=engines[name],
                                        ray_address=cluster.address if name == "ray" else None)
    a, b = summaries["ray"], summaries["local"]
    assert (a.removed, a.new, a.reused) == (3, 1, 1)  # the new link's content is already indexed
    for k in _COUNTS:
        assert getattr(a, k) == getattr(b, k), k
    assert [(k.path, k.reason) for k in a.skipped] == [(k.path, k.reason) for k in b.skipped]
    _assert_same_library(paths["ray"], paths["local"])
    with Library.open(paths["ray"], settings=ray_settings) as lib:  # nothing left to do
        again = lib.index(farm, model=MODEL, engine="ray", ray_address=cluster.address)
    assert again.new == again.changed == again.removed == 0 and again.stage_seconds["ray_start"] == 0


def test_worker_killed_mid_run_is_retried(cluster, photos, local_lib, tmp_path, ray_settings):
    from peoplemap.engine_ray import RayOptions

    killed: list[int] = []
    at_kill: set[int] = set()
    seen_after: set[int] = set()
    before_kill: list[tuple[int, Optional[int]]] = []

    def progress(stage: str, done: int, total: Optional[int]) -> None:
        if stage != "index" or not done:
            return
        actors = cluster.actor_pids("EmbedBatch")
        if not killed:
            assert actors, "no model actor process found on the cluster"
            at_kill.update(actors)
            victim = min(actors)
            os.kill(victim, signal.SIGKILL)
            killed.append(victim)
            before_kill.append((done, total))
        elif done > before_kill[0][0] + 10:  # progress is per file: let Ray notice the kill first
            seen_after.update(actors)

    path = tmp_path / "lib"
    with Library.open(path, create=True, settings=ray_settings) as lib:
        s = lib.index(photos, model=MODEL, engine=RayOptions(address=cluster.address, batch_files=2),
                      progress=progress)
    assert killed and before_kill[0][0] < before_kill[0][1]  # killed while files were outstanding
    assert killed[0] not in seen_after and seen_after - at_kill  # Ray started a new actor process
    assert s.items_added == local_lib[1].items_added
    _assert_same_library(path, local_lib[0])


def test_interrupted_ray_run_resumes(cluster, photos, local_lib, tmp_path, ray_settings):
    path = tmp_path / "lib"

    def stop(stage: str, done: int, total: Optional[int]) -> None:
        # Progress counts files as their work comes back; a batch (at most 4 x 8 files) commits
        # behind it, so past 40 files at least one batch is in the library.
        if stage == "index" and done > 40:
            raise KeyboardInterrupt

    with Library.open(path, create=True, settings=ray_settings) as lib:
        # The interrupt reaches the run as itself, or, when it lands while Ray Data's own threads are
        # handing over results, as the run's failure; either way committed work stays.
        from peoplemap.engine_ray import EngineError

        with pytest.raises((KeyboardInterrupt, EngineError)):
            lib.index(photos, model=MODEL, engine="ray", ray_address=cluster.address, progress=stop)
        assert not _ray_connected()
        partial = lib.catalog.one("SELECT COUNT(*) FROM processed")[0]
        skipped = lib.catalog.one("SELECT COUNT(*) FROM skipped")[0]
        assert 0 < partial < local_lib[1].new - len(local_lib[1].skipped)
        s = lib.index(photos, model=MODEL, engine="ray", ray_address=cluster.address)
    assert s.unchanged == partial + skipped and s.new == local_lib[1].new - s.unchanged
    _assert_same_library(path, local_lib[0])


# -- errors (no cluster needed) ------------------------------------------------------------------
def test_engine_ray_without_ray_says_how_to_install(tmp_path, photos, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` now raises ImportError
    r = CliRunner().invoke(main, ["index", str(photos), "--library", str(tmp_path / "lib"),
                                  "--model", MODEL, "--engine", "ray"])
    assert r.exit_code == 1
    assert "pip install 'peoplemap[ray]'" in r.output and "Traceback" not in r.output


def test_bad_engine_options_are_clear(tmp_path, photos):
    from peoplemap.engine_ray import RayOptions
    from peoplemap.errors import InputError

    with Library.open(tmp_path / "lib", create=True) as lib:
        with pytest.raises(InputError, match="Unknown engine: 'spark'. Must be one of"):
            lib.index(photos, model=MODEL, engine="spark")
        with pytest.raises(InputError, match="add --engine ray"):
            lib.index(photos, model=MODEL, ray_address="127.0.0.1:1")
        assert lib.catalog.one("SELECT COUNT(*) FROM images")[0] == 0
    with pytest.raises(InputError, match="workers"):
        RayOptions(workers=0)
    r = CliRunner().invoke(main, ["index", str(photos), "--library", str(tmp_path / "l2"),
                                  "--ray-workers", "2"])
    assert r.exit_code == 1 and "need --engine ray" in r.output  # every user error exits 1
