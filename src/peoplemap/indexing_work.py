"""Where the per-file work of an index run happens, and the model thread.

- Thread workers decode files ahead of the model (Pillow and the inference runtimes release the GIL).
- Models that hold the GIL (dlib) say `parallel = "processes"`: spawned worker processes decode,
  detect and embed (`Lanes`), and only boxes and vectors come back.
- `ModelThread` runs the model on one batch while the indexing thread prepares the next one and
  commits the previous one.
"""
from __future__ import annotations

import logging
import os
import threading
import time
from collections import deque
from concurrent.futures import Future, ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Optional

import numpy as np

from .config import Settings
from .embed.base import Embedder, crop
from .errors import ImageError
from .ingest import DecodedImage, FileEntry, read_image
from .types import Region

log = logging.getLogger(__name__)


@dataclass
class Job:
    """One file to (re)process."""

    entry: FileEntry
    image_id: Optional[int]  # catalog row for this path, if any


@dataclass
class Decoded:
    """What a worker made of one file: the decoded image (thread workers), or, from process
    workers, the image's size with its regions and their vectors already computed."""

    job: Job
    sha256: str = ""
    image: Optional[DecodedImage] = None
    reason: Optional[str] = None
    regions: Optional[list[Region]] = None
    vectors: Optional[np.ndarray] = None


def decode_ahead(jobs: list[Job], embedder: Embedder, settings: Settings,
                 stages: dict[str, float]) -> Iterator[Decoded]:
    """Run the per-file work in a pool, a bounded window ahead of the consumer, in order.

    Thread workers decode (Pillow and the inference runtimes release the GIL, so decoding overlaps
    the model). Models that hold the GIL or are single-threaded (dlib) say `parallel = "processes"`:
    then each worker process decodes, detects and embeds, and only vectors come back (`Lanes`).
    """
    workers = settings.workers or (os.cpu_count() or 1)
    window = max(2 * settings.batch_size, 4 * workers)
    min_side = embedder.decode_max_side
    if not jobs:
        return
    if getattr(embedder, "parallel", "threads") == "processes" and workers > 1:
        # A worker costs about as much to start as a few files cost to do: none for a handful.
        procs = min(workers, len(jobs) // _FILES_PER_WORKER_START)
        with Lanes(jobs, embedder, settings, procs, window) as lanes:
            for i in range(len(jobs)):
                t = time.perf_counter()
                result = lanes.take(i)
                stages["decode_wait"] += time.perf_counter() - t
                yield result
        return
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="peoplemap-decode") as pool:
        queue: deque[Future[Decoded]] = deque()
        it = iter(jobs)
        for job in it:
            queue.append(pool.submit(_thread_work, job, min_side, settings))
            if len(queue) >= window:
                break
        while queue:
            t = time.perf_counter()
            result = queue.popleft().result()
            stages["decode_wait"] += time.perf_counter() - t
            nxt = next(it, None)
            if nxt is not None:
                queue.append(pool.submit(_thread_work, nxt, min_side, settings))
            yield result


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

    def __init__(self, jobs: list[Job], embedder: Embedder, settings: Settings, workers: int,
                 window: int) -> None:
        import multiprocessing

        self._jobs = jobs
        self._window = window
        self._embedder = embedder
        self._settings = settings
        self._min_side = embedder.decode_max_side
        self._next = 0
        self._taken = 0
        self._results: dict[int, Decoded] = {}
        self._error: Optional[BaseException] = None
        self._stopped = False
        self._cond = threading.Condition()
        self._ready = 0
        self._workers = workers
        self.all_ready = threading.Event()
        """Set when every worker process has loaded its model (never, with no workers)."""
        ctx = multiprocessing.get_context("spawn")
        self._pools = [ProcessPoolExecutor(max_workers=1, mp_context=ctx, initializer=process_init,
                                           initargs=(embedder.name, settings)) for _ in range(workers)]
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
    def take(self, i: int) -> Decoded:
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

    def _put(self, i: int, result: Decoded) -> None:
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
            in_flight: deque[tuple[int, Future[Decoded]]] = deque()
            exhausted = False
            while True:
                if not exhausted and len(in_flight) < self.IN_FLIGHT:
                    item = self._pull(block=not in_flight)
                    if item is _DONE:
                        exhausted = True
                    elif item is not None:
                        i, job = item
                        in_flight.append((i, pool.submit(_process_work, job, self._min_side, self._settings)))
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
                    self._put(i, _work(self._embedder, job, self._min_side, self._settings))
                    done += 1
        except BaseException as e:
            self._fail(e)
        log.debug("the indexing process worked through %d files while the workers started", done)


def _thread_work(job: Job, min_side: Optional[int], settings: Settings) -> Decoded:
    try:
        sha, img = read_image(job.entry.path, min_side=min_side, settings=settings)
        return Decoded(job, sha, img)
    except ImageError as e:
        return Decoded(job, reason=e.reason)


_PROCESS_EMBEDDER: Optional[Embedder] = None


def process_init(model: str, settings: Settings) -> None:
    global _PROCESS_EMBEDDER
    from .embed.registry import create_embedder

    _PROCESS_EMBEDDER = create_embedder(model, settings=settings)
    load = getattr(_PROCESS_EMBEDDER, "load", None)
    if load is not None:  # load the model now, so that a ready worker works at full speed at once
        load()


def _process_ready() -> bool:
    """Called once in each new worker: returns when the worker can take files."""
    return _PROCESS_EMBEDDER is not None


def _process_work(job: Job, min_side: Optional[int], settings: Settings) -> Decoded:
    """Decode, detect and embed one file in a worker process; pixels stay in the worker."""
    assert _PROCESS_EMBEDDER is not None, "worker not initialised"
    return _work(_PROCESS_EMBEDDER, job, min_side, settings)


def _work(e: Embedder, job: Job, min_side: Optional[int], settings: Settings) -> Decoded:
    """Decode, detect and embed one file; the result keeps boxes and vectors, not pixels."""
    dec = _thread_work(job, min_side, settings)
    if dec.image is None:
        return dec
    try:
        regions = e.regions(dec.image.pixels)
        crops = [crop(dec.image.pixels, r) for r in regions]
        vectors = e.embed(crops) if crops else np.zeros((0, e.dim), np.float32)
    except Exception as err:  # one odd image must not end the run: record it instead
        log.warning("model %s failed on %s: %s", e.name, job.entry.path, err)
        return Decoded(job, reason=f"model {e.name} failed on this image: {err}")
    img = dec.image
    # Boxes go back in original-image coordinates; the pixels stay here.
    boxes = [scale_box(r.box, img.scale or 1.0, img.width, img.height) for r in regions]
    light = DecodedImage(pixels=np.zeros((1, 1, 3), np.uint8), width=img.width, height=img.height,
                         format=img.format)
    return Decoded(job, dec.sha256, light, regions=[Region(b, r.score) for b, r in zip(boxes, regions)],
                    vectors=vectors)


class ModelThread:
    """Runs the model on one batch at a time in a background thread, so that while it computes,
    the indexing thread waits for decoded files, finds regions, prepares the next batch and
    commits the previous one (Pillow, numpy, SQLite and both inference runtimes release the GIL).

    Models with `preprocess(crops)` and `embed_preprocessed(x)` have the preprocessing done here,
    in the indexing thread, and only the inference in the model thread.
    """

    def __init__(self, embedder: Embedder, stages: dict[str, float]):
        self._embedder = embedder
        self._stages = stages
        self._two_phase = callable(getattr(embedder, "preprocess", None)) and callable(
            getattr(embedder, "embed_preprocessed", None))
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="peoplemap-model")

    def __enter__(self) -> "ModelThread":
        return self

    def __exit__(self, *exc: object) -> None:
        # On an error the batch in flight is finished and dropped: its vectors are never written.
        self._pool.shutdown(wait=True, cancel_futures=True)

    def submit(self, crops: list[np.ndarray]) -> "Future[np.ndarray]":
        """Vectors of these crops, computed in the model thread (at once if there are none)."""
        if not crops:
            done: Future[np.ndarray] = Future()
            done.set_result(np.zeros((0, self._embedder.dim), np.float32))
            return done
        if self._two_phase:
            t = time.perf_counter()
            x = self._embedder.preprocess(crops)  # type: ignore[attr-defined]
            self._stages["prepare"] += time.perf_counter() - t
            return self._pool.submit(self._run, self._embedder.embed_preprocessed, x)  # type: ignore[attr-defined]
        return self._pool.submit(self._run, self._embedder.embed, crops)

    def _run(self, fn: Callable[[Any], np.ndarray], x: Any) -> np.ndarray:
        t = time.perf_counter()
        vectors = fn(x)
        self._stages["embed"] += time.perf_counter() - t
        return vectors


def scale_box(box, scale: float, width: int, height: int):
    """A box found on reduced pixels, in the original image's coordinates, clipped to it."""
    if box is None:
        return None
    x, y, w, h = (float(v) / scale for v in box)
    x0, y0 = max(0, int(round(x))), max(0, int(round(y)))
    x1, y1 = min(width, int(round(x + w))), min(height, int(round(y + h)))
    return (x0, y0, max(1, x1 - x0), max(1, y1 - y0))


