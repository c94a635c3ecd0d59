"""Index runs whose decode and embed stages run on a Ray cluster (`--engine ray`).

Only the per-file work moves: the driver (this process) scans the folder and diffs it against the
catalog exactly as a local run does, hands the files to process to Ray Data, and writes what comes
back through the local run's own `indexing.write_results`, in file order and in the same batches,
so the library ends up with the same rows (item ids included) as after a local run.

On the cluster, `map_batches` over an actor pool does the work: each actor loads the model once,
then runs the local run's per-file work (`indexing_work.work_file`: read, hash, decode, detect,
boxes in original-image coordinates) on the files of a batch and embeds all their crops in one
model call (`embed_files`), so the reasons recorded for unusable files and the failure rule are
the local ones. Only boxes, scores and vectors travel back.

Faults: Ray restarts an actor whose process dies and retries its batch (`max_task_retries`); a
batch that kills its worker every time ends the run with an error. The catalog is written only
here, one transaction per batch, so a run that stops for any reason keeps what it committed and
the next run does the rest, like a local run.

Ray is an optional extra (`pip install 'peoplemap[ray]'`); nothing here imports it until a Ray
run starts. Every node needs peoplemap with the model's extra installed and the photos at the
same path (a shared filesystem).
"""
from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Iterator, Optional

import numpy as np

from .config import Settings
from .embed.base import Model
from .errors import InputError, ModelError, PeoplemapError
from .indexing import IndexSummary, diff_folder, finish_run, write_results
from .indexing_work import FileResult, Job, embed_files, open_model, work_file
from .ingest import FileEntry
from .store.records import PhotoMeta
from .types import ProgressCallback, Region, no_progress

if TYPE_CHECKING:
    from .library import Library

log = logging.getLogger(__name__)

INSTALL_HINT = "pip install 'peoplemap[ray]'"
ENGINES = ("local", "ray")


class EngineError(PeoplemapError):
    """Ray missing, a cluster that cannot be reached, or a Ray run that failed."""


@dataclass(frozen=True)
class RayOptions:
    """How an index run uses a Ray cluster."""

    address: Optional[str] = None
    """Cluster to join ("HOST:PORT"); None: RAY_ADDRESS, else the cluster `ray start` started on this
    machine, else a one-machine Ray started for this run (Ray's own rules)."""
    workers: Optional[int] = None
    """Model actors; None: as many as the cluster's CPUs (GPUs, with gpus_per_worker) hold."""
    cpus_per_worker: float = 1.0
    """CPUs each actor reserves; its inference and decode threads follow this number."""
    gpus_per_worker: float = 0.0
    """GPUs each actor reserves (Ray's num_gpus), for clusters with GPUs."""
    batch_files: Optional[int] = None
    """Files per Ray batch (one model call per batch); None: settings.batch_size."""
    max_task_retries: int = 3
    """How often a batch is retried after its worker died before the run fails."""

    def __post_init__(self) -> None:
        if self.workers is not None and (isinstance(self.workers, bool) or self.workers < 1):
            raise InputError(f"Ray workers must be an integer >= 1, got {self.workers!r}")
        if not self.cpus_per_worker > 0:
            raise InputError(f"cpus_per_worker must be > 0, got {self.cpus_per_worker!r}")
        if self.gpus_per_worker < 0:
            raise InputError(f"gpus_per_worker must be >= 0, got {self.gpus_per_worker!r}")
        if self.batch_files is not None and self.batch_files < 1:
            raise InputError(f"batch_files must be >= 1, got {self.batch_files!r}")
        if self.max_task_retries < 0:
            raise InputError(f"max_task_retries must be >= 0, got {self.max_task_retries!r}")


def resolve_engine(engine: "str | RayOptions", ray_address: Optional[str] = None) -> Optional[RayOptions]:
    """None for a local run, else the RayOptions of a Ray run; InputError for anything else."""
    if isinstance(engine, RayOptions):
        return replace(engine, address=ray_address) if ray_address else engine
    if engine == "local":
        if ray_address:
            raise InputError("a Ray address was given for a local run; add --engine ray to use it")
        return None
    if engine == "ray":
        return RayOptions(address=ray_address)
    raise InputError(f"Unknown engine: {engine!r}. Must be one of {list(ENGINES)}")


def require_ray() -> Any:
    """The `ray` module with Ray Data, or EngineError with the install hint."""
    try:
        import ray
        import ray.data  # noqa: F401  (Ray Data needs the [data] extra: pyarrow, pandas)
    except ImportError as e:
        raise EngineError(f"--engine ray needs Ray with Ray Data, which is not installed ({e}). "
                          f"Install it with: {INSTALL_HINT} (on every node of the cluster)") from None
    return ray


# -- the driver ----------------------------------------------------------------------------------
def index_folder_ray(lib: "Library", folder: str, embedder: Model, *, options: RayOptions,
                     rebuild: bool = False, progress: ProgressCallback = no_progress) -> IndexSummary:
    """`indexing.index_folder` with the decode, detect and embed stages on a Ray cluster."""
    ray = require_ray()
    root = os.path.abspath(os.path.expanduser(str(folder)))
    if not os.path.isdir(root):
        raise InputError(f"{folder!r} is not a folder")
    t_start = time.perf_counter()
    stages = {"scan": 0.0, "ray_start": 0.0, "decode": 0.0, "detect": 0.0, "embed": 0.0,
              "ray_wait": 0.0, "write": 0.0}
    summary = IndexSummary(folder=root, model=embedder.name)
    set_id = lib.ensure_vector_set(embedder, rebuild=rebuild)

    t = time.perf_counter()
    plan = diff_folder(lib, root, set_id, summary)
    stages["scan"] = time.perf_counter() - t
    log.info("index %s with %s on Ray: %d files, %d to process, %d gone", root, embedder.name,
             summary.files_seen, len(plan.jobs), len(plan.gone_images))

    total = len(plan.jobs)
    progress("index", 0, total)
    if plan.jobs:
        with _session(ray, options.address, stages):
            results = decode_on_ray(plan.jobs, embedder, lib.settings, options, stages)
            try:
                _write_all(lib, set_id, embedder, results, summary, stages, progress, total)
            finally:
                results.close()  # stop Ray Data's execution before the session ends

    return finish_run(lib, root, plan, summary, stages, t_start)


def _write_all(lib: "Library", set_id: int, embedder: Model, results: Iterator[FileResult],
               summary: IndexSummary, stages: dict[str, float], progress: ProgressCallback,
               total: int) -> None:
    """Plan and commit the results in the local run's batches, so that item ids and the reuse of
    identical content come out as after a local run."""
    write_results(lib, set_id, embedder, results, summary, stages, progress, total)


@contextmanager
def _session(ray: Any, address: Optional[str], stages: dict[str, float]) -> Iterator[None]:
    """Connect to the cluster (or start a one-machine Ray) for this run, unless one is connected."""
    if ray.is_initialized():  # the caller's own Ray session: use it, leave it running
        yield
        return
    t = time.perf_counter()
    try:
        # log_to_driver=False: library code never prints; the workers' logs stay in Ray's log files.
        ray.init(address=address, log_to_driver=False, logging_level=logging.WARNING,
                 configure_logging=False)
    except (ConnectionError, RuntimeError, ValueError) as e:
        where = f"the Ray cluster at {address!r}" if address else "Ray"
        raise EngineError(f"cannot start or join {where}: {_first_line(e)}. Start a cluster with "
                          "`ray start --head` and pass --ray-address HOST:PORT (or set RAY_ADDRESS), "
                          "or leave the address out to run Ray on this machine only") from None
    stages["ray_start"] += time.perf_counter() - t
    try:
        yield
    finally:
        ray.shutdown()


def _first_line(e: BaseException) -> str:
    return (str(e).strip().splitlines() or [type(e).__name__])[0]


def _pool_size(ray: Any, options: RayOptions, n_batches: int) -> int:
    if options.workers is not None:
        return min(options.workers, n_batches)
    res = ray.cluster_resources()
    n = int(res.get("CPU", 1) // options.cpus_per_worker)
    if options.gpus_per_worker:
        n = min(n, int(res.get("GPU", 0) // options.gpus_per_worker))
        if n < 1:
            raise EngineError(f"the Ray cluster has {res.get('GPU', 0)} GPUs; "
                              f"{options.gpus_per_worker} per worker were asked for")
    return max(1, min(n, n_batches))


WINDOW = 500_000
"""Files per Ray Data run: a run's file list lives in the object store and its results wait for
the driver in file order, so a very large job is cut into runs of this many files (each starts its
actors afresh: seconds, against the tens of minutes a window takes on a cluster)."""


def decode_on_ray(jobs: list[Job], embedder: Model, settings: Settings, options: RayOptions,
                  stages: dict[str, float]) -> Iterator[FileResult]:
    """`indexing_work.work_ahead` on Ray: per file, in file order, its boxes and vectors (or the
    reason it could not be used), computed by an actor pool. Needs a connected Ray session."""
    ray = require_ray()
    for a in range(0, len(jobs), WINDOW):
        yield from _decode_window(ray, jobs[a:a + WINDOW], embedder, settings, options, stages)


def _decode_window(ray: Any, jobs: list[Job], embedder: Model, settings: Settings,
                   options: RayOptions, stages: dict[str, float]) -> Iterator[FileResult]:
    import ray.data

    per_batch = options.batch_files or settings.batch_size
    n_batches = math.ceil(len(jobs) / per_batch)
    size = _pool_size(ray, options, n_batches)
    threads = max(1, int(options.cpus_per_worker))
    worker_settings = replace(settings, threads=threads, workers=threads)
    log.info("Ray: %d files in %d batches on %d model actors (%s CPU, %s GPU each)", len(jobs),
             n_batches, size, options.cpus_per_worker, options.gpus_per_worker)
    # One block per batch and one task per block (batch_size=None), in file order: results stream
    # back batch by batch. Paths as bytes: a file name need not be valid UTF-8 (Arrow strings are).
    rows = [{"i": k, "path": os.fsencode(j.entry.path)} for k, j in enumerate(jobs)]
    ds = _map(ray.data.from_items(rows, override_num_blocks=n_batches), EmbedBatch,
              fn_constructor_args=(embedder.name, worker_settings, type(embedder).__module__),
              compute=ray.data.ActorPoolStrategy(size=size), batch_size=None, batch_format="numpy",
              num_cpus=options.cpus_per_worker, num_gpus=options.gpus_per_worker or None,
              max_task_retries=options.max_task_retries)
    ctx = ds.context
    ctx.execution_options.preserve_order = True  # results in file order: the same ids as locally
    ctx.enable_progress_bars = False  # library code never prints; progress goes to the callback
    _quiet_progress_notice()
    ctx.print_on_execution_start = False
    ctx.enable_auto_log_stats = False

    waiting: dict[int, FileResult] = {}
    nxt = 0
    it = iter(ds.iter_batches(batch_size=None, batch_format="pyarrow", prefetch_batches=2))
    while True:
        t = time.perf_counter()
        try:
            table = next(it, None)
        except PeoplemapError:
            raise
        except Exception as e:  # Ray's own errors: a batch that failed all its retries, a lost cluster
            log.debug("Ray run failed", exc_info=True)
            raise EngineError(f"the Ray run failed: {_first_line(e)}. Work committed so far is kept; "
                              "run the command again to continue") from e
        stages["ray_wait"] += time.perf_counter() - t
        if table is None:
            break
        log.debug("Ray: %d results after %.1f s waiting in all", table.num_rows, stages["ray_wait"])
        for i, dec, secs in _decode_rows(table, jobs, embedder.dim):
            for k, v in secs.items():
                stages[k] += v
            if i < nxt or i in waiting:
                raise EngineError(f"Ray returned file {jobs[i].entry.path!r} twice")
            waiting[i] = dec
        while nxt in waiting:  # in order already (preserve_order); this only guards it
            yield waiting.pop(nxt)
            nxt += 1
    if nxt != len(jobs):
        raise EngineError(f"Ray returned results for {nxt + len(waiting)} of {len(jobs)} files")


class _DropNotice(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("Progress bars disabled")


def _quiet_progress_notice() -> None:
    """Ray Data warns on the console that its progress bars are off; they are off on purpose
    (progress goes to the callback), so that one notice is dropped."""
    logger = logging.getLogger("ray.data._internal.progress")
    if not any(isinstance(f, _DropNotice) for f in logger.filters):
        logger.addFilter(_DropNotice())


def _map(ds: Any, fn: Any, *, max_task_retries: int, **kwargs: Any) -> Any:
    """ds.map_batches(fn, ...) with a bound on the retries of a batch whose worker died.

    Ray Data retries such a batch forever by default, so a file that crashes its worker every time
    (a decoder bug) would stall the run; bounded, the run ends with an error naming the failure.
    Ray 2.60 takes the bound only as a deprecated extra remote argument: the warning is silenced,
    and a Ray that no longer takes it gets its default."""
    import warnings

    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*ray_remote_args.*deprecated")
            return ds.map_batches(fn, max_task_retries=max_task_retries,
                                  allow_out_of_order_execution=False, **kwargs)
    except TypeError:
        log.warning("this Ray does not take max_task_retries: a failing batch is retried by "
                    "Ray's default rule")
        return ds.map_batches(fn, **kwargs)


_TIMES = ("decode", "detect", "embed")


def _decode_rows(table: Any, jobs: list[Job],
                 dim: int) -> Iterator[tuple[int, FileResult, dict[str, float]]]:
    """(file index, the file's result as the per-file work made it, worker seconds) per row of actor
    output; ModelError when an actor's model failed in a way that ends the run."""
    cols = table.to_pydict()
    errors = cols.get("error")
    for r in range(table.num_rows):
        if errors is not None and errors[r] is not None:
            raise ModelError(errors[r])
        i = int(cols["i"][r])
        job = jobs[i]
        secs = {k: float(cols[f"{k}_s"][r]) for k in _TIMES}
        reason = cols["reason"][r]
        if reason is not None:
            res = FileResult(job, reason=reason.decode("utf-8", "surrogatepass"))
        else:
            regions = [Region(None if b is None else tuple(int(v) for v in b), float(s))
                       for b, s in json.loads(cols["regions"][r])]
            vectors = np.frombuffer(cols["vectors"][r], dtype=np.float32).reshape(len(regions), dim)
            res = FileResult(job, cols["sha256"][r], int(cols["width"][r]), int(cols["height"][r]),
                             cols["format"][r], regions=regions, vectors=vectors.copy())
            _with_meta(res, cols["meta"][r] if "meta" in cols else None)
        yield i, res, secs


def _meta_json(res: FileResult) -> str:
    """What the photo's metadata said (peoplemap.metadata), for the trip back to the driver."""
    return json.dumps({"names": res.names,
                       "meta": None if res.meta is None else dataclasses.asdict(res.meta)})


def _with_meta(res: FileResult, text: Optional[str]) -> None:
    if not text:
        return
    d = json.loads(text)
    res.names = list(d.get("names") or [])
    m = d.get("meta")
    if m:
        m["sidecar_problems"] = [tuple(p) for p in m.get("sidecar_problems", [])]
        res.meta = PhotoMeta(**m)


# -- the actors ----------------------------------------------------------------------------------
class EmbedBatch:
    """A Ray Data actor: loads the model once, then runs the per-file work on batches of files
    (decode and detect per file in threads, one model call per batch). Returns one row per file:
    boxes and vectors in the original image's coordinates, or the reason the file could not be used
    (the same reasons as a local run); a ModelError that ends the run comes back in `error`."""

    def __init__(self, model: str, settings: Settings, module: Optional[str] = None) -> None:
        self._e = open_model(model, settings, module)
        self._settings = settings
        self._pool = ThreadPoolExecutor(max_workers=max(1, settings.workers),
                                        thread_name_prefix="peoplemap-ray-decode")

    def __call__(self, batch: dict[str, np.ndarray]) -> Any:
        import pyarrow as pa

        e = self._e
        idx = [int(i) for i in batch["i"]]
        jobs = [Job(FileEntry(os.fsdecode(bytes(p)), 0, 0.0), None) for p in batch["path"]]
        n = len(jobs)
        error: Optional[str] = None
        results = [FileResult(j) for j in jobs]
        try:
            results = list(self._pool.map(lambda j: work_file(e, j, self._settings, embed=False), jobs))
            embed_files(e, results)
        except ModelError as err:  # ends the run: sent back, raised by the driver
            error = str(err)

        shas, widths, heights, formats, regs, vecs, why, metas = [], [], [], [], [], [], [], []
        for res in results:
            ok = error is None and res.reason is None
            shas.append(res.sha256 if ok else None)
            widths.append(res.width if ok else None)
            heights.append(res.height if ok else None)
            formats.append(res.format if ok else None)
            if ok:
                regs.append(json.dumps([[None if r.box is None else list(r.box), float(r.score)]
                                        for r in res.regions]))
                vecs.append(np.ascontiguousarray(res.vectors, dtype=np.float32).tobytes())
                why.append(None)
                metas.append(_meta_json(res))
            else:
                regs.append(None)
                vecs.append(None)
                metas.append(None)
                why.append(None if res.reason is None else res.reason.encode("utf-8", "surrogatepass"))
        return pa.table({
            "i": pa.array(idx, pa.int64()),
            "sha256": pa.array(shas, pa.string()),
            "width": pa.array(widths, pa.int64()),
            "height": pa.array(heights, pa.int64()),
            "format": pa.array(formats, pa.string()),
            "regions": pa.array(regs, pa.string()),
            "vectors": pa.array(vecs, pa.binary()),
            "reason": pa.array(why, pa.binary()),
            "meta": pa.array(metas, pa.string()),
            "error": pa.array([error] * n, pa.string()),
            "decode_s": pa.array([r.decode_s for r in results], pa.float64()),
            "detect_s": pa.array([r.detect_s for r in results], pa.float64()),
            "embed_s": pa.array([r.embed_s for r in results], pa.float64()),
        })
