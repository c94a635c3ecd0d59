"""The per-file work of an index run, where it runs, and the model thread.

`work_file` is the one per-file work: read and decode a file, detect what to embed, and embed it
(or leave the crops to be embedded in a batch by `embed_files`), with boxes converted to the
original image's coordinates here and nowhere else. One failure rule, on every path:
- a file that cannot be used keeps its ingest reason ("empty file", "truncated or corrupt", ...);
- a model that raises on one file (anything but ModelError) is recorded for that file as
  "model NAME failed on this image: ..." and the run goes on;
- a ModelError, or vectors of the wrong shape or not finite, ends the run (ModelError).
The paths:
- threads (`work_ahead`): a pool decodes and detects ahead of the consumer (Pillow, OpenCV and the
  inference runtimes release the GIL); `ModelThread` embeds one batch at a time while the indexing
  thread prepares the next batch and commits the previous one;
- processes (`Lanes`), for models that hold the GIL (`parallel = "processes"`, dlib): spawned
  worker processes do the whole work and only boxes and vectors come back;
- Ray (`engine_ray.EmbedBatch`): decode and detect per file, one `embed_files` call per batch.
"""
from __future__ import annotations

import importlib
import logging
import os
import sys
import threading
import time
from collections import deque
from concurrent.futures import Future, ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Callable, Iterator, Optional, Sequence

import numpy as np

from .config import Settings
from .embed.base import Model, crop
from .errors import ImageError, ModelError
from .ingest import FileEntry, read_image
from .store.records import PhotoMeta
from .types import Box, Region

log = logging.getLogger(__name__)


@dataclass
class Job:
    """One file to (re)process."""

    entry: FileEntry
    image_id: Optional[int]  # catalog row for this path, if any


@dataclass
class FileResult:
    """What the per-file work made of one file: the reason it cannot be used, or its size, its
    regions and, once embedded, their vectors. Holds no pixels once embedded."""

    job: Job
    sha256: str = ""
    width: int = 0
    height: int = 0
    format: str = ""
    reason: Optional[str] = None
    regions: list[Region] = field(default_factory=list)
    """Boxes in the pixels of the EXIF-oriented original (None: the whole image); no crops."""
    crops: Optional[list[np.ndarray]] = field(default=None, repr=False)
    """The pixels to embed, one per region, until `embed_files` has run."""
    vectors: Optional[np.ndarray] = field(default=None, repr=False)
    """(len(regions), dim) float32, L2-normalised, once embedded."""
    decode_s: float = 0.0
    detect_s: float = 0.0
    embed_s: float = 0.0
    meta: Optional[PhotoMeta] = None
    """Date, orientation and place from the file's metadata (peoplemap.metadata)."""
    names: list[Optional[str]] = field(default_factory=list)
    """The name a face region in the metadata gives each region (empty: none named)."""

    @property
    def needs_vectors(self) -> bool:
        return self.reason is None and self.vectors is None


# -- the per-file work -----------------------------------------------------------------------------
def work_file(model: Model, job: Job, settings: Settings, *, embed: bool = True) -> FileResult:
    """Decode, detect and embed one file under the failure rule above. embed=False leaves the
    crops for `embed_files`, so that a caller can embed many files in one model call."""
    t = time.perf_counter()
    try:
        sha, img = read_image(job.entry.path, min_side=model.decode_max_side, settings=settings)
    except ImageError as e:
        return FileResult(job, reason=e.reason, decode_s=time.perf_counter() - t)
    t_detect = time.perf_counter()
    result = FileResult(job, sha, img.width, img.height, img.format, decode_s=t_detect - t)
    try:
        found = model.detect(img.pixels)
        crops = [crop(img.pixels, r) for r in found]
    except ModelError:
        raise
    except Exception as err:  # one odd image must not end the run: record it instead
        _failed(model, result, err)
        return result
    scale = img.scale  # found on pixels that may be draft-reduced
    result.regions = [Region(scale_box(r.box, scale, img.width, img.height), float(r.score))
                      for r in found]
    result.crops = crops
    _with_metadata(model, job, result, img, settings)
    result.detect_s = time.perf_counter() - t_detect
    if embed:
        embed_files(model, [result])
    return result


def _with_metadata(model: Model, job: Job, result: FileResult, img: Any, settings: Settings) -> None:
    """The photo's date, orientation and place, and (face models, Settings.import_regions) its face
    regions: each named region names the detected face it overlaps, or becomes a face of its own,
    as does an unnamed region no face was detected in (a face the detector missed)."""
    from .metadata import faces_from_regions, read_photo

    want_regions = settings.import_regions and model.item_kind == "face"
    try:
        result.meta, regions = read_photo(job.entry.path, img.width, img.height, settings,
                                          regions=want_regions)
    except Exception as err:  # metadata never costs a photo
        log.warning("metadata of %s not read: %s", job.entry.path, err)
        return
    if not regions:
        return
    names, extra = faces_from_regions(regions, [r.box for r in result.regions])
    for fr in extra:
        x, y, w, h = (v * img.scale for v in fr.box)
        pixels = img.pixels[int(y):int(round(y + h)), int(x):int(round(x + w))]
        if min(pixels.shape[:2]) < 8:
            continue  # too small to say anything about at the decoded size
        result.regions.append(Region(fr.box, 1.0))
        assert result.crops is not None
        result.crops.append(np.ascontiguousarray(pixels))
        names.append(fr.name)
    result.names = names


def embed_files(model: Model, files: Sequence[FileResult],
                batch: Optional[Callable[[], np.ndarray]] = None) -> None:
    """Vectors for the crops of these files, set in place: one model call for all of them (`batch`,
    else `model.embed`); if it raises anything but ModelError, one call per file, so that a file the
    model cannot take is recorded (failure rule above) and the others keep their vectors."""
    todo = []
    for f in files:
        if not f.needs_vectors:
            continue
        if f.crops:
            todo.append(f)
        else:
            f.vectors = np.zeros((0, model.dim), np.float32)
            f.crops = None
    if not todo:
        return
    t = time.perf_counter()
    sizes = [len(f.crops or ()) for f in todo]
    try:
        X = batch() if batch is not None else model.embed([c for f in todo for c in f.crops or ()])
    except ModelError:
        raise
    except Exception as err:
        if len(todo) == 1 and batch is None:
            _failed(model, todo[0], err)
        else:
            for f in todo:
                _embed_alone(model, f)
    else:
        X = checked_vectors(model, X, sum(sizes))
        at = 0
        for f, n in zip(todo, sizes):
            f.vectors, f.crops = X[at:at + n], None
            at += n
    each = (time.perf_counter() - t) / len(todo)
    for f in todo:
        f.embed_s += each


def _embed_alone(model: Model, f: FileResult) -> None:
    try:
        X = model.embed(f.crops or [])
    except ModelError:
        raise
    except Exception as err:
        _failed(model, f, err)
        return
    f.vectors, f.crops = checked_vectors(model, X, len(f.crops or ())), None


def _failed(model: Model, f: FileResult, err: BaseException) -> None:
    log.warning("model %s failed on %s: %s", model.name, f.job.entry.path, err)
    f.reason = f"model {model.name} failed on this image: {err}"
    f.regions, f.crops, f.vectors = [], None, None


def checked_vectors(model: Model, X: Any, n: int) -> np.ndarray:
    """X as (n, dim) float32, or ModelError when the model returned another shape or non-finite
    values (a broken model, not a bad image: the run ends)."""
    X = np.asarray(X)
    if X.shape != (n, model.dim) or X.dtype.kind not in "fiu" or not np.isfinite(X).all():
        raise ModelError(f"model {model.name} returned {X.shape} {X.dtype} / non-finite vectors "
                         f"for {n} crops of dimension {model.dim}")
    return np.ascontiguousarray(X, dtype=np.float32)


def scale_box(box: Optional[Box], scale: float, width: int, height: int) -> Optional[Box]:
    """A box found on reduced pixels, in the original image's coordinates, clipped to it."""
    if box is None:
        return None
    x, y, w, h = (float(v) / scale for v in box)
    x0, y0 = max(0, int(round(x))), max(0, int(round(y)))
    x1, y1 = min(width, int(round(x + w))), min(height, int(round(y + h)))
    return (x0, y0, max(1, x1 - x0), max(1, y1 - y0))


def open_model(name: str, settings: Settings, module: Optional[str] = None) -> Model:
    """The model `name`, loaded, in a worker (process or Ray actor). `module` is the module that
    defines it, imported first so that models registered outside peoplemap are known there too."""
    from .embed.registry import create_embedder

    if module and module not in sys.modules:
        try:
            importlib.import_module(module)
        except ImportError as e:
            raise ModelError(f"model {name!r} is defined in module {module!r}, which this worker "
                             f"cannot import: {e}") from e
    model = create_embedder(name, settings=settings)
    model.load()  # now, so that a ready worker works at full speed at once
    return model


# -- where it runs -------------------------------------------------------------------------------
def work_ahead(jobs: list[Job], model: Model, settings: Settings,
               stages: dict[str, float]) -> Iterator[FileResult]:
    """Run the per-file work in a pool, a bounded window ahead of the consumer, in order: decode
    and detect in threads (crops left for `ModelThread`), or, for `parallel = "processes"` models,
    the whole work in worker processes (`Lanes`)."""
    workers = settings.workers or (os.cpu_count() or 1)
    window = max(2 * settings.batch_size, 4 * workers)
    if not jobs:
        return
    if model.parallel == "processes" and workers > 1:
        # A worker costs about as much to start as a few files cost to do: none for a handful.
        procs = min(workers, len(jobs) // _FILES_PER_WORKER_START)
        with Lanes(jobs, model, settings, procs, window) as lanes:
            for i in range(len(jobs)):
                t = time.perf_counter()
                result = lanes.take(i)
                stages["decode_wait"] += time.perf_counter() - t
                _add_times(stages, result)
                yield result
        return
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="peoplemap-decode") as pool:
        queue: deque[Future[FileResult]] = deque()
        it = iter(jobs)
        for job in it:
            queue.append(pool.submit(work_file, model, job, settings, embed=False))
            if len(queue) >= window:
                break
        while queue:
            t = time.perf_counter()
            result = queue.popleft().result()
            stages["decode_wait"] += time.perf_counter() - t
            nxt = next(it, None)
            if nxt is not None:
                queue.append(pool.submit(work_file, model, nxt, settings, embed=False))
            _add_times(stages, result)
            yield result


def _add_times(stages: dict[str, float], result: FileResult) -> None:
    """Worker seconds of a file (embedding only when a worker process did it)."""
    stages["detect"] += result.detect_s
    stages["embed"] += result.embed_s


_FILES_PER_WORKER_START = 8
"""Start one worker process per this many files at most: a face worker takes about 1 s to start
(Python, imports, dlib models) and does about 10 files a second."""

_DONE = object()
"""`Lanes._pull`: no file is left (or the run stopped)."""


class Lanes:
    """Per-file work (decode, detect, embed) of a process-parallel model on `workers` spawned worker
    processes, each fed by a thread here that pulls files from one shared list, so a fast worker
    is never held up by a slow one. Results come out in file order, at most `window` files ahead
    of the consumer.

    A worker needs about a second to start Python and load its model; until every worker has, the
    indexing process, whose model is loaded already, works through files as one more lane. After
    that it stops, so that it only collects results and writes: with dlib holding the GIL, work
    in this process would stall the threads feeding the workers. With no worker processes
    (workers=0, for a handful of files) it does every file.
    """

    IN_FLIGHT = 2
    """Files queued per worker process, so it never waits for this process to hand it the next."""

    def __init__(self, jobs: list[Job], model: Model, settings: Settings, workers: int,
                 window: int) -> None:
        import multiprocessing

        self._jobs = jobs
        self._window = window
        self._model = model
        self._settings = settings
        self._next = 0
        self._taken = 0
        self._results: dict[int, FileResult] = {}
        self._error: Optional[BaseException] = None
        self._stopped = False
        self._cond = threading.Condition()
        self._ready = 0
        self._workers = workers
        self.all_ready = threading.Event()
        """Set when every worker process has loaded its model (never, with no workers)."""
        ctx = multiprocessing.get_context("spawn")
        self._pools = [ProcessPoolExecutor(max_workers=1, mp_context=ctx, initializer=process_init,
                                           initargs=(model.name, settings, type(model).__module__)) for _ in range(workers)]
        self._threads = [threading.Thread(target=self._feed, args=(pool,), name=f"peoplemap-lane-{k}",
                                          daemon=True) for k, pool in enumerate(self._pools)]
        self._threads.append(threading.Thread(target=self._work_here, name="peoplemap-lane-local",
                                              daemon=True))
        for t in self._threads:
            t.start()

    def __enter__(self) -> "Lanes":
        return self

    def __exit__(self, *exc: object) -> None:
        with self._cond:
            self._stopped = True
            self._cond.notify_all()
        for t in self._threads:
            t.join()
        for pool in self._pools:
            pool.shutdown(wait=True, cancel_futures=True)

    # -- the consumer ----------------------------------------------------------------------------
    def take(self, i: int) -> FileResult:
        """The result of file i (files are taken in order); re-raises a lane's failure."""
        with self._cond:
            while i not in self._results and self._error is None:
                self._cond.wait()
            if self._error is not None:
                raise self._error
            self._taken = i + 1
            self._cond.notify_all()
            return self._results.pop(i)

    # -- the lanes -------------------------------------------------------------------------------
    def _pull(self, block: bool = True, timeout: Optional[float] = None) -> Any:
        """(index, job) of the next file; None when non-blocking (or timed out) and the window is
        full; _DONE when no file is left or the run stopped."""
        with self._cond:
            while True:
                if self._stopped or self._next >= len(self._jobs):
                    return _DONE
                if self._next < self._taken + self._window:
                    i = self._next
                    self._next += 1
                    return i, self._jobs[i]
                if not block or not self._cond.wait(timeout):
                    return None

    def _put(self, i: int, result: FileResult) -> None:
        with self._cond:
            self._results[i] = result
            self._cond.notify_all()

    def _fail(self, e: BaseException) -> None:
        with self._cond:
            if self._error is None:
                self._error = e
            self._stopped = True
            self._cond.notify_all()

    def _feed(self, pool: ProcessPoolExecutor) -> None:
        """Keep one worker process busy with files until none is left."""
        try:
            pool.submit(_process_ready).result()  # spawned, imported, model loaded
            with self._cond:
                self._ready += 1
                if self._ready == self._workers:
                    self.all_ready.set()
                    log.debug("all %d worker processes ready after %d files", self._workers, self._next)
            in_flight: deque[tuple[int, Future[FileResult]]] = deque()
            exhausted = False
            while True:
                if not exhausted and len(in_flight) < self.IN_FLIGHT:
                    item = self._pull(block=not in_flight)
                    if item is _DONE:
                        exhausted = True
                    elif item is not None:
                        i, job = item
                        in_flight.append((i, pool.submit(_process_work, job, self._settings)))
                        continue
                if not in_flight:
                    return
                i, future = in_flight.popleft()
                self._put(i, future.result())
        except BaseException as e:  # a worker that cannot start (broken install, killed): end the run
            self._fail(e)

    def _work_here(self) -> None:
        """Work through files in this process until every worker process is ready."""
        done = 0
        try:
            while not self.all_ready.is_set():
                item = self._pull(timeout=0.05)
                if item is _DONE:
                    break
                if item is not None:
                    i, job = item
                    self._put(i, work_file(self._model, job, self._settings))
                    done += 1
        except BaseException as e:
            self._fail(e)
        log.debug("the indexing process worked through %d files while the workers started", done)


_PROCESS_MODEL: Optional[Model] = None


def process_init(model: str, settings: Settings, module: Optional[str] = None) -> None:
    """Start of a worker process: create and load the model (see `open_model`)."""
    global _PROCESS_MODEL
    _PROCESS_MODEL = open_model(model, settings, module)


def _process_ready() -> bool:
    """Called once in each new worker: returns when the worker can take files."""
    return _PROCESS_MODEL is not None


def _process_work(job: Job, settings: Settings) -> FileResult:
    """The per-file work in a worker process; pixels stay in the worker."""
    assert _PROCESS_MODEL is not None, "worker not initialised"
    return work_file(_PROCESS_MODEL, job, settings)


class ModelThread:
    """Embeds one batch at a time in a background thread, so that while the model computes, the
    indexing thread waits for decoded files, prepares the next batch and commits the previous one
    (Pillow, numpy, SQLite and both inference runtimes release the GIL).

    Two-phase models (`two_phase = True`) have `preprocess` done here, in the indexing thread, and
    only `embed_preprocessed` in the model thread.
    """

    def __init__(self, model: Model, stages: dict[str, float]):
        self._model = model
        self._stages = stages
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="peoplemap-model")

    def __enter__(self) -> "ModelThread":
        return self

    def __exit__(self, *exc: object) -> None:
        # On an error the batch in flight is finished and dropped: its vectors are never written.
        self._pool.shutdown(wait=True, cancel_futures=True)

    def submit(self, files: Sequence[FileResult]) -> "Future[None]":
        """Embed the crops of these files (`embed_files`) in the model thread; the future is done
        when every file has its vectors or its reason (at once when there is nothing to embed)."""
        todo = [f for f in files if f.needs_vectors]
        crops = [c for f in todo for c in f.crops or ()]
        if not crops:
            embed_files(self._model, todo)  # no model call: every file has no region
            done: Future[None] = Future()
            done.set_result(None)
            return done
        batch: Optional[Callable[[], np.ndarray]] = None
        if self._model.two_phase:
            t = time.perf_counter()
            try:
                x = self._model.preprocess(crops)
            except ModelError:
                raise
            except Exception as err:  # a crop it cannot take: embed_files goes file by file
                batch = partial(_raise, err)
            else:
                batch = partial(self._model.embed_preprocessed, x)
            self._stages["prepare"] += time.perf_counter() - t
        return self._pool.submit(self._run, todo, batch)

    def _run(self, files: list[FileResult], batch: Optional[Callable[[], np.ndarray]]) -> None:
        t = time.perf_counter()
        embed_files(self._model, files, batch)
        self._stages["embed"] += time.perf_counter() - t


def _raise(err: BaseException) -> np.ndarray:
    raise err
