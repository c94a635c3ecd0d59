"""One index run: scan a folder, work out what is new, changed or gone, decode, embed, write.

Work is committed in batches, each in one SQLite transaction, so a run killed at any point leaves a
whole library and the next run redoes at most the batches that were in flight. Three things overlap:
a thread pool decodes files ahead of the model; the model runs one batch at a time in its own
thread; meanwhile the indexing thread finds regions, preprocesses the next batch and commits the
previous one (Pillow, numpy, SQLite, OpenVINO and onnxruntime release the GIL), so the model
rarely waits. Models that hold the GIL (dlib) run in worker processes instead.
"""
from __future__ import annotations

import logging
import os
import time
from concurrent.futures import Future
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Iterator, Optional

import numpy as np

from .catalog import vector_to_blob
from .config import Settings
from .embed.base import Embedder, crop
from .errors import InputError
from .indexing_work import Decoded, Job, ModelThread, decode_ahead, scale_box
from .ingest import DecodedImage, Skipped, scan
from .types import ProgressCallback, Region, no_progress

if TYPE_CHECKING:
    from .clustering_run import AssignSummary
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
    assignment: Optional["AssignSummary"] = None
    """New items placed with the existing clusters and people (when the set was clustered before)."""

    def to_json(self) -> dict:
        d = asdict(self)
        d["skipped"] = [{"path": s.path, "reason": s.reason} for s in self.skipped]
        return d


@dataclass
class _Pending:
    """An image waiting for its batch to be embedded and written."""

    job: Job
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
    settings: Settings = lib.settings
    t_start = time.perf_counter()
    stages = {"scan": 0.0, "decode_wait": 0.0, "detect": 0.0, "prepare": 0.0, "embed": 0.0,
              "embed_wait": 0.0, "write": 0.0}
    summary = IndexSummary(folder=root, model=embedder.name)
    set_id = lib._ensure_vector_set(embedder, rebuild=rebuild)

    # -- scan and diff against the catalog -----------------------------------------------------
    t = time.perf_counter()
    plan = diff_folder(lib, root, set_id, summary)
    jobs = plan.jobs
    stages["scan"] = time.perf_counter() - t
    log.info("index %s with %s: %d files, %d to process, %d gone", root, embedder.name,
             summary.files_seen, len(jobs), len(plan.gone_images))

    # -- decode ahead, embed and write in batches ----------------------------------------------
    total = len(jobs)
    progress("index", 0, total)
    done = 0
    batch: list[_Pending] = []
    batch_skips: list[tuple[Job, str]] = []
    n_crops = 0
    with ModelThread(embedder, stages) as model:
        in_flight: Optional[_InFlight] = None

        def land(flight: _InFlight) -> None:
            """Wait for the model's vectors of a batch and commit it."""
            nonlocal done
            t = time.perf_counter()
            vectors = flight.vectors.result()
            stages["embed_wait"] += time.perf_counter() - t
            _write(lib, set_id, embedder, flight.batch, flight.skips, vectors, summary, stages)
            done += len(flight.batch) + len(flight.skips)
            progress("index", done, total)

        def send() -> None:
            """Hand the gathered batch to the model, then commit the previous one while it runs."""
            nonlocal in_flight, batch, batch_skips, n_crops
            crops = [crop(p.image.pixels, r) for p in batch if p.vectors is None for r in p.regions]
            flight = _InFlight(batch, batch_skips, model.submit(crops))
            batch, batch_skips, n_crops = [], [], 0
            if in_flight is not None:
                land(in_flight)
            in_flight = flight

        for dec in decode_ahead(jobs, embedder, settings, stages):
            if dec.reason is not None:
                batch_skips.append((dec.job, dec.reason))
            else:
                assert dec.image is not None
                pending = _plan(lib, set_id, embedder, dec, stages)
                batch.append(pending)
                n_crops += len(pending.regions)
            if n_crops >= settings.batch_size or len(batch) + len(batch_skips) >= 4 * settings.batch_size:
                send()
        if batch or batch_skips:
            send()
        if in_flight is not None:
            land(in_flight)

    return finish_run(lib, root, plan, summary, stages, t_start)


def finish_run(lib: "Library", root: str, plan: "FolderDiff", summary: IndexSummary,
               stages: dict[str, float], t_start: float) -> IndexSummary:
    """Forget what is gone, record scan-level problems, and complete the summary (skipped files
    under `root`, timings). The end of a local run and of a Ray run alike."""
    t = time.perf_counter()
    forget_gone(lib, plan)
    summary.removed = len(plan.gone_images)
    stages["write"] += time.perf_counter() - t
    summary.skipped = [Skipped(p, r) for p, r in lib.catalog.query(
        "SELECT path, reason FROM skipped WHERE path >= ? AND path < ? ORDER BY path", _under(root))]
    summary.seconds = time.perf_counter() - t_start
    summary.stage_seconds = {k: round(v, 4) for k, v in stages.items()}
    return summary


@dataclass
class FolderDiff:
    """A folder against the catalog: files to (re)process, scan-level problems, what is gone."""
    jobs: list[Job]
    scan_skips: list[Skipped]
    gone_images: list[int]
    gone_skipped: list[str]


def diff_folder(lib: "Library", root: str, set_id: int, summary: IndexSummary) -> FolderDiff:
    """Scan `root` and compare with the catalog: unchanged files (same size and mtime, already
    processed by this set, or skipped before) are counted, not redone. Fills summary's counts.
    Shared by local indexing and the Ray engine, so both make the same decisions."""
    cat = lib.catalog
    scan_skips: list[Skipped] = []
    entries = list(scan(root, on_skip=scan_skips.append))
    lo, hi = _under(root)
    known = {p: (iid, size, mtime, done) for iid, p, size, mtime, done in cat.query(
        "SELECT i.id, i.path, i.size, i.mtime, EXISTS(SELECT 1 FROM processed p "
        "WHERE p.image_id=i.id AND p.set_id=?) FROM images i WHERE i.path >= ? AND i.path < ?",
        (set_id, lo, hi))}
    known_skipped = {p: (size, mtime) for p, size, mtime in cat.query(
        "SELECT path, size, mtime FROM skipped WHERE path >= ? AND path < ?", (lo, hi))}
    jobs: list[Job] = []
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
            else:
                summary.changed += 1
            jobs.append(Job(e, iid))
            continue
        if known_skipped.get(e.path) == (e.size, e.mtime):
            summary.unchanged += 1
            continue
        summary.new += 1
        jobs.append(Job(e, None))
    summary.files_seen = len(entries)
    gone_images = [iid for p, (iid, *_rest) in known.items() if p not in seen]
    gone_skipped = [p for p in known_skipped if p not in seen]
    return FolderDiff(jobs, scan_skips, gone_images, gone_skipped)


def forget_gone(lib: "Library", plan: FolderDiff) -> None:
    """Drop images and skipped entries whose files are gone; record scan-level problems."""
    with lib.catalog.write() as c:
        for chunk in _chunks(plan.gone_images, 500):
            c.execute(f"DELETE FROM images WHERE id IN ({','.join('?' * len(chunk))})", chunk)
        for chunk in _chunks(plan.gone_skipped, 500):
            c.execute(f"DELETE FROM skipped WHERE path IN ({','.join('?' * len(chunk))})", chunk)
        for s in plan.scan_skips:
            c.execute("INSERT OR REPLACE INTO skipped(path, reason, size, mtime, seen_at) "
                      "VALUES (?, ?, NULL, NULL, ?)", (s.path, s.reason, time.time()))
        if plan.gone_images:
            c.execute("UPDATE vector_sets SET generation = generation + 1")


def _plan(lib: "Library", set_id: int, embedder: Embedder, dec: Decoded,
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


@dataclass
class _InFlight:
    """A batch whose vectors the model thread is computing."""

    batch: list[_Pending]
    skips: list[tuple[Job, str]]
    vectors: "Future[np.ndarray]"


def _write(lib: "Library", set_id: int, embedder: Embedder, batch: list[_Pending],
           skips: list[tuple[Job, str]], vectors: np.ndarray, summary: IndexSummary,
           stages: dict[str, float]) -> None:
    """Commit one batch in one transaction: skipped files, images, items and their vectors."""
    n_crops = sum(len(p.regions) for p in batch if p.vectors is None)
    if vectors.shape != (n_crops, embedder.dim) or not np.isfinite(vectors).all():
        from .errors import ModelError
        raise ModelError(f"model {embedder.name} returned {vectors.shape} / non-finite vectors "
                         f"for {n_crops} crops of dimension {embedder.dim}")

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
                    box = scale_box(r.box, scale, img.width, img.height)
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


def _chunks(seq: list, n: int) -> Iterator[list]:
    for i in range(0, len(seq), n):
        yield seq[i:i + n]
