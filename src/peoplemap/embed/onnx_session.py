"""ONNX model files cached under Settings.model_dir, and onnxruntime sessions shared in-process.

Exported files are named by a hash of what produced them (weights sha256 + export parameters), so a
changed weight file or exporter setting gets a new file instead of silently reusing a stale one.
"""
from __future__ import annotations

import hashlib
import logging
import os
import tempfile
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from ..config import Settings
from ..errors import ModelError

if TYPE_CHECKING:
    import onnxruntime

log = logging.getLogger(__name__)

_sessions: dict[tuple[str, int], "onnxruntime.InferenceSession"] = {}
_sessions_lock = threading.Lock()
_sha_cache: dict[tuple[str, int, int], str] = {}


def file_sha256(path: str | os.PathLike[str]) -> str:
    """Hex sha256 of a file; cached per (path, size, mtime) so repeated calls are free."""
    st = os.stat(path)
    key = (os.fspath(path), st.st_size, st.st_mtime_ns)
    digest = _sha_cache.get(key)
    if digest is None:
        h = hashlib.sha256()
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
        digest = _sha_cache[key] = h.hexdigest()
    return digest


def cached_onnx_path(name: str, key: str, settings: Settings) -> Path:
    """Where the ONNX export of model `name` made from `key` (weights sha256 + params) lives."""
    short = hashlib.sha256(key.encode("utf-8")).hexdigest()[:16]
    return settings.model_dir / f"{name}-{short}.onnx"


def export_atomic(path: Path, write: Callable[[Path], None]) -> Path:
    """Create `path` by calling write(tmp) on a temporary file in the same folder, then os.replace.

    Readers never see a half-written file; two processes exporting at once both succeed and the last
    rename wins with identical content. Does nothing when `path` already exists.
    """
    if path.exists():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        write(tmp)
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; the cache is shared like any other file
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def default_threads() -> int:
    """Cores this process may run on (the affinity mask, which respects taskset/cgroup cpusets)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def make_session(path: str | os.PathLike[str], threads: int = 0) -> "onnxruntime.InferenceSession":
    """A CPU onnxruntime session for `path`, created once per (path, threads) in this process."""
    n = threads if threads and threads > 0 else default_threads()
    key = (os.path.abspath(os.fspath(path)), n)
    with _sessions_lock:
        session = _sessions.get(key)
        if session is None:
            session = _sessions[key] = _new_session(key[0], n)
        return session


def drop_session(path: str | os.PathLike[str]) -> None:
    """Forget cached sessions of `path` (after the file was replaced or found damaged)."""
    absolute = os.path.abspath(os.fspath(path))
    with _sessions_lock:
        for key in [k for k in _sessions if k[0] == absolute]:
            del _sessions[key]


def _new_session(path: str, threads: int) -> "onnxruntime.InferenceSession":
    try:
        import onnxruntime as ort
    except ImportError as e:
        raise ModelError(f"onnxruntime is not installed ({e}); pip install onnxruntime") from e
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    # Spinning workers halve throughput when decode workers or other processes share the cores,
    # and gain nothing measurable on an idle machine (benchmarks/bench_embed.py).
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    log.info("loading ONNX model %s with %d threads", path, threads)
    try:
        return ort.InferenceSession(path, sess_options=opts, providers=["CPUExecutionProvider"])
    except Exception as e:  # onnxruntime raises its own exception types for bad files
        raise ModelError(f"cannot load ONNX model {path}: {e}") from e


def load_or_export(path: Path, export: Callable[[Path], None], threads: int) -> "onnxruntime.InferenceSession":
    """A session for the cached ONNX file at `path`, exporting it first when missing.

    A damaged cache file (disk full, manual edit) is exported again once rather than failing forever.
    `export(tmp)` writes the model to tmp; `export_atomic` moves it into place.
    """
    if not path.exists():
        export_atomic(path, export)
    try:
        return make_session(path, threads)
    except ModelError as e:
        log.warning("cached ONNX model %s is unusable (%s); exporting it again", path, e)
        drop_session(path)
        path.unlink(missing_ok=True)
        export_atomic(path, export)
        return make_session(path, threads)


class LazySession:
    """An onnxruntime session made by `load()` on first use: once, even when threads race."""

    def __init__(self, load: Callable[[], "onnxruntime.InferenceSession"]):
        self._load = load
        self._session: "onnxruntime.InferenceSession | None" = None
        self._lock = threading.Lock()

    def get(self) -> "onnxruntime.InferenceSession":
        if self._session is None:
            with self._lock:
                if self._session is None:
                    self._session = self._load()
        return self._session
