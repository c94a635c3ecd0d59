"""The Library: a directory holding one SQLite catalog (the source of truth) and derived files.

It is the public API that the CLI and the app both use:

    lib = Library.open("my-library", create=True)
    lib.index("~/Pictures")                 # faces; model="body" for person crops
    lib.cluster(profile="default")
    results = lib.search("query.jpg", k=10)
"""
from __future__ import annotations

import fcntl
import json
import logging
import os
import shutil
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Optional, Sequence

import numpy as np

from .catalog import DB_NAME, Catalog, blobs_to_matrix
from .config import Settings, load_settings
from .embed.base import Embedder
from .errors import LibraryBusyError, LibraryError
from .ingest import Skipped
from .types import NOISE, Item, ProgressCallback, QueryResult, no_progress

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class VectorSetInfo:
    id: int
    model: str
    version: str
    dim: int
    item_kind: str
    description: dict
    n_items: int
    n_images: int
    generation: int


@dataclass(frozen=True)
class ClusterInfo:
    id: int
    size: int
    item_ids: list[int]


@dataclass(frozen=True)
class ClusterSummary:
    model: str
    profile: str
    params: dict
    n_items: int
    n_clusters: int
    n_noise: int
    seconds: float

    def to_json(self) -> dict:
        return dict(self.__dict__)


@dataclass(frozen=True)
class Clustering:
    """The current clustering of one vector set."""

    id: int
    set_id: int
    profile: str
    params: dict
    stale: bool
    """True when vectors were added or removed after this clustering ran."""
    created_at: float


class Library:
    """A peoplemap library directory. Safe to share between threads; one writer at a time."""

    def __init__(self, path: Path, catalog: Catalog, settings: Settings):
        self.path = path
        self.catalog = catalog
        self.settings = settings
        self._embedders: dict[str, Embedder] = {}
        self._indexes: dict[int, Any] = {}
        self._cluster_models: dict[int, Any] = {}
        self._whitenings: dict[int, Any] = {}
        self._lock = threading.RLock()

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
        return cls(p, Catalog(db), settings or load_settings())

    def close(self) -> None:
        self.catalog.close()

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
                raise LibraryBusyError(
                    f"the library {self.path} is busy: {holder} is writing to it. Wait for it to "
                    "finish, then run this again") from None
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

    def vector_sets(self) -> list[VectorSetInfo]:
        rows = self.catalog.query(
            "SELECT s.id, s.model, s.version, s.dim, s.item_kind, s.description, s.generation, "
            "(SELECT COUNT(*) FROM items i WHERE i.set_id = s.id), "
            "(SELECT COUNT(*) FROM processed p WHERE p.set_id = s.id) "
            "FROM vector_sets s ORDER BY s.id")
        return [VectorSetInfo(r[0], r[1], r[2], r[3], r[4], json.loads(r[5]), r[7], r[8], r[6])
                for r in rows]

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

    def _ensure_vector_set(self, e: Embedder, *, rebuild: bool) -> int:
        row = self.catalog.one("SELECT id, version, dim FROM vector_sets WHERE model = ?", (e.name,))
        if row is not None:
            set_id, version, dim = row
            if version == e.version and dim == e.dim and not rebuild:
                return int(set_id)
            if not rebuild:
                raise LibraryError(
                    f"the library's {e.name} vectors were made by version {version} ({dim}-d) and the "
                    f"installed model is version {e.version} ({e.dim}-d); they cannot be mixed. Re-run "
                    f"with --rebuild to re-extract them")
            with self.catalog.write() as c:
                c.execute("DELETE FROM vector_sets WHERE id = ?", (set_id,))
        with self.catalog.write() as c:
            return int(c.execute(
                "INSERT INTO vector_sets(model, version, dim, item_kind, description, created_at) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (e.name, e.version, e.dim, e.item_kind, json.dumps(e.describe()), time.time()),
            ).lastrowid)

    # -- indexing ------------------------------------------------------------------------------
    def index(self, folder: str | os.PathLike, *, model: str | None = None, rebuild: bool = False,
              progress: ProgressCallback = no_progress, engine: Any = "local",
              ray_address: str | None = None):
        """Add new and changed images of `folder`, drop deleted ones; returns an IndexSummary.
        model: a registered name (default: settings.default_model, "face").
        engine: "local" (this machine), "ray" (decode and embed on a Ray cluster at `ray_address`,
        or on a Ray started for the run), or a peoplemap.engine_ray.RayOptions for finer control."""
        from .indexing import index_folder

        ray_options = None
        if engine != "local" or ray_address:
            from .engine_ray import require_ray, resolve_engine

            ray_options = resolve_engine(engine, ray_address)
            if ray_options is not None:
                require_ray()  # fail before anything is loaded or written
        model = model or self.settings.default_model
        embedder = self.embedder(model)
        load = getattr(embedder, "load", None)
        if load is not None:  # fail on a missing model before anything is written
            load()
        with self.writing(f"peoplemap index {folder}"):
            run = self.catalog.start_run("index", {"folder": str(folder), "model": model})
            try:
                if ray_options is None:
                    summary = index_folder(self, str(folder), embedder, rebuild=rebuild,
                                           progress=progress)
                else:
                    from .engine_ray import index_folder_ray

                    summary = index_folder_ray(self, str(folder), embedder, options=ray_options,
                                               rebuild=rebuild, progress=progress)
                if getattr(embedder, "collection_whitening", False) and (
                        summary.items_added or summary.removed or self.whitening(embedder.name) is None):
                    self.refit_whitening(embedder.name)
                if summary.items_added:
                    from .clustering_run import assign_new_items

                    summary.assignment = assign_new_items(self, self.vector_set(embedder.name),
                                                          progress=progress)
            except BaseException as e:
                self.catalog.finish_run(run, "failed", {"error": str(e) or type(e).__name__})
                raise
            self.catalog.finish_run(run, "done", summary.to_json())
        return summary

    # -- collection whitening ------------------------------------------------------------------
    def _whitening_path(self, set_id: int) -> Path:
        return self.path / "transforms" / f"set-{set_id}-whitening.npz"

    def whitening(self, model: str | None = None):
        """The set's fitted collection whitening (peoplemap.reid.Whitening), or None."""
        from .reid import Whitening

        s = self.vector_set(model)
        path = self._whitening_path(s.id)
        try:
            stamp = path.stat().st_mtime_ns
        except FileNotFoundError:
            return None
        with self._lock:
            cached = self._whitenings.get(s.id)
            if cached is None or cached[0] != stamp:
                cached = (stamp, Whitening.load(path))
                self._whitenings[s.id] = cached
            return cached[1]

    def refit_whitening(self, model: str | None = None) -> None:
        """Fit PCA whitening on the set's raw vectors (models with collection_whitening)."""
        from .reid import WHITENING_DIM, fit_whitening

        s = self.vector_set(model)
        path = self._whitening_path(s.id)
        _ids, X = self.vectors(s.model, raw=True)
        if len(X) < 6:  # too few vectors to estimate a covariance: use them as they are
            path.unlink(missing_ok=True)
        else:
            w = fit_whitening(X, dim=min(WHITENING_DIM, len(X) // 3))
            path.parent.mkdir(exist_ok=True)
            tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
            w.save(tmp)
            os.replace(tmp, path)
        with self.catalog.write() as c:  # derived vectors changed: indexes and clusterings are stale
            c.execute("UPDATE vector_sets SET generation = generation + 1 WHERE id = ?", (s.id,))

    # -- reading -------------------------------------------------------------------------------
    def vectors(self, model: str | None = None, *, raw: bool = False,
                ids: Sequence[int] | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(item ids int64 (n,), vectors float32 (n, d)) of a vector set, in item id order.
        ids: only these items (those that exist). Sets with a collection whitening return whitened
        vectors unless raw=True. Rows stream from SQLite into one preallocated array, so reading a
        million vectors needs little more memory than the result itself."""
        s = self.vector_set(model)
        conn = self.catalog.conn()
        own = not conn.in_transaction
        if own:
            conn.execute("BEGIN")  # one snapshot for the count and the rows
        try:
            if ids is None:
                where, chunks = "", [()]
            else:
                wanted = sorted({int(i) for i in ids})
                chunks = [tuple(wanted[k:k + 500]) for k in range(0, len(wanted), 500)]
                where = "AND i.id IN ({})"
            n = 0
            for ch in chunks:
                n += conn.execute(
                    "SELECT COUNT(*) FROM items i JOIN vectors v ON v.item_id = i.id WHERE i.set_id = ? "
                    + where.format(",".join("?" * len(ch))), (s.id, *ch)).fetchone()[0]
            out_ids = np.empty(n, dtype=np.int64)
            X = np.empty((n, s.dim), dtype=np.float32)
            k = 0
            for ch in chunks:
                cur = conn.execute(
                    "SELECT i.id, v.vector FROM items i JOIN vectors v ON v.item_id = i.id "
                    "WHERE i.set_id = ? " + where.format(",".join("?" * len(ch))) + " ORDER BY i.id",
                    (s.id, *ch))
                while rows := cur.fetchmany(8192):
                    m = len(rows)
                    out_ids[k:k + m] = [r[0] for r in rows]
                    X[k:k + m] = blobs_to_matrix([r[1] for r in rows], s.dim, first=k)
                    k += m
        finally:
            if own:
                conn.execute("COMMIT")
        w = None if raw else self.whitening(s.model)
        if w is not None and len(X):
            X = w.apply(X)
        return out_ids, X

    def items(self, model: str | None = None, ids: Sequence[int] | None = None) -> list[Item]:
        """Items of a vector set (or the given item ids), in id order."""
        s = self.vector_set(model)
        sql = ("SELECT i.id, i.image_id, im.path, i.x, i.y, i.w, i.h, i.score FROM items i "
               "JOIN images im ON im.id = i.image_id WHERE i.set_id = ?")
        params: list[Any] = [s.id]
        if ids is not None:
            ids = [int(i) for i in ids]
            out: list[Item] = []
            for k in range(0, len(ids), 500):
                chunk = ids[k:k + 500]
                rows = self.catalog.query(
                    sql + f" AND i.id IN ({','.join('?' * len(chunk))})", params + chunk)
                out.extend(self._item(r, s.item_kind) for r in rows)
            by_id = {it.id: it for it in out}
            return [by_id[i] for i in ids if i in by_id]
        return [self._item(r, s.item_kind) for r in self.catalog.query(sql + " ORDER BY i.id", params)]

    @staticmethod
    def _item(r: tuple, kind: str) -> Item:
        box = None if r[3] is None else (int(r[3]), int(r[4]), int(r[5]), int(r[6]))
        return Item(id=int(r[0]), image_id=int(r[1]), path=r[2], box=box, kind=kind,
                    score=float(r[7]))

    def images_without_items(self, model: str | None = None) -> list[str]:
        """Paths of images in which the model found nothing to embed (e.g. no face)."""
        s = self.vector_set(model)
        return [p for (p,) in self.catalog.query(
            "SELECT i.path FROM images i JOIN processed p ON p.image_id = i.id "
            "WHERE p.set_id = ? AND p.n_items = 0 ORDER BY i.path", (s.id,))]

    def skipped(self) -> list[Skipped]:
        return [Skipped(p, r) for p, r in self.catalog.query(
            "SELECT path, reason FROM skipped ORDER BY path")]

    def info(self) -> dict[str, Any]:
        """Counts, models, skipped files and the last runs, as plain data."""
        cat = self.catalog
        runs = [dict(kind=k, status=st, params=json.loads(p), summary=json.loads(s) if s else None,
                     started_at=a, finished_at=b)
                for k, st, p, s, a, b in cat.query(
                    "SELECT kind, status, params, summary, started_at, finished_at FROM runs "
                    "ORDER BY id DESC LIMIT 5")]
        for r in runs:
            if r["summary"] and "skipped" in r["summary"]:
                r["summary"]["skipped"] = len(r["summary"]["skipped"])
        models = []
        for s in self.vector_sets():
            c = self.clustering(s.model)
            models.append(dict(model=s.model, version=s.version, dim=s.dim, item_kind=s.item_kind,
                               items=s.n_items, images=s.n_images,
                               images_without_items=self.images_without_items(s.model),
                               clustering=None if c is None else dict(
                                   profile=c.profile, params=c.params, stale=c.stale,
                                   clusters=len(self.clusters(s.model)),
                                   unsorted=len(self.unsorted(s.model)))))
        return dict(
            library=str(self.path),
            images=cat.one("SELECT COUNT(*) FROM images")[0],
            items=cat.one("SELECT COUNT(*) FROM items")[0],
            skipped=[dict(path=s.path, reason=s.reason) for s in self.skipped()],
            models=models,
            last_runs=runs,
        )

    # -- clustering ----------------------------------------------------------------------------
    def cluster(self, *, model: str | None = None, profile: str = "default",
                min_cluster_size: int | None = None, progress: ProgressCallback = no_progress,
                items: Sequence[int] | None = None, **params: Any) -> ClusterSummary:
        """Cluster a vector set and store the labels (clusters numbered by size, largest first).
        items: cluster only these item ids (the rest get no label); default all."""
        from .clustering_run import run_clustering

        s = self.vector_set(model)
        with self.writing(f"peoplemap cluster --model {s.model}"):
            run = self.catalog.start_run("cluster", {"model": s.model, "profile": profile})
            try:
                summary = run_clustering(self, s, profile=profile,
                                         min_cluster_size=min_cluster_size,
                                         progress=progress, items=items, **params)
            except BaseException as e:
                self.catalog.finish_run(run, "failed", {"error": str(e) or type(e).__name__})
                raise
            self.catalog.finish_run(run, "done", summary.to_json())
        with self._lock:
            self._cluster_models.pop(s.id, None)
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
        row = self.catalog.one(
            "SELECT id, profile, params, set_generation, created_at FROM clusterings "
            "WHERE set_id = ? ORDER BY id DESC LIMIT 1", (s.id,))
        if row is None:
            return None
        return Clustering(int(row[0]), s.id, row[1], json.loads(row[2]), row[3] != s.generation,
                          row[4])

    def labels(self, model: str | None = None, ids: Sequence[int] | None = None) -> dict[int, int]:
        """item id -> cluster label (NOISE for unsorted) of the current clustering (only the
        given item ids when ids is not None)."""
        c = self.clustering(model)
        if c is None:
            return {}
        sql = "SELECT item_id, label FROM cluster_labels WHERE clustering_id = ?"
        if ids is None:
            return dict(self.catalog.query(sql, (c.id,)))
        out: dict[int, int] = {}
        ids = [int(i) for i in ids]
        for k in range(0, len(ids), 500):
            chunk = ids[k:k + 500]
            out.update(self.catalog.query(
                sql + f" AND item_id IN ({','.join('?' * len(chunk))})", [c.id, *chunk]))
        return out

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

    def name_person(self, ref: str | int, name: str, model: str | None = None):
        from .people import name_person

        return name_person(self, ref, name, model)

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

    def forget_person(self, ref: str | int, model: str | None = None) -> int:
        """Remove a person's items, vectors and derived data for good; returns items removed."""
        from .people import forget_person

        with self.writing("peoplemap people forget"):
            n = forget_person(self, ref, model)
            s = self.vector_set(model)
            if getattr(self.embedder(s.model), "collection_whitening", False):
                self.refit_whitening(s.model)  # the old one was fitted with the forgotten vectors
            return n

    def forget_derived(self, model: str | None = None) -> None:
        """Delete a vector set's derived files (FAISS index, clustering state) and caches."""
        s = self.vector_set(model)
        with self._lock:
            self._indexes.pop(s.id, None)
            self._cluster_models.pop(s.id, None)
        for f in (self.path / "indexes").glob(f"set-{s.id}.faiss*"):
            f.unlink(missing_ok=True)
        for (cid,) in self.catalog.query("SELECT id FROM clusterings WHERE set_id = ?", (s.id,)):
            from .clustering_run import model_path

            model_path(self, cid).unlink(missing_ok=True)
        self._whitening_path(s.id).unlink(missing_ok=True)
        with self._lock:
            self._whitenings.pop(s.id, None)
        thumbs = self.path / "thumbnails"
        if thumbs.exists():
            shutil.rmtree(thumbs, ignore_errors=True)

    # -- export / delete -----------------------------------------------------------------------
    def export(self, fmt: str, out: str | os.PathLike, *, model: str | None = None) -> Path:
        """Write the clustering as csv, json or folders of links; returns the path written."""
        from .export import export

        return export(self, fmt, Path(out), model=model)

    def delete(self) -> None:
        """Remove the library directory and everything in it (originals are never touched)."""
        path = self.path
        self.close()
        if not (path / DB_NAME).exists():
            raise LibraryError(f"{path} is not a peoplemap library; refusing to delete it")
        shutil.rmtree(path)
