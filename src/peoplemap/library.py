"""The Library: a directory holding one SQLite catalog (the source of truth) and derived files.

It is the public API that the CLI and the app both use. It owns no SQL: the catalog is the
storage package's (`self.store`, one repository per concern), the derived files are
`self.derived`'s (peoplemap.derived), and who an item belongs to is peoplemap.membership's rule.

    lib = Library.open("my-library", create=True)
    lib.index("~/Pictures")                 # faces; model="body" for person crops
    lib.cluster(profile="default")
    results = lib.search("query.jpg", k=10)
"""
from __future__ import annotations

import copy
import dataclasses
import fcntl
import json
import logging
import os
import shutil
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Optional, Sequence

import numpy as np

from .config import Settings, load_settings
from .embed.base import Embedder
from .errors import InputError, LibraryBusyError, LibraryError
from .ingest import Skipped
from .responses import (ClusterInfo, Clustering, ClusterSummary, ClusteringInfo, LibraryInfo,
                        ModelInfo, RunInfo, SkippedFile, VectorSetInfo)
from .derived import DerivedFiles
from .store import DB_NAME, Store
from .types import NOISE, Item, ProgressCallback, QueryResult, no_progress

log = logging.getLogger(__name__)

REVIEW_PREPARE_MAX = 200_000
"""Up to this many clustered items, `cluster` ends by preparing the review questions (3 s at 100k
faces, benchmarks/bench_review_scale.py); above, they are prepared on first use."""


def check_folder(folder: str | os.PathLike) -> Path:
    """The folder of photos to index, as given; InputError when it is missing or not a folder."""
    p = Path(os.path.expanduser(str(folder)))
    if not p.exists():
        raise InputError(f"the folder {str(folder)!r} does not exist")
    if not p.is_dir():
        raise InputError(f"{str(folder)!r} is a file, not a folder of photos")
    return p


class Library:
    """A peoplemap library directory. Safe to share between threads; one writer at a time."""

    def __init__(self, path: Path, store: Store, settings: Settings):
        self.path = path
        self.store = store
        """The catalog's repositories (peoplemap.store): the only place SQL is written."""
        self.catalog = store.db
        """The raw SQLite file (peoplemap.store.Database), for tests and tools that inspect it."""
        self.derived = DerivedFiles(path)
        """Search indexes, cluster models, whitenings and thumbnails (peoplemap.derived)."""
        self.settings = settings
        self._embedders: dict[str, Embedder] = {}
        self._lock = threading.RLock()
        if any(m.invalidates_derived for m in store.migrated):
            self.derived.indexes.delete()  # saved before ids were stable: rebuilt on next search

    # -- opening -------------------------------------------------------------------------------
    @classmethod
    def open(cls, path: str | os.PathLike, *, create: bool = False,
             settings: Settings | None = None) -> "Library":
        """Open the library directory at `path`; with create=True make it if missing."""
        p = Path(os.path.expanduser(str(path))).absolute()
        db = p / DB_NAME
        if not db.exists():
            if not create:
                raise LibraryError(f"no peoplemap library at {p} (create one with `peoplemap index "
                                   f"PHOTOS --library {p}`)")
            if p.exists() and not p.is_dir():
                raise LibraryError(f"{p} exists and is not a folder")
            if p.exists() and any(p.iterdir()):
                raise LibraryError(f"{p} is a non-empty folder that is not a peoplemap library; "
                                   "choose a new or empty folder")
            p.mkdir(parents=True, exist_ok=True)
        return cls(p, Store(db), settings or load_settings())

    def close(self) -> None:
        self.store.close()

    def __enter__(self) -> "Library":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Library({str(self.path)!r})"

    @contextmanager
    def writing(self, what: str) -> Iterator[None]:
        """Hold the library's writer lock: one index/cluster run at a time, across processes."""
        lock_path = self.path / "writer.lock"
        try:  # O_NOFOLLOW: a library from someone else must not make us truncate a file elsewhere
            fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o644)
        except OSError as e:
            raise LibraryError(f"cannot use the lock file {lock_path} ({e.strerror or e}); it must "
                               "be a regular file inside the library") from None
        f = os.fdopen(fd, "r+")
        try:
            try:
                fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                f.seek(0)
                holder = f.read().strip() or "another process"
                from .mainguard import busy_message

                raise LibraryBusyError(busy_message(self.path, holder)) from None
            f.seek(0)
            f.truncate()
            f.write(f"`{what}` (pid {os.getpid()})")
            f.flush()
            yield
        finally:
            f.close()

    # -- models and vector sets ----------------------------------------------------------------
    def embedder(self, model: str) -> Embedder:
        """The embedder registered as `model`, created once per Library (weights load lazily)."""
        from .embed.registry import create_embedder

        with self._lock:
            e = self._embedders.get(model)
            if e is None:
                e = create_embedder(model, settings=self.settings)
                self._embedders[model] = e
            return e

    def installed_model(self, model: str | None = None) -> Embedder | None:
        """The set's model, or None when it is not installed here (vectors from elsewhere)."""
        from .errors import ModelError

        try:
            return self.embedder(self.vector_set(model).model)
        except ModelError:
            return None

    def match_distance(self, model: str | None = None) -> float | None:
        """The set's model's match distance (peoplemap.embed.base.Model.match_distance); None
        when the model declares none or is not installed here (vectors from elsewhere)."""
        e = self.installed_model(model)
        return None if e is None else e.match_distance

    def merge_distance(self, model: str | None = None) -> float | None:
        """The set's model's merge_distance (peoplemap.embed.base.Model.merge_distance); None when
        the model declares none or is not installed here."""
        e = self.installed_model(model)
        return None if e is None else e.merge_distance

    def distance_scale(self, model: str | None = None) -> float:
        """The set's model's distance_scale (peoplemap.embed.base.Model.distance_scale); 1.0 when
        the model is not installed here (vectors from elsewhere)."""
        e = self.installed_model(model)
        return 1.0 if e is None else float(e.distance_scale)

    def min_group_score(self, model: str | None = None) -> float | None:
        """The set's model's min_group_score (peoplemap.embed.base.Model.min_group_score); None
        when the model declares none or is not installed here."""
        e = self.installed_model(model)
        return None if e is None else e.min_group_score

    def vector_sets(self) -> list[VectorSetInfo]:
        return self.store.sets.all()

    def vector_set(self, model: str | None = None) -> VectorSetInfo:
        """The vector set of `model`, or the most recently created one when model is None."""
        sets = self.vector_sets()
        if not sets:
            raise LibraryError(f"the library {self.path} has no vectors yet: run `peoplemap index "
                               f"PHOTOS --library {self.path}` first")
        if model is None:
            return sets[-1]
        for s in sets:
            if s.model == model:
                return s
        raise LibraryError(f"the library has no vectors from model {model!r}; it has "
                           f"{[s.model for s in sets]}. Run `peoplemap index PHOTOS --library "
                           f"{self.path} --model {model}` to add them")

    def ensure_vector_set(self, e: Embedder, *, rebuild: bool) -> int:
        """The id of the vector set of model `e`, made if missing (or anew with rebuild=True)."""
        return self.store.sets.ensure(e.name, e.version, e.dim, e.item_kind, e.describe(), rebuild=rebuild,
                                      compatible=e.compatible_versions)

    # -- indexing ------------------------------------------------------------------------------
    def index(self, folder: str | os.PathLike, *, model: str | None = None, rebuild: bool = False,
              progress: ProgressCallback = no_progress, engine: Any = "local",
              ray_address: str | None = None):
        """Add new and changed images of `folder`, drop deleted ones; returns an IndexSummary.
        model: a registered name (default: settings.default_model, "face").
        engine: "local" (this machine), "ray" (decode and embed on a Ray cluster at `ray_address`,
        or on a Ray started for the run), or a peoplemap.engine_ray.RayOptions for finer control."""
        from .indexing import index_folder

        check_folder(folder)  # before anything is loaded, locked or recorded
        ray_options = None
        if engine != "local" or ray_address:
            from .engine_ray import require_ray, resolve_engine

            ray_options = resolve_engine(engine, ray_address)
            if ray_options is not None:
                require_ray()  # fail before anything is loaded or written
        model = model or self.settings.default_model
        embedder = self.embedder(model)
        embedder.load()  # fail on a missing model before anything is written
        here = self
        if ray_options is None and embedder.parallel == "processes":
            from .mainguard import caller_rerun_by_workers

            if caller_rerun_by_workers():
                # Spawned workers would run the calling script again: work in this process.
                log.warning("indexing in this process only: worker processes would re-run this "
                            "script's top-level code. Put it under `if __name__ == \"__main__\":` "
                            "to use every core")
                here = copy.copy(self)
                here.settings = dataclasses.replace(self.settings, workers=1)
        with self.writing(f"peoplemap index {folder}"):
            run = self.store.runs.start("index", {"folder": str(folder), "model": model})
            journal = self.path / f"carry-over-{model.replace(':', '_').replace('/', '_')}.json"
            try:
                if rebuild and any(s.model == model for s in self.vector_sets()):
                    # Re-extraction deletes the set's items: keep its people and decisions first, on
                    # disk, so that even a run killed half-way gives them back on the next index.
                    snapshot = self.store.people.snapshot(self.vector_set(model).id)
                    tmp = journal.with_name(journal.name + ".tmp")
                    tmp.write_text(json.dumps(snapshot))
                    os.replace(tmp, journal)
                if ray_options is None:
                    summary = index_folder(here, str(folder), embedder, rebuild=rebuild,
                                           progress=progress)
                else:
                    from .engine_ray import index_folder_ray

                    summary = index_folder_ray(self, str(folder), embedder, options=ray_options,
                                               rebuild=rebuild, progress=progress)
                if journal.exists():
                    from .people import carry_over

                    carry_over(self, embedder.name, json.loads(journal.read_text()))
                    journal.unlink()
                if embedder.collection_whitening and (
                        summary.items_added or summary.removed or self.whitening(embedder.name) is None):
                    self.refit_whitening(embedder.name)
                if summary.items_added:
                    from .clustering_run import assign_new_items

                    summary.assignment = assign_new_items(self, self.vector_set(embedder.name),
                                                          progress=progress)
            except BaseException as e:
                self.store.runs.finish(run, "failed", {"error": str(e) or type(e).__name__})
                raise
            self.store.runs.finish(run, "done", summary.to_json())
        return summary

    # -- collection whitening ------------------------------------------------------------------
    def whitening(self, model: str | None = None):
        """The set's fitted collection whitening (peoplemap.reid.Whitening), or None."""
        return self.derived.whitenings.get(self.vector_set(model).id)

    def refit_whitening(self, model: str | None = None) -> None:
        """Fit PCA whitening on the set's raw vectors (models with collection_whitening)."""
        from .reid import WHITENING_DIM, fit_whitening

        s = self.vector_set(model)
        _ids, X = self.vectors(s.model, raw=True)
        if len(X) < 6:  # too few vectors to estimate a covariance: use them as they are
            self.derived.whitenings.delete(s.id)
        else:
            self.derived.whitenings.save(s.id, fit_whitening(X, dim=min(WHITENING_DIM, len(X) // 3)))
        self.store.sets.bump(s.id)  # derived vectors changed: indexes and clusterings are stale

    # -- reading -------------------------------------------------------------------------------
    def vectors(self, model: str | None = None, *, raw: bool = False,
                ids: Sequence[int] | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(item ids int64 (n,), vectors float32 (n, d)) of a vector set, in item id order.
        ids: only these items (those that exist). Sets with a collection whitening return whitened
        vectors unless raw=True. Rows stream from SQLite into one preallocated array, so reading a
        million vectors needs little more memory than the result itself."""
        s = self.vector_set(model)
        out_ids, X = self.store.items.vectors(s.id, s.dim, ids)
        w = None if raw else self.whitening(s.model)
        if w is not None and len(X):
            X = w.apply(X)
        return out_ids, X

    def items(self, model: str | None = None, ids: Sequence[int] | None = None) -> list[Item]:
        """Items of a vector set (or the given item ids), in id order."""
        s = self.vector_set(model)
        return self.store.items.get(s.id, s.item_kind, ids)

    def images_without_items(self, model: str | None = None) -> list[str]:
        """Paths of images in which the model found nothing to embed (e.g. no face)."""
        return self.store.images.without_items(self.vector_set(model).id)

    def skipped(self) -> list[Skipped]:
        return self.store.images.skipped()

    def info(self) -> LibraryInfo:
        """Counts, models, skipped files and the last runs."""
        models = []
        for s in self.vector_sets():
            c = self.clustering(s.model)
            models.append(ModelInfo(
                model=s.model, version=s.version, dim=s.dim, item_kind=s.item_kind, items=s.n_items,
                images=s.n_images, images_without_items=self.images_without_items(s.model),
                clustering=None if c is None else ClusteringInfo(
                    profile=c.profile, params=c.params, stale=c.stale,
                    clusters=len(self.clusters(s.model)), unsorted=len(self.unsorted(s.model)))))
        counts = self.store.counts()
        return LibraryInfo(
            library=str(self.path), images=counts["images"], items=counts["items"],
            skipped=[SkippedFile(s.path, s.reason) for s in self.skipped()],
            models=models, last_runs=self.runs(limit=5))

    def runs(self, limit: int = 5) -> list[RunInfo]:
        """The last index / cluster / forget runs, newest first."""
        return self.store.runs.last(limit)

    # -- clustering ----------------------------------------------------------------------------
    def cluster(self, *, model: str | None = None, profile: str = "default",
                min_cluster_size: int | None = None, progress: ProgressCallback = no_progress,
                items: Sequence[int] | None = None, **params: Any) -> ClusterSummary:
        """Cluster a vector set and store the labels (clusters numbered by size, largest first).
        items: cluster only these item ids (the rest get no label); default all."""
        from .clustering_run import run_clustering

        s = self.vector_set(model)
        with self.writing(f"peoplemap cluster --model {s.model}"):
            run = self.store.runs.start("cluster", {"model": s.model, "profile": profile})
            try:
                summary = run_clustering(self, s, profile=profile,
                                         min_cluster_size=min_cluster_size,
                                         progress=progress, items=items, **params)
            except BaseException as e:
                self.store.runs.finish(run, "failed", {"error": str(e) or type(e).__name__})
                raise
            self.store.runs.finish(run, "done", summary.to_json())
        if summary.n_items <= REVIEW_PREPARE_MAX:
            # the first review questions after a clustering make their neighbour tables (seconds at
            # 100k faces): made now, so the people page answers at once (peoplemap.review)
            try:
                progress("review", 0, 2)
                self.merge_suggestions(s.model, limit=1)
                progress("review", 1, 2)
                self.review_groups(s.model, limit=1)
                progress("review", 2, 2)
            except Exception as e:  # cancelled, or failed: the clustering is stored either way, and
                log.warning("review questions not prepared (made on first use): %s", e)  # they wait
        return summary

    def assign_new(self, model: str | None = None, *, progress: ProgressCallback = no_progress):
        """Place items indexed since the last clustering with the existing clusters and people, without
        re-clustering (`index` does this itself); returns an AssignSummary."""
        from .clustering_run import assign_new_items

        s = self.vector_set(model)
        with self.writing(f"peoplemap assign --model {s.model}"):
            return assign_new_items(self, s, progress=progress)

    def clustering(self, model: str | None = None) -> Optional[Clustering]:
        s = self.vector_set(model)
        return self.store.clusterings.latest(s.id, s.generation)

    def labels(self, model: str | None = None, ids: Sequence[int] | None = None) -> dict[int, int]:
        """item id -> cluster label (NOISE for unsorted) of the current clustering (only the
        given item ids when ids is not None)."""
        c = self.clustering(model)
        if c is None:
            return {}
        return self.store.clusterings.labels(c.id, ids)

    def clusters(self, model: str | None = None) -> list[ClusterInfo]:
        """Clusters of the current clustering, largest first (unsorted items not included)."""
        groups: dict[int, list[int]] = {}
        for item_id, label in sorted(self.labels(model).items()):
            if label != NOISE:
                groups.setdefault(label, []).append(item_id)
        return [ClusterInfo(k, len(v), v) for k, v in
                sorted(groups.items(), key=lambda kv: (-len(kv[1]), kv[0]))]

    def unsorted(self, model: str | None = None) -> list[int]:
        """Item ids the current clustering left in no cluster."""
        return sorted(i for i, label in self.labels(model).items() if label == NOISE)

    # -- search --------------------------------------------------------------------------------
    def search(self, query: str | os.PathLike | bytes, *, k: int = 10,
               model: str | None = None, name: str | None = None) -> list[QueryResult]:
        """Top-k items for each face/body/image found in the query (path or image bytes)."""
        from .searching import search_image

        return search_image(self, query, k=k, model=model, name=name)

    def index_for(self, model: str | None = None):
        """The FAISS index of a vector set, loaded from disk or rebuilt when stale."""
        from .searching import vector_index

        return vector_index(self, self.vector_set(model))

    # -- people --------------------------------------------------------------------------------
    def people(self, model: str | None = None, *, include_hidden: bool = False):
        """People (named or not) of a vector set, largest first; see peoplemap.people."""
        from .people import list_people

        return list_people(self, model, include_hidden=include_hidden)

    def person(self, ref: str | int, model: str | None = None):
        """A person by id or exact name."""
        from .people import resolve

        return resolve(self, ref, model)

    def name_person(self, ref: str | int, name: str, model: str | None = None, *,
                    on_duplicate: str = "error"):
        """Name a person. A name another person has raises NameTakenError unless on_duplicate
        is "merge" (they are one person) or "keep_apart" (this one becomes "NAME (2)")."""
        from .people import name_person

        return name_person(self, ref, name, model, on_duplicate=on_duplicate)

    def merge_people(self, target: str | int, others: Sequence[str | int], model: str | None = None):
        from .people import merge_people

        return merge_people(self, target, others, model)

    def split_person(self, ref: str | int, item_ids: Sequence[int], model: str | None = None,
                     name: str | None = None):
        from .people import split_person

        return split_person(self, ref, item_ids, model, name)

    def hide_person(self, ref: str | int, hidden: bool = True, model: str | None = None):
        from .people import hide_person

        return hide_person(self, ref, hidden, model)

    def new_person(self, item_ids: Sequence[int], name: str | None = None, model: str | None = None):
        """Make a person of these faces (e.g. a review group no existing person fits), confirmed."""
        from .people import create_person

        return create_person(self, item_ids, name, model)

    def merge_suggestions(self, model: str | None = None, *, person: int | None = None,
                          limit: int = 20):
        """People likely to be one person, best first (see peoplemap.review)."""
        from .review import merge_suggestions

        return merge_suggestions(self, model, person=person, limit=limit)

    def review_groups(self, model: str | None = None, *, limit: int = 50):
        """Unsorted and uncertain faces in groups of similar faces, each with a candidate person."""
        from .review import review_groups

        return review_groups(self, model, limit=limit)

    def add_face(self, image: str | int, box: tuple[int, int, int, int], *, person: str | int | None = None,
                 model: str | None = None) -> Item:
        """A face the detector missed: `box` (x, y, w, h in the photo's oriented pixels) of an
        indexed photo (its path or image id) becomes an item with a vector like any other. With
        `person` it is confirmed as that person; otherwise it is placed like a new item."""
        from .errors import InputError
        from .ingest import read_image
        from .store import FoundItem

        s = self.vector_set(model)
        found = self.store.images.find(image if isinstance(image, int) else
                                       str(Path(os.path.expanduser(str(image))).absolute()))
        if found is None:
            raise InputError(f"no indexed photo {image!r} in this library")
        image_id, path, _sha = found
        if len(box) != 4 or any(isinstance(v, bool) or not isinstance(v, (int, float)) for v in box):
            raise InputError(f"a box is four numbers x, y, width, height; got {box!r}")
        x, y, w, h = (int(round(v)) for v in box)
        try:
            _digest, img = read_image(path, settings=self.settings)
        except Exception as e:
            raise InputError(f"cannot read {path!r} to add a face: {e}") from None
        H, W = img.pixels.shape[:2]
        x0, y0, x1, y1 = max(0, x), max(0, y), min(W, x + w), min(H, y + h)
        if x1 - x0 < 8 or y1 - y0 < 8:
            raise InputError(f"the box {box!r} lies outside the {W}x{H} photo or is under 8 pixels")
        vector = self.embedder(s.model).embed([img.pixels[y0:y1, x0:x1]])[0]
        item_id = self.store.images.add_item(image_id, s.id,
                                             FoundItem((x0, y0, x1 - x0, y1 - y0), 1.0, vector))
        if person is not None:
            self.confirm_items(person, [item_id], s.model)
        elif self.clustering(s.model) is not None:
            self.assign_new(s.model)
        return self.items(s.model, ids=[item_id])[0]

    def set_cover(self, ref: str | int, item_id: int | None, model: str | None = None):
        """Show a person by one of its faces (None: peoplemap picks the best face)."""
        from .people import set_cover

        return set_cover(self, ref, item_id, model)

    def covers(self, people: Sequence[Any], model: str | None = None, *, sharpness: Any = None):
        """person id -> the item to show each person by: the user's pick, else its best face
        (peoplemap.people.covers)."""
        from .people import covers

        return covers(self, people, model, sharpness=sharpness)

    def not_a_face(self, item_ids: Sequence[int], model: str | None = None) -> int:
        """Remove false detections for good (they never come back as faces or people)."""
        from .people import not_a_face

        return not_a_face(self, item_ids, model)

    def confirm_items(self, ref: str | int, item_ids: Sequence[int], model: str | None = None):
        """These items are this person, for good: no clustering moves them (peoplemap.membership)."""
        from .people import confirm_items

        return confirm_items(self, ref, item_ids, model)

    def reject_items(self, ref: str | int, item_ids: Sequence[int], model: str | None = None):
        """"Not this person": the items leave the person, and no clustering, placement of new items
        or search puts them back. Returns the person, or None when nothing is left of it."""
        from .people import reject_items

        return reject_items(self, ref, item_ids, model)

    def mark_different(self, a: str | int, b: str | int, model: str | None = None) -> None:
        """Two people the user says are different people."""
        from .people import mark_different

        mark_different(self, a, b, model)

    def forget_person(self, ref: str | int, model: str | None = None) -> int:
        """Remove a person's items, vectors and derived data for good; returns items removed."""
        from .people import forget_person

        with self.writing("peoplemap people forget"):
            n = forget_person(self, ref, model)
            s = self.vector_set(model)
            self.derived.review.delete(s.id)  # its kept tables may hold the forgotten vectors
            if self.embedder(s.model).collection_whitening:
                self.refit_whitening(s.model)  # the old one was fitted with the forgotten vectors
            return n

    def forget_derived(self, model: str | None = None) -> None:
        """Delete a vector set's derived files (FAISS index, clustering state, whitening,
        thumbnails) and their caches."""
        s = self.vector_set(model)
        self.derived.forget_set(s.id, self.store.clusterings.ids(s.id))

    # -- export / delete -----------------------------------------------------------------------
    def export(self, fmt: str, out: str | os.PathLike | None, *, model: str | None = None,
               dry_run: bool = False, into_originals: bool = False) -> Path:
        """Write the clustering as csv, json or folders of links; returns the path written.
        fmt "xmp": the named faces as face regions in a sidecar beside each photo (out: optional
        JSON report); dry_run says what would change, into_originals writes into the photos."""
        from .export import export

        return export(self, fmt, None if out is None else Path(out), model=model, dry_run=dry_run,
                      into_originals=into_originals)

    def export_xmp(self, *, model: str | None = None, dry_run: bool = False,
                   into_originals: bool = False) -> list:
        """The named faces as face regions in each photo's XMP sidecar (peoplemap.export.export_xmp);
        returns what changed (or would, with dry_run)."""
        from .export import export_xmp

        return export_xmp(self, model=model, dry_run=dry_run, into_originals=into_originals)

    def delete(self) -> None:
        """Remove the library directory and everything in it (originals are never touched)."""
        path = self.path
        self.close()
        if not (path / DB_NAME).exists():
            raise LibraryError(f"{path} is not a peoplemap library; refusing to delete it")
        shutil.rmtree(path)
