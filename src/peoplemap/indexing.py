"""One index run: scan a folder, work out what is new, changed or gone, decode, embed, write.

Work is committed in batches, each in one SQLite transaction, so a run killed at any point leaves a
whole library and the next run redoes at most the batches that were in flight. Three things overlap:
a thread pool decodes files and finds their regions ahead of the model; the model runs one batch
at a time in its own thread; meanwhile the indexing thread preprocesses the next batch and commits
the previous one (Pillow, numpy, SQLite, OpenVINO and onnxruntime release the GIL), so the model
rarely waits. Models that hold the GIL (dlib) run in worker processes instead. The per-file work
and its failure rule are indexing_work's, shared with the Ray engine, and so is `write_results`.
"""
from __future__ import annotations

import logging
import os
import time
from concurrent.futures import Future
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Iterable, Optional

import numpy as np

from .config import Settings
from .embed.base import Embedder, Model
from .errors import InputError
from .indexing_work import FileResult, Job, ModelThread, scale_box, work_ahead
from .ingest import DecodedImage, Skipped, scan
from .metadata import is_sidecar
from .store import FoundItem, ImageRecord, SkipRecord
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
    """A file's result on its way to the writer: its own regions (boxes in original-image
    coordinates) and vectors, or an image with identical content whose items are copied."""

    result: FileResult
    reuse_from: Optional[int] = None  # image id whose items/vectors to copy (same content)

    @property
    def job(self) -> Job:
        return self.result.job

    @property
    def sha256(self) -> str:
        return self.result.sha256

    @property
    def image(self) -> DecodedImage:
        """The image's size and format (no pixels: they stayed with the per-file work)."""
        r = self.result
        return DecodedImage(pixels=_NO_PIXELS, width=r.width, height=r.height, format=r.format)

    @property
    def regions(self) -> list[Region]:
        return [] if self.reuse_from is not None else self.result.regions

    @property
    def vectors(self) -> Optional[np.ndarray]:
        """Set by the per-file work before the batch is written (None when items are copied)."""
        return None if self.reuse_from is not None else self.result.vectors


_NO_PIXELS = np.zeros((1, 1, 3), np.uint8)


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
    set_id = lib.ensure_vector_set(embedder, rebuild=rebuild)

    # -- scan and diff against the catalog -----------------------------------------------------
    t = time.perf_counter()
    plan = diff_folder(lib, root, set_id, summary)
    jobs = plan.jobs
    stages["scan"] = time.perf_counter() - t
    log.info("index %s with %s: %d files, %d to process, %d gone", root, embedder.name,
             summary.files_seen, len(jobs), len(plan.gone_images))

    # -- decode and detect ahead, embed and write in batches -----------------------------------
    total = len(jobs)
    progress("index", 0, total)
    results = work_ahead(jobs, embedder, settings, stages)
    try:
        with ModelThread(embedder, stages) as model_thread:
            write_results(lib, set_id, embedder, results, summary, stages, progress, total,
                          model_thread=model_thread)
    finally:
        results.close()  # stop the decode threads / worker processes if the run failed

    return finish_run(lib, root, plan, summary, stages, t_start)


def finish_run(lib: "Library", root: str, plan: "FolderDiff", summary: IndexSummary,
               stages: dict[str, float], t_start: float) -> IndexSummary:
    """Forget what is gone, record scan-level problems, and complete the summary (skipped files
    under `root`, timings). The end of a local run and of a Ray run alike."""
    t = time.perf_counter()
    forget_gone(lib, plan)
    summary.removed = len(plan.gone_images)
    from .metadata.importing import apply_region_names, backfill_metadata, reread_sidecars

    backfill_metadata(lib, root)
    summary.items_added += reread_sidecars(lib, root, summary.model, plan.sidecars)
    apply_region_names(lib, summary.model)
    stages["write"] += time.perf_counter() - t
    summary.skipped = lib.store.images.skipped(root)
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
    sidecars: dict[str, float] = field(default_factory=dict)
    """XMP sidecars found (path -> mtime): read with their photos, never indexed themselves."""


def diff_folder(lib: "Library", root: str, set_id: int, summary: IndexSummary) -> FolderDiff:
    """Scan `root` and compare with the catalog: unchanged files (same size and mtime, already
    processed by this set, or skipped before) are counted, not redone. Fills summary's counts.
    Shared by local indexing and the Ray engine, so both make the same decisions."""
    scan_skips: list[Skipped] = []
    entries = list(scan(root, on_skip=scan_skips.append))
    known = lib.store.images.known_under(root, set_id)
    known_skipped = lib.store.images.skipped_under(root)
    jobs: list[Job] = []
    seen: set[str] = set()
    sidecars: dict[str, float] = {}
    for e in entries:
        seen.add(e.path)
        if is_sidecar(e.path):
            sidecars[e.path] = e.mtime  # read with its photo (peoplemap.metadata), not an image
            continue
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
    summary.files_seen = sum(not is_sidecar(e.path) for e in entries)
    gone_images = [iid for p, (iid, *_rest) in known.items() if p not in seen]
    gone_skipped = [p for p in known_skipped if p not in seen]
    return FolderDiff(jobs, scan_skips, gone_images, gone_skipped, sidecars)


def forget_gone(lib: "Library", plan: FolderDiff) -> None:
    """Drop images and skipped entries whose files are gone; record scan-level problems."""
    lib.store.images.forget(plan.gone_images, plan.gone_skipped, plan.scan_skips)


def _plan(lib: "Library", set_id: int, dec: FileResult) -> _Pending:
    """A usable file on its way to the writer, with an identical image whose vectors can be reused."""
    same = lib.store.images.processed_with_sha(set_id, dec.sha256, prefer=dec.job.image_id)
    return _Pending(dec, reuse_from=same)


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
    records: list[ImageRecord] = []
    vi = 0
    for p in batch:
        e, img = p.job.entry, p.image
        items: list[FoundItem] = []
        if p.reuse_from is None:
            # Process workers send boxes in original coordinates and their own vectors.
            scale = 1.0 if p.vectors is not None else (img.scale or 1.0)
            names = p.result.names
            for k, r in enumerate(p.regions):
                if p.vectors is not None:
                    vec = p.vectors[k]
                else:
                    vec = vectors[vi]
                    vi += 1
                items.append(FoundItem(scale_box(r.box, scale, img.width, img.height), float(r.score), vec,
                                       name=names[k] if k < len(names) else None))
        records.append(ImageRecord(e.path, e.size, e.mtime, p.job.image_id, p.sha256, img.width,
                                   img.height, img.format, items, p.reuse_from, meta=p.result.meta))
    skip_records = [SkipRecord(j.entry.path, j.entry.size, j.entry.mtime, j.image_id, reason)
                    for j, reason in skips]
    counts = lib.store.images.write_batch(set_id, records, skip_records)
    summary.reused += counts.reused
    summary.items_added += counts.items
    summary.images_without_items += counts.without_items
    stages["write"] += time.perf_counter() - t


# -- the flow shared by local and Ray runs (public: engine_ray uses it) ----------------------------
def plan_file(lib: "Library", set_id: int, result: FileResult) -> _Pending:
    """A file's result on its way to the writer: usable content already embedded by this vector set
    (a copy, a move) is reused, and then its crops are not embedded."""
    if result.reason is not None:
        return _Pending(result)
    pending = _plan(lib, set_id, result)
    if pending.reuse_from is not None:
        result.crops = None
    return pending


@dataclass
class _InFlight:
    """A batch whose files the model thread is embedding."""

    batch: list[_Pending]
    embedded: Optional["Future[None]"]


def write_results(lib: "Library", set_id: int, model: Model, results: Iterable[FileResult],
                  summary: IndexSummary, stages: dict[str, float], progress: ProgressCallback,
                  total: int, *, model_thread: Optional[ModelThread] = None) -> None:
    """Plan the files' results in order, gather them into the run's batches (up to batch_size crops
    or 4 x batch_size files), and commit each batch. With a model thread, what still needs vectors
    is embedded there, one batch ahead of the commits (process workers' results pass through
    embedded); without one (Ray), every result must come embedded. Local and Ray runs share this, so
    they write the same rows in the same order (item ids included)."""
    bs = lib.settings.batch_size
    done = 0
    batch: list[_Pending] = []
    n_crops = 0
    in_flight: Optional[_InFlight] = None

    def land(flight: _InFlight) -> None:
        """Wait for the batch's vectors, then commit it: files the model failed on are skips."""
        nonlocal done
        if flight.embedded is not None:
            t = time.perf_counter()
            flight.embedded.result()
            stages["embed_wait"] += time.perf_counter() - t
        commit_batch(lib, set_id, model, flight.batch, summary, stages)
        done += len(flight.batch)

    def send() -> None:
        """Hand the gathered batch to the model thread, then commit the previous one meanwhile."""
        nonlocal in_flight, batch, n_crops
        embedded = None if model_thread is None else model_thread.submit(
            [p.result for p in batch if p.reuse_from is None and p.result.reason is None])
        flight = _InFlight(batch, embedded)
        batch, n_crops = [], 0
        if in_flight is not None:
            land(in_flight)
        in_flight = flight
        if model_thread is None:  # nothing to wait for: commit at once
            land(flight)
            in_flight = None

    seen = 0
    for result in results:
        seen += 1
        progress("index", seen, total)  # per file as its work comes back; commits follow in batches
        pending = plan_file(lib, set_id, result)
        batch.append(pending)
        if pending.result.reason is None:
            n_crops += len(pending.regions)
        if n_crops >= bs or len(batch) >= 4 * bs:
            send()
    if batch:
        send()
    if in_flight is not None:
        land(in_flight)


def commit_batch(lib: "Library", set_id: int, model: Model, batch: list[_Pending],
                summary: IndexSummary, stages: dict[str, float]) -> None:
    """Commit one batch of planned results in one transaction: unusable files as skips (with their
    reason), the others with their items and vectors."""
    files = [p for p in batch if p.result.reason is None]
    skips = [(p.job, p.result.reason) for p in batch if p.result.reason is not None]
    _write(lib, set_id, model, files, skips, np.zeros((0, model.dim), np.float32), summary, stages)
