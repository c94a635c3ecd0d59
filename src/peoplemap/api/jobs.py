"""Index and cluster runs as jobs: start, progress, result, cancel.

Each job runs in a worker process of its own (`python -m peoplemap.api.worker`), which reports
JSON lines that a thread of the server reads into the Job. A worker that dies (killed, out of
memory) only fails its job: the server keeps serving, and what the run committed stays (an index
run commits in batches; a later index of the folder resumes). Writing jobs are one at a time, as
the library's writer lock allows: a second one is refused with what is running (409).
"""
from __future__ import annotations

import fcntl
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence

from ..responses import Response

log = logging.getLogger(__name__)

KEEP_FINISHED = 200
"""Finished jobs remembered (oldest forgotten first); the library's runs keep the history."""
ACTIVE = ("running", "cancelling")


class JobConflict(Exception):
    """A writing job (or another process) holds the library; the message says which."""


class JobNotFound(Exception):
    pass


@dataclass
class Job(Response):
    """One index or cluster run started through the API."""

    id: int
    kind: str
    """"index" or "cluster"."""
    params: dict
    status: str = "running"
    """running | cancelling | done | failed | cancelled."""
    progress: dict = field(default_factory=lambda: {"stage": None, "done": 0, "total": None})
    """The run's last progress report: stage, done, total (total may be null)."""
    result: Optional[dict] = None
    """The run's summary when done: IndexSummary / ClusterSummary's to_json()."""
    error: Optional[str] = None
    """Why the job failed or stopped."""
    error_status: Optional[int] = None
    """The HTTP status the failure corresponds to (409 busy, 403 outside the roots, 422, 500)."""
    pid: Optional[int] = None
    """The worker process."""
    created_at: float = 0.0
    finished_at: Optional[float] = None

    @property
    def active(self) -> bool:
        return self.status in ACTIVE

    def describe(self) -> str:
        what = self.params.get("folder") or self.params.get("model") or ""
        return f"{self.kind} job {self.id}" + (f" ({what})" if what else "") + f", {self.status}"


def writer_holder(library: Path) -> Optional[str]:
    """Who holds the library's writer lock (as its lock file says), or None when it is free.
    Probes with a shared, non-blocking flock on a read-only descriptor: nothing is written."""
    path = library / "writer.lock"
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    except OSError:
        return None  # no lock file: nobody has ever written, or Library.writing reports it
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            text = os.read(fd, 4096).decode("utf-8", "replace").strip()
            return text or "another process"
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


class JobManager:
    """Starts worker processes, follows them, and answers for their jobs. Thread-safe."""

    def __init__(self, library: Path, roots: Sequence[Path], env: Optional[dict] = None):
        self.library = library
        self.roots = list(roots)
        self._env = env
        self._jobs: dict[int, Job] = {}
        self._procs: dict[int, subprocess.Popen] = {}
        self._lock = threading.Lock()
        self._next_id = 1

    # -- asking --------------------------------------------------------------------------------
    def get(self, job_id: int) -> Job:
        with self._lock:
            job = self._jobs.get(job_id)
            if job is None:
                raise JobNotFound(f"no job {job_id} on this server (jobs are kept while it runs; "
                                  "GET /jobs lists them)")
            return _copy(job)

    def all(self) -> list[Job]:
        with self._lock:
            return [_copy(j) for j in sorted(self._jobs.values(), key=lambda j: -j.id)]

    def running(self) -> Optional[Job]:
        with self._lock:
            return next((_copy(j) for j in self._jobs.values() if j.active), None)

    # -- starting and stopping -----------------------------------------------------------------
    def start(self, kind: str, params: dict) -> Job:
        """Start a job's worker; JobConflict when a writing job or another process holds the
        library."""
        with self._lock:
            busy = next((j for j in self._jobs.values() if j.active), None)
            if busy is not None:
                raise JobConflict(f"the library is busy: {busy.describe()} is writing to it. Wait "
                                  f"for it to finish (GET /jobs/{busy.id}) or cancel it "
                                  f"(POST /jobs/{busy.id}/cancel), then start this job again")
            holder = writer_holder(self.library)
            if holder is not None:
                raise JobConflict(f"the library is busy: {holder} is writing to it. Wait for it to "
                                  "finish, then start this job again")
            job = Job(id=self._next_id, kind=kind, params=dict(params), created_at=time.time())
            spec = {"kind": kind, "params": params, "library": str(self.library),
                    "roots": [str(r) for r in self.roots]}
            proc = subprocess.Popen(
                [sys.executable, "-m", "peoplemap.api.worker", json.dumps(spec)],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=None, env=self._env,
                text=True, encoding="utf-8", errors="replace", start_new_session=True)
            self._next_id += 1
            job.pid = proc.pid
            self._jobs[job.id] = job
            self._procs[job.id] = proc
            self._forget_old()
        threading.Thread(target=self._follow, args=(job.id, proc), daemon=True,
                         name=f"peoplemap-job-{job.id}").start()
        log.info("started %s (worker pid %d)", job.describe(), proc.pid)
        return _copy(job)

    def cancel(self, job_id: int) -> Job:
        """Ask the job's worker to stop between batches; JobConflict when it already ended."""
        with self._lock:
            job = self._jobs.get(job_id)
            if job is None:
                raise JobNotFound(f"no job {job_id} on this server")
            if not job.active:
                raise JobConflict(f"{job.describe()}: it has ended, there is nothing to cancel")
            job.status = "cancelling"
            proc = self._procs.get(job_id)
        if proc is not None:
            _tell(proc, "cancel")
        return self.get(job_id)

    def shutdown(self, wait_s: float = 30.0) -> None:
        """Cancel every running job, wait for the workers (then kill what is left)."""
        with self._lock:
            procs = [(i, p) for i, p in self._procs.items() if p.poll() is None]
        for _i, p in procs:
            _tell(p, "shutdown")
        deadline = time.monotonic() + wait_s
        for _i, p in procs:
            try:
                p.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                p.kill()

    # -- following a worker ----------------------------------------------------------------------
    def _follow(self, job_id: int, proc: subprocess.Popen) -> None:
        ended = False
        assert proc.stdout is not None
        for line in proc.stdout:
            try:
                ev = json.loads(line)
            except ValueError:
                log.warning("job %d: unreadable line from its worker: %.200r", job_id, line)
                continue
            ended = self._apply(job_id, ev) or ended
        rc = proc.wait()
        with self._lock:
            job = self._jobs.get(job_id)
            self._procs.pop(job_id, None)
            if job is None:
                return
            if not ended:
                how = (f"was killed by signal {signal.Signals(-rc).name}" if rc < 0
                       else f"exited with code {rc}")
                job.status = "failed"
                job.error_status = 500
                job.error = (f"the job's worker process (pid {proc.pid}) {how} before the job "
                             "finished; everything it committed is kept. Start the job again "
                             "to resume")
            job.finished_at = job.finished_at or time.time()
            log.info("%s", job.describe())
        try:
            if proc.stdin is not None:
                proc.stdin.close()
        except OSError:
            pass

    def _apply(self, job_id: int, ev: dict) -> bool:
        """Apply one event to the job; True when it ended the job."""
        kind = ev.get("event")
        with self._lock:
            job = self._jobs.get(job_id)
            if job is None:
                return False
            if kind == "progress":
                job.progress = {"stage": ev.get("stage"), "done": ev.get("done"),
                                "total": ev.get("total")}
                return False
            if kind == "result":
                job.status, job.result = "done", ev.get("result")
                if job.progress.get("total") is not None:
                    job.progress = {**job.progress, "done": job.progress["total"]}
            elif kind == "cancelled":
                job.status, job.error = "cancelled", ev.get("message")
            elif kind == "error":
                job.status, job.error = "failed", ev.get("message")
                job.error_status = int(ev.get("status") or 500)
            else:
                return False
            job.finished_at = time.time()
            return True

    def _forget_old(self) -> None:
        done = sorted(j.id for j in self._jobs.values() if not j.active)
        for job_id in done[:max(0, len(done) - KEEP_FINISHED)]:
            del self._jobs[job_id]


def _tell(proc: subprocess.Popen, line: str) -> None:
    try:
        assert proc.stdin is not None
        proc.stdin.write(line + "\n")
        proc.stdin.flush()
    except (OSError, ValueError):
        pass  # the worker has ended; its reader thread reports how


def _copy(job: Job) -> Job:
    return Job(**{k: (dict(v) if isinstance(v, dict) else v) for k, v in vars(job).items()})
