"""ONNX model files cached under Settings.model_dir, and inference sessions shared in-process.

Exported files are named by a hash of what produced them (weights sha256 + export parameters), so a
changed weight file or exporter setting gets a new file instead of silently reusing a stale one.

A session runs in OpenVINO when it is installed (Settings.runtime "auto"), else in onnxruntime; both
sit behind the small part of onnxruntime's InferenceSession interface the embedders use (`run`,
`get_inputs`, `get_outputs`), plus `runtime`, `precision` and `describe()` saying what actually ran.
On this project's 2-core AMD EPYC (AVX-512 BF16) OpenVINO ran MobileNetV2 at ~1.2x onnxruntime in
fp32 and ~2x in bf16 (benchmarks/bench_index.py). bf16 vectors have a cosine of ~0.99 (0.975 at
worst) to fp32 ones on the shared photos, with the same rank-1 and mAP on CUHK01 (tests/test_runtime.py).
"""
from __future__ import annotations

import hashlib
import logging
import os
import sys
import tempfile
import threading
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version as package_version
from importlib.util import find_spec
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Optional, Sequence

import numpy as np

from ..config import Settings
from ..errors import ModelError

if TYPE_CHECKING:
    import onnxruntime

log = logging.getLogger(__name__)

_OPENVINO_INSTALL = "pip install openvino (or pip install 'peoplemap[mobilenet]')"
_sessions: dict[tuple[str, int, str, str], "Session"] = {}
"""Sessions by (model path, threads, runtime asked for, precision)."""
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


# -- the session interface --------------------------------------------------------------------------

@dataclass(frozen=True)
class TensorInfo:
    """An input or output as onnxruntime's NodeArg describes it: dynamic dimensions are None."""

    name: str
    shape: list[Optional[int]]
    type: str
    """onnxruntime-style element type, e.g. "tensor(float)"."""


class Session:
    """What the embedders need of an inference session; `runtime`/`precision` say what really runs."""

    runtime: str
    precision: str
    threads: int

    def run(self, output_names: Optional[Sequence[str]], feed: dict[str, np.ndarray]) -> list[np.ndarray]:
        raise NotImplementedError

    def get_inputs(self) -> list[Any]:
        raise NotImplementedError

    def get_outputs(self) -> list[Any]:
        raise NotImplementedError

    def describe(self) -> dict[str, Any]:
        """Runtime, its version, precision and threads: recorded with a vector set's description."""
        return {"runtime": self.runtime, "runtime_version": _package("openvino" if self.runtime == "openvino"
                                                                      else "onnxruntime"),
                "precision": self.precision, "threads": self.threads}


class OrtSession(Session):
    """An onnxruntime InferenceSession; anything else it offers is reached through attribute access."""

    runtime = "onnxruntime"
    precision = "fp32"

    def __init__(self, session: "onnxruntime.InferenceSession", threads: int):
        self._session = session
        self.threads = threads

    def run(self, output_names: Optional[Sequence[str]], feed: dict[str, np.ndarray]) -> list[np.ndarray]:
        return self._session.run(output_names, feed)

    def get_inputs(self) -> list[Any]:
        return self._session.get_inputs()

    def get_outputs(self) -> list[Any]:
        return self._session.get_outputs()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._session, name)


_OV_TYPES = {"f32": "tensor(float)", "f16": "tensor(float16)", "bf16": "tensor(bfloat16)",
             "f64": "tensor(double)", "u8": "tensor(uint8)", "i8": "tensor(int8)", "i32": "tensor(int32)",
             "i64": "tensor(int64)", "boolean": "tensor(bool)"}
_OV_PRECISIONS = {"f32": "fp32", "bf16": "bf16", "f16": "fp16"}


def _ov_info(port: Any) -> TensorInfo:
    shape = [d.get_length() if d.is_static else None for d in port.get_partial_shape()]
    kind = port.get_element_type().get_type_name()
    return TensorInfo(port.get_any_name(), shape, _OV_TYPES.get(kind, f"tensor({kind})"))


class OpenVinoSession(Session):
    """An OpenVINO CompiledModel (CPU) behind onnxruntime's `run(None, {name: x})`.

    The model is compiled with one stream per thread, each stream single-threaded, and a batch is
    split into one slice per stream, the slices run at once. Streams never wait for each other, so a
    thread that loses its core for a while (decode threads, other processes) delays only its own
    slice; one stream of all threads (the LATENCY hint) makes every thread wait for the slowest at
    every layer. On 2 cores, batches of 32: 1.25x the LATENCY hint on a quiet machine, 1.6x with a
    busy thread beside it. Calls are serialised by a lock: one call already uses every stream.
    """

    runtime = "openvino"
    MIN_SLICE = 4
    """Images per slice at least: smaller slices lose more to per-call overhead than they gain."""

    def __init__(self, compiled: Any, threads: int):
        self._compiled = compiled
        self._requests = [compiled.create_infer_request() for _ in range(max(1, threads))]
        self._lock = threading.Lock()
        self.threads = threads
        hint = compiled.get_property("INFERENCE_PRECISION_HINT")
        self.precision = _OV_PRECISIONS.get(hint.get_type_name(), hint.get_type_name())
        self._inputs = [_ov_info(p) for p in compiled.inputs]
        self._outputs = [_ov_info(p) for p in compiled.outputs]
        self._input_index: dict[str, int] = {}
        for i, port in enumerate(compiled.inputs):
            for name in port.get_names():
                self._input_index[name] = i
        self._output_index: dict[str, int] = {}
        for i, port in enumerate(compiled.outputs):
            for name in port.get_names():
                self._output_index[name] = i
        # Slicing a batch is only safe when the model maps each image to its own output rows: one
        # input and every output with a dynamic leading (batch) axis.
        self._sliceable = (len(self._inputs) == 1 and self._inputs[0].shape[:1] == [None]
                           and all(o.shape[:1] == [None] for o in self._outputs))

    def run(self, output_names: Optional[Sequence[str]], feed: dict[str, np.ndarray]) -> list[np.ndarray]:
        inputs = {}
        for name, x in feed.items():
            index = self._input_index.get(name)
            if index is None:
                raise ModelError(f"the model has no input {name!r}; inputs: {[i.name for i in self._inputs]}")
            inputs[index] = np.ascontiguousarray(x)
        if output_names is not None:
            unknown = [n for n in output_names if n not in self._output_index]
            if unknown:
                raise ModelError(f"the model has no output {unknown[0]!r}; outputs: "
                                 f"{[o.name for o in self._outputs]}")
        n = len(inputs[0]) if self._sliceable and 0 in inputs and inputs[0].ndim else 0
        k = max(1, min(len(self._requests), n // self.MIN_SLICE))
        with self._lock:
            if k == 1:
                # share_inputs: no copy of the batch (the call is synchronous); outputs are copied out.
                result = list(self._requests[0].infer(inputs, share_inputs=True).to_tuple())
            else:
                bounds = np.linspace(0, n, k + 1).astype(int)
                slices = [inputs[0][bounds[j]:bounds[j + 1]] for j in range(k)]
                for request, part in zip(self._requests, slices):
                    request.start_async({0: part}, share_inputs=True)
                for request in self._requests[:k]:
                    request.wait()
                result = [np.concatenate([self._requests[j].get_output_tensor(i).data for j in range(k)])
                          for i in range(len(self._outputs))]
        if output_names is None:
            return result
        return [result[self._output_index[name]] for name in output_names]

    def get_inputs(self) -> list[TensorInfo]:
        return list(self._inputs)

    def get_outputs(self) -> list[TensorInfo]:
        return list(self._outputs)


def _package(name: str) -> str:
    try:
        return package_version(name)
    except PackageNotFoundError:
        return "unknown"


# -- choosing and making sessions -------------------------------------------------------------------

def openvino_available() -> bool:
    """Whether the openvino package is installed (found without importing it)."""
    try:
        return find_spec("openvino") is not None
    except (ImportError, ValueError):
        return False


_bf16_native: Optional[bool] = None


def cpu_has_native_bf16() -> bool:
    """Whether OpenVINO reports bf16 among the CPU's optimisation capabilities (AVX512-BF16, AMX)."""
    global _bf16_native
    if _bf16_native is None:
        try:
            core = _openvino_core()
            _bf16_native = "BF16" in core.get_property("CPU", "OPTIMIZATION_CAPABILITIES")
        except Exception as e:  # no OpenVINO, or a CPU plugin that cannot start: fp32 it is
            log.debug("cannot ask OpenVINO for the CPU's capabilities: %s", e)
            _bf16_native = False
    return _bf16_native


_core: Any = None


def _import_openvino() -> Any:
    """`import openvino`, without its usage telemetry.

    `import openvino` imports its model converter (openvino.tools.ovc), which, unless the user opted
    out with OpenVINO's opt_in_out tool, writes ~/intel/openvino_ga_cid and sends an "import" event
    to Google Analytics. peoplemap makes no network connections, so while openvino is first
    imported, openvino_telemetry is made unimportable: the converter then binds its no-op stub.
    The entry is removed again afterwards, so other code can still import openvino_telemetry.
    """
    if "openvino" in sys.modules or "openvino_telemetry" in sys.modules:
        import openvino
        return openvino
    sys.modules["openvino_telemetry"] = None  # type: ignore[assignment]
    try:
        import openvino
    finally:
        if sys.modules.get("openvino_telemetry", 0) is None:
            del sys.modules["openvino_telemetry"]
    return openvino


def _openvino_core() -> Any:
    global _core
    if _core is None:
        try:
            openvino = _import_openvino()
        except ImportError as e:
            raise ModelError(f"runtime 'openvino' is not installed ({e}): {_OPENVINO_INSTALL}; "
                             "or set PEOPLEMAP_RUNTIME=onnxruntime") from e
        _core = openvino.Core()
    return _core


def _read_onnx(core: Any, path: str) -> Any:
    """The model read by OpenVINO's ONNX frontend (Core.read_model would also try the TensorFlow and
    other frontends on a file that is not ONNX, and they log parse errors to stderr)."""
    from openvino.frontend import FrontEndManager

    frontend = FrontEndManager().load_by_framework("onnx")
    if frontend is None:  # a build without the ONNX frontend: let read_model say what it can read
        return core.read_model(path)
    return frontend.convert(frontend.load(path))


def _openvino_reason(e: BaseException) -> str:
    """The line of an OpenVINO error that says what went wrong (its messages run to many lines,
    most of them source locations)."""
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    useful = [ln for ln in lines if not ln.startswith(("Exception from ", "Check '", "FrontEnd API failed"))]
    return (useful or lines or [type(e).__name__])[0]


def resolve_runtime(runtime: str = "auto", precision: str = "auto") -> tuple[str, str]:
    """The (runtime, precision) that "auto" stands for on this machine; explicit values pass through.

    ModelError when "openvino" is asked for and is not installed.
    """
    from ..config import PRECISIONS, RUNTIMES
    from ..errors import InputError

    if runtime not in RUNTIMES:
        raise InputError(f"runtime must be one of {list(RUNTIMES)}, got {runtime!r}")
    if precision not in PRECISIONS:
        raise InputError(f"precision must be one of {list(PRECISIONS)}, got {precision!r}")
    if runtime == "auto":
        runtime = "openvino" if openvino_available() else "onnxruntime"
    elif runtime == "openvino" and not openvino_available():
        raise ModelError(f"runtime 'openvino' is not installed: {_OPENVINO_INSTALL}; "
                         "or set PEOPLEMAP_RUNTIME=onnxruntime")
    if runtime == "onnxruntime":
        if precision == "bf16":
            raise InputError("precision 'bf16' needs runtime 'openvino'; onnxruntime runs fp32")
        return runtime, "fp32"
    if precision == "auto":
        precision = "bf16" if cpu_has_native_bf16() else "fp32"
    return runtime, precision


def make_session(path: str | os.PathLike[str], threads: int = 0, runtime: str = "auto",
                 precision: str = "auto") -> Session:
    """A CPU session for `path`, created once per (path, threads, runtime, precision) in this process.

    runtime "auto" is OpenVINO when installed, falling back to onnxruntime (with a warning) when
    OpenVINO cannot compile the model; precision "auto" is bf16 where the CPU has it natively.
    """
    n = threads if threads and threads > 0 else default_threads()
    auto = runtime == "auto"
    runtime, precision = resolve_runtime(runtime, precision)
    # "auto" may have fallen back to onnxruntime: never hand that session to an explicit "openvino".
    key = (os.path.abspath(os.fspath(path)), n, f"auto:{runtime}" if auto else runtime, precision)
    with _sessions_lock:
        session = _sessions.get(key)
        if session is None:
            if runtime == "openvino":
                session = _openvino_session(key[0], n, precision, fallback=auto)
            else:
                session = OrtSession(_new_session(key[0], n), n)
            _sessions[key] = session
            log.info("%s runs in %s (%s, %d threads)", os.path.basename(key[0]), session.runtime,
                     session.precision, session.threads)
        return session


def settings_session(path: str | os.PathLike[str], settings: Settings) -> Session:
    """make_session with the runtime, precision and threads of `settings`."""
    return make_session(path, settings.threads, settings.runtime, settings.precision)


def drop_session(path: str | os.PathLike[str]) -> None:
    """Forget cached sessions of `path` (after the file was replaced or found damaged)."""
    absolute = os.path.abspath(os.fspath(path))
    with _sessions_lock:
        for key in [k for k in _sessions if k[0] == absolute]:
            del _sessions[key]


def _openvino_session(path: str, threads: int, precision: str, *, fallback: bool) -> Session:
    """Compile `path` for OpenVINO's CPU plugin; on failure use onnxruntime when `fallback`."""
    try:
        core = _openvino_core()
        config = {
            # One single-threaded stream per thread; OpenVinoSession.run splits each batch over
            # them. Not pinned to cores: decode threads and other processes share them.
            "PERFORMANCE_HINT": "THROUGHPUT",
            "NUM_STREAMS": threads,
            "INFERENCE_NUM_THREADS": threads,
            "ENABLE_CPU_PINNING": False,
            "INFERENCE_PRECISION_HINT": "bf16" if precision == "bf16" else "f32",
        }
        log.info("loading ONNX model %s in OpenVINO (%s, %d threads)", path, precision, threads)
        session: Session = OpenVinoSession(core.compile_model(_read_onnx(core, path), "CPU", config), threads)
    except ModelError:
        raise
    except Exception as e:  # OpenVINO raises RuntimeError subclasses for unreadable / unsupported models
        reason = _openvino_reason(e)
        if not fallback:
            raise ModelError(f"OpenVINO cannot load ONNX model {path}: {reason}; "
                             "set PEOPLEMAP_RUNTIME=onnxruntime (or auto) to use onnxruntime") from e
        log.warning("OpenVINO cannot load %s (%s); using onnxruntime instead", path, reason)
        return OrtSession(_new_session(path, threads), threads)
    if session.precision != precision:
        log.warning("asked OpenVINO for %s inference, it runs %s on this CPU", precision, session.precision)
    return session


def memory_session(model: bytes, name: str, threads: int = 1) -> Session:
    """An onnxruntime session (fp32, never OpenVINO) for a model built in memory, not cached: for a
    model whose vectors must equal another implementation's (the face descriptor)."""
    return OrtSession(_new_session(model, threads, name), threads)


def _new_session(path: str | bytes, threads: int, name: str = "") -> "onnxruntime.InferenceSession":
    what = name or path
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
    log.info("loading ONNX model %s with %d threads", what, threads)
    try:
        return ort.InferenceSession(path, sess_options=opts, providers=["CPUExecutionProvider"])
    except Exception as e:  # onnxruntime raises its own exception types for bad files
        raise ModelError(f"cannot load ONNX model {what}: {e}") from e


def load_or_export(path: Path, export: Callable[[Path], None], settings: Settings) -> Session:
    """A session (runtime, precision, threads from `settings`) for the cached ONNX file at `path`,
    exporting it first when missing.

    A damaged cache file (disk full, manual edit) is exported again once rather than failing forever.
    `export(tmp)` writes the model to tmp; `export_atomic` moves it into place.
    """
    if not path.exists():
        export_atomic(path, export)
    try:
        return settings_session(path, settings)
    except ModelError as e:
        if not path.exists() or not _looks_damaged(e):
            raise
        log.warning("cached ONNX model %s is unusable (%s); exporting it again", path, e)
        drop_session(path)
        path.unlink(missing_ok=True)
        export_atomic(path, export)
        return settings_session(path, settings)


def _looks_damaged(e: ModelError) -> bool:
    """A load failure that a fresh export may cure (not a missing runtime package)."""
    return "not installed" not in str(e)


class LazySession:
    """A session made by `load()` on first use: once, even when threads race."""

    def __init__(self, load: Callable[[], Session]):
        self._load = load
        self._session: Optional[Session] = None
        self._lock = threading.Lock()

    @property
    def loaded(self) -> Optional[Session]:
        """The session if it was made already, else None (never loads)."""
        return self._session

    def get(self) -> Session:
        if self._session is None:
            with self._lock:
                if self._session is None:
                    self._session = self._load()
        return self._session


def describe_runtime(session: Optional[Session], settings: Settings) -> dict[str, Any]:
    """What runs (or, before the model is loaded, what would run) a model under `settings`."""
    if session is not None:
        return session.describe()
    from ..errors import PeoplemapError

    try:
        runtime, precision = resolve_runtime(settings.runtime, settings.precision)
    except PeoplemapError:
        runtime, precision = settings.runtime, settings.precision
    return {"runtime": runtime, "precision": precision,
            "threads": settings.threads if settings.threads > 0 else default_threads(), "loaded": False}
