"""One index run: scan a folder, work out what is new, changed or gone, decode, embed, write.

Work is committed in batches, each in one SQLite transaction, so a run killed at any point leaves a
whole library and the next run redoes at most the batch that was in flight. Decoding runs in a
thread pool ahead of the model (Pillow and onnxruntime release the GIL), so the model rarely waits.
"""
from __future__ import annotations

import logging
import os
import time
from collections import deque
from concurrent.futures import Future, ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Iterator, Optional

import numpy as np

from .catalog import Catalog, vector_to_blob
from .config import Settings
from .embed.base import Embedder, crop
from .errors import ImageError, InputError
from .ingest import DecodedImage, FileEntry, Skipped, read_image, scan
from .types import ProgressCallback, Region, no_progress

if TYPE_CHECKING:
    from .library import Library

log = logging.getLogger(__name__)


@dataclass
class IndexSummary:
    folder: str
    model: str
    files_seen: int = 0
    new: int = 0
    """Files this model had not processed yet (new files, or known files new to this model)."""
    changed: int = 0
    unchanged: int = 0
    removed: int = 0
    reused: int = 0
    """Files whose identical content was already embedded (copies, moves): vectors reused."""
    items_added: int = 0
    images_without_items: int = 0
    skipped: list[Skipped] = field(default_factory=list)
    """Files that could not be used, with the reason (this run's and earlier unchanged ones)."""
    seconds: float = 0.0
    stage_seconds: dict[str, float] = field(default_factory=dict)

    def to_json(self) -> dict:
        d = asdict(self)
        d["skipped"] = [{"path": s.path, "reason": s.reason} for s in self.skipped]
        return d


@dataclass
class _Job:
    entry: FileEntry
    image_id: Optional[int]  # catalog row for this path, if any


@dataclass
class _Decoded:
    """What a worker made of one file: the decoded image (thread workers), or, from process
    workers, the image's size with its regions and their vectors already computed."""

    job: _Job
    sha256: str = ""
    image: Optional[DecodedImage] = None
    reason: Optional[str] = None
    regions: Optional[list[Region]] = None
    vectors: Optional[np.ndarray] = None


@dataclass
class _Pending:
    """An image waiting for its batch to be embedded and written."""

    job: _Job
    sha256: str
    image: DecodedImage
    regions: list[Region]
    reuse_from: Optional[int] = None  # image id whose items/vectors to copy (same content)
    vectors: Optional[np.ndarray] = None  # computed by a process worker


def _under(root: str) -> tuple[str, str]:
    """SQL LIKE-free range bounds for paths under root (root + sep ... root + sep + max)."""
    prefix = root.rstrip(os.sep) + os.sep
    return prefix, prefix + "\U0010ffff"


def index_folder(lib: "Library", folder: str, embedder: Embedder, *, rebuild: bool = False,
                 progress: ProgressCallback = no_progress) -> IndexSummary:
    """Bring the library up to date with `folder` for this embedder's vector set."""
    root = os.path.abspath(os.path.expanduser(str(folder)))
    if not os.path.isdir(root):
        raise InputError(f"{folder!r} is not a folder")
    cat: Catalog = lib.catalog
    settings: Settings = lib.settings
    t_start = time.perf_counter()
    stages = {"scan": 0.0, "decode_wait": 0.0, "detect": 0.0, "embed": 0.0, "write": 0.0}
    summary = IndexSummary(folder=root, model=embedder.name)
    set_id = lib._ensure_vector_set(embedder, rebuild=rebuild)

    # -- scan and diff against the catalog -----------------------------------------------------
    t = time.perf_counter()
    scan_skips: list[Skipped] = []
    entries = list(scan(root, on_skip=scan_skips.append))
    lo, hi = _under(root)
    known = {p: (iid, size, mtime, done) for iid, p, size, mtime, done in cat.query(
        "SELECT i.id, i.path, i.size, i.mtime, EXISTS(SELECT 1 FROM processed p "
        "WHERE p.image_id=i.id AND p.set_id=?) FROM images i WHERE i.path >= ? AND i.path < ?",
        (set_id, lo, hi))}
    known_skipped = {p: (size, mtime, reason) for p, size, mtime, reason in cat.query(
        "SELECT path, size, mtime, reason FROM skipped WHERE path >= ? AND path < ?", (lo, hi))}
    jobs: list[_Job] = []
    seen: set[str] = set()
    for e in entries:
        seen.add(e.path)
        k = known.get(e.path)
        if k is not None:
            iid, size, mtime, done = k
            if size == e.size and mtime == e.mtime:
                if done:
                    summary.unchanged += 1
                    continue
                summary.new += 1  # known file, new to this model's vector set
                jobs.append(_Job(e, iid))
            else:
                summary.changed += 1
                jobs.append(_Job(e, iid))
            continue
        s = known_skipped.get(e.path)
        if s is not None and (s[0], s[1]) == (e.size, e.mtime):
            summary.unchanged += 1
            continue
        summary.new += 1
        jobs.append(_Job(e, None))
    summary.files_seen = len(entries)
    gone_images = [iid for p, (iid, *_rest) in known.items() if p not in seen]
    gone_skipped = [p for p in known_skipped if p not in seen]
    stages["scan"] = time.perf_counter() - t
    log.info("index %s with %s: %d files, %d to process, %d gone", root, embedder.name,
             len(entries), len(jobs), len(gone_images))

    # -- decode ahead, embed and write in batches ----------------------------------------------
    total = len(jobs)
    progress("index", 0, total)
    done = 0
    batch: list[_Pending] = []
    batch_skips: list[tuple[_Job, str]] = []
    n_crops = 0
    for dec in _decode_ahead(jobs, embedder, settings, stages):
        if dec.reason is not None:
            batch_skips.append((dec.job, dec.reason))
        else:
            assert dec.image is not None
            pending = _plan(lib, set_id, embedder, dec, stages)
            batch.append(pending)
            n_crops += len(pending.regions)
        if n_crops >= settings.batch_size or len(batch) + len(batch_skips) >= 4 * settings.batch_size:
            _flush(lib, set_id, embedder, batch, batch_skips, summary, stages)
            done += len(batch) + len(batch_skips)
            progress("index", done, total)
            batch, batch_skips, n_crops = [], [], 0
    if batch or batch_skips:
        _flush(lib, set_id, embedder, batch, batch_skips, summary, stages)
        done += len(batch) + len(batch_skips)
        progress("index", done, total)

    # -- forget what is gone; record scan-level problems ---------------------------------------
    t = time.perf_counter()
    with cat.write() as c:
        for chunk in _chunks(gone_images, 500):
            c.execute(f"DELETE FROM images WHERE id IN ({','.join('?' * len(chunk))})", chunk)
        for chunk in _chunks(gone_skipped, 500):
            c.execute(f"DELETE FROM skipped WHERE path IN ({','.join('?' * len(chunk))})", chunk)
        for s in scan_skips:
            c.execute("INSERT OR REPLACE INTO skipped(path, reason, size, mtime, seen_at) "
                      "VALUES (?, ?, NULL, NULL, ?)", (s.path, s.reason, time.time()))
        if gone_images:
            c.execute("UPDATE vector_sets SET generation = generation + 1")
    summary.removed = len(gone_images)
    stages["write"] += time.perf_counter() - t

    summary.skipped = [Skipped(p, r) for p, r in cat.query(
        "SELECT path, reason FROM skipped WHERE path >= ? AND path < ? ORDER BY path", (lo, hi))]
    summary.seconds = time.perf_counter() - t_start
    summary.stage_seconds = {k: round(v, 4) for k, v in stages.items()}
    return summary


def _decode_ahead(jobs: list[_Job], embedder: Embedder, settings: Settings,
                  stages: dict[str, float]) -> Iterator[_Decoded]:
    """Run the per-file work in a pool, a bounded window ahead of the consumer, in order.

    Thread workers decode (Pillow and onnxruntime release the GIL, so decoding overlaps the
    model). Models that hold the GIL or are single-threaded (dlib) say `parallel = "processes"`:
    then each worker process decodes, detects and embeds, and only vectors come back.
    """
    workers = settings.workers or (os.cpu_count() or 1)
    window = max(2 * settings.batch_size, 4 * workers)
    use_processes = getattr(embedder, "parallel", "threads") == "processes" and workers > 1
    if use_processes:
        import multiprocessing

        pool: Any = ProcessPoolExecutor(
            max_workers=workers, mp_context=multiprocessing.get_context("spawn"),
            initializer=_process_init, initargs=(embedder.name, settings))
        fn: Callable[..., _Decoded] = _process_work
    else:
        pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="peoplemap-decode")
        fn = _thread_work
    min_side = embedder.decode_max_side
    with pool:
        queue: deque[Future[_Decoded]] = deque()
        it = iter(jobs)
        for job in it:
            queue.append(pool.submit(fn, job, min_side, settings))
            if len(queue) >= window:
                break
        while queue:
            t = time.perf_counter()
            result = queue.popleft().result()
            stages["decode_wait"] += time.perf_counter() - t
            nxt = next(it, None)
            if nxt is not None:
                queue.append(pool.submit(fn, nxt, min_side, settings))
            yield result


def _thread_work(job: _Job, min_side: Optional[int], settings: Settings) -> _Decoded:
    try:
        sha, img = read_image(job.entry.path, min_side=min_side, settings=settings)
        return _Decoded(job, sha, img)
    except ImageError as e:
        return _Decoded(job, reason=e.reason)


_PROCESS_EMBEDDER: Optional[Embedder] = None


def _process_init(model: str, settings: Settings) -> None:
    global _PROCESS_EMBEDDER
    from .embed.registry import create_embedder

    _PROCESS_EMBEDDER = create_embedder(model, settings=settings)


def _process_work(job: _Job, min_side: Optional[int], settings: Settings) -> _Decoded:
    """Decode, detect and embed one file in a worker process; pixels stay in the worker."""
    dec = _thread_work(job, min_side, settings)
    if dec.image is None:
        return dec
    e = _PROCESS_EMBEDDER
    assert e is not None, "worker not initialised"
    try:
        regions = e.regions(dec.image.pixels)
        crops = [crop(dec.image.pixels, r) for r in regions]
        vectors = e.embed(crops) if crops else np.zeros((0, e.dim), np.float32)
    except Exception as err:  # one odd image must not end the run: record it instead
        log.warning("model %s failed on %s: %s", e.name, job.entry.path, err)
        return _Decoded(job, reason=f"model {e.name} failed on this image: {err}")
    img = dec.image
    # Boxes go back in original-image coordinates; the pixels stay here.
    boxes = [_scale_box(r.box, img.scale or 1.0, img.width, img.height) for r in regions]
    light = DecodedImage(pixels=np.zeros((1, 1, 3), np.uint8), width=img.width, height=img.height,
                         format=img.format)
    return _Decoded(job, dec.sha256, light, regions=[Region(b, r.score) for b, r in zip(boxes, regions)],
                    vectors=vectors)


def _plan(lib: "Library", set_id: int, embedder: Embedder, dec: _Decoded,
          stages: dict[str, float]) -> _Pending:
    """Find what to embed in a decoded image, or an identical image whose vectors can be reused."""
    assert dec.image is not None
    row = lib.catalog.one(
        "SELECT i.id FROM images i JOIN processed p ON p.image_id = i.id AND p.set_id = ? "
        "WHERE i.sha256 = ? LIMIT 1", (set_id, dec.sha256))
    if row is not None:
        return _Pending(dec.job, dec.sha256, dec.image, [], reuse_from=int(row[0]))
    if dec.vectors is not None:  # a process worker did the detecting and embedding
        if dec.vectors.shape != (len(dec.regions or []), embedder.dim):
            from .errors import ModelError
            raise ModelError(f"model {embedder.name} returned vectors of shape {dec.vectors.shape} "
                             f"for {len(dec.regions or [])} regions")
        return _Pending(dec.job, dec.sha256, dec.image, dec.regions or [], vectors=dec.vectors)
    t = time.perf_counter()
    regions = embedder.regions(dec.image.pixels)
    stages["detect"] += time.perf_counter() - t
    return _Pending(dec.job, dec.sha256, dec.image, regions)


def _flush(lib: "Library", set_id: int, embedder: Embedder, batch: list[_Pending],
           skips: list[tuple[_Job, str]], summary: IndexSummary, stages: dict[str, float]) -> None:
    t = time.perf_counter()
    crops = [crop(p.image.pixels, r) for p in batch if p.vectors is None for r in p.regions]
    vectors = embedder.embed(crops) if crops else np.zeros((0, embedder.dim), np.float32)
    stages["embed"] += time.perf_counter() - t
    if vectors.shape != (len(crops), embedder.dim) or not np.isfinite(vectors).all():
        from .errors import ModelError
        raise ModelError(f"model {embedder.name} returned {vectors.shape} / non-finite vectors "
                         f"for {len(crops)} crops of dimension {embedder.dim}")

    t = time.perf_counter()
    now = time.time()
    vi = 0
    with lib.catalog.write() as c:
        for job, reason in skips:
            e = job.entry
            if job.image_id is not None:
                c.execute("DELETE FROM images WHERE id = ?", (job.image_id,))
            c.execute("INSERT OR REPLACE INTO skipped(path, reason, size, mtime, seen_at) "
                      "VALUES (?, ?, ?, ?, ?)", (e.path, reason, e.size, e.mtime, now))
        for p in batch:
            e, img = p.job.entry, p.image
            image_id = p.job.image_id
            if image_id is not None:
                old = c.execute("SELECT sha256 FROM images WHERE id = ?", (image_id,)).fetchone()
                if old is not None and old[0] != p.sha256:
                    # New content at the same path: every model's items for it are stale.
                    c.execute("DELETE FROM items WHERE image_id = ?", (image_id,))
                    c.execute("DELETE FROM processed WHERE image_id = ?", (image_id,))
                c.execute("UPDATE images SET sha256=?, size=?, mtime=?, width=?, height=?, format=? "
                          "WHERE id=?", (p.sha256, e.size, e.mtime, img.width, img.height,
                                         img.format, image_id))
                c.execute("DELETE FROM items WHERE image_id = ? AND set_id = ?", (image_id, set_id))
            else:
                image_id = int(c.execute(
                    "INSERT INTO images(path, sha256, size, mtime, width, height, format, added_at) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (e.path, p.sha256, e.size, e.mtime, img.width, img.height, img.format, now),
                ).lastrowid)
            c.execute("DELETE FROM skipped WHERE path = ?", (e.path,))
            if p.reuse_from is not None:
                n = _copy_items(c, p.reuse_from, image_id, set_id)
                summary.reused += 1
            else:
                n = len(p.regions)
                # Process workers send boxes in original coordinates and their own vectors.
                scale = 1.0 if p.vectors is not None else (img.scale or 1.0)
                for k, r in enumerate(p.regions):
                    box = _scale_box(r.box, scale, img.width, img.height)
                    item_id = c.execute(
                        "INSERT INTO items(image_id, set_id, x, y, w, h, score) VALUES (?,?,?,?,?,?,?)",
                        (image_id, set_id, *(box or (None, None, None, None)), float(r.score)),
                    ).lastrowid
                    if p.vectors is not None:
                        vec = p.vectors[k]
                    else:
                        vec = vectors[vi]
                        vi += 1
                    c.execute("INSERT INTO vectors(item_id, vector) VALUES (?, ?)",
                              (item_id, vector_to_blob(vec)))
            c.execute("INSERT OR REPLACE INTO processed(image_id, set_id, n_items) VALUES (?, ?, ?)",
                      (image_id, set_id, n))
            summary.items_added += n
            if n == 0:
                summary.images_without_items += 1
        c.execute("UPDATE vector_sets SET generation = generation + 1 WHERE id = ?", (set_id,))
    stages["write"] += time.perf_counter() - t


def _copy_items(c, src_image: int, dst_image: int, set_id: int) -> int:
    rows = c.execute("SELECT i.id, i.x, i.y, i.w, i.h, i.score, v.vector FROM items i "
                     "JOIN vectors v ON v.item_id = i.id WHERE i.image_id = ? AND i.set_id = ? "
                     "ORDER BY i.id", (src_image, set_id)).fetchall()
    for _id, x, y, w, h, score, blob in rows:
        item_id = c.execute("INSERT INTO items(image_id, set_id, x, y, w, h, score) "
                            "VALUES (?,?,?,?,?,?,?)", (dst_image, set_id, x, y, w, h, score)).lastrowid
        c.execute("INSERT INTO vectors(item_id, vector) VALUES (?, ?)", (item_id, blob))
    return len(rows)


def _scale_box(box, scale: float, width: int, height: int):
    """A box found on reduced pixels, in the original image's coordinates, clipped to it."""
    if box is None:
        return None
    x, y, w, h = (float(v) / scale for v in box)
    x0, y0 = max(0, int(round(x))), max(0, int(round(y)))
    x1, y1 = min(width, int(round(x + w))), min(height, int(round(y + h)))
    return (x0, y0, max(1, x1 - x0), max(1, y1 - y0))


def _chunks(seq: list, n: int) -> Iterator[list]:
    for i in range(0, len(seq), n):
        yield seq[i:i + n]
