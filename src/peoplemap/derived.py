"""Files derived from the catalog, each kind owned by one object that knows its path, its freshness
stamp and its in-memory cache. Any of them can be deleted and is rebuilt from the catalog.

- `SearchIndexes`: indexes/set-N.faiss, the FAISS index of a vector set (stamped with the set's
  model version, whitening, generation and size; see searching.vector_index).
- `ClusterModels`: cluster-models/clustering-N.npz, the fitted state of a clustering, and for large
  ones the HNSW graph beside it (.npz.hnsw); fresh while its clustering is the set's latest.
- `Whitenings`: transforms/set-N-whitening.npz, the collection whitening of a body vector set;
  stamped by the file's modification time.
- `thumbnails/`: the app's JPEG tiles (ui/thumbs.py), deleted with a forgotten person.
- `ReviewState`: in memory only, what the review questions keep between calls (a set's vectors,
  stamped with its generation; review's neighbour tables, which peoplemap.review keeps exact).
"""
from __future__ import annotations

import logging
import os
import shutil
import threading
import zipfile
from pathlib import Path
from typing import Any, Callable, Hashable, Optional

log = logging.getLogger(__name__)


class SearchIndexes:
    """The FAISS index of each vector set: on disk in indexes/, cached in memory with its stamp."""

    def __init__(self, folder: Path):
        self.folder = folder
        self._cache: dict[int, Any] = {}
        self.lock = threading.RLock()
        """Held while an index is looked up, updated or rebuilt: one build at a time per library."""

    def path(self, set_id: int) -> Path:
        return self.folder / f"set-{set_id}.faiss"

    def cached(self, set_id: int) -> Optional[Any]:
        """The index in memory (whatever its stamp), or None."""
        with self.lock:
            return self._cache.get(set_id)

    def load(self, set_id: int) -> Optional[Any]:
        """The saved index, or None when there is none or it is damaged (it is then rebuilt)."""
        from .search import VectorIndex

        path = self.path(set_id)
        if not path.exists():
            return None
        try:
            return VectorIndex.load(path)
        except Exception as e:  # a damaged derived file is rebuilt, never fatal
            log.warning("rebuilding index %s: %s", path, e)
            return None

    def keep(self, set_id: int, index: Any, *, save: bool) -> None:
        """Cache `index` for the set; with save=True also write it (a read-only library still
        searches from memory)."""
        with self.lock:
            self._cache[set_id] = index
        if save:
            path = self.path(set_id)
            try:
                path.parent.mkdir(exist_ok=True)
                index.save(path)
            except OSError as e:
                log.warning("could not save index %s: %s", path, e)

    def drop(self, set_id: int) -> None:
        """Forget the cached index (the next search loads the saved one)."""
        with self.lock:
            self._cache.pop(set_id, None)

    def delete(self, set_id: Optional[int] = None) -> None:
        """Delete the saved index files (of one set, or all) and their cache."""
        with self.lock:
            if set_id is None:
                self._cache.clear()
            else:
                self._cache.pop(set_id, None)
            pattern = "set-*.faiss*" if set_id is None else f"set-{set_id}.faiss*"
            for f in self.folder.glob(pattern):
                f.unlink(missing_ok=True)


class ClusterModels:
    """The fitted state of each clustering (and its HNSW graph), cached per vector set."""

    def __init__(self, folder: Path):
        self.folder = folder
        self._cache: dict[int, tuple[int, Any, dict[int, int]]] = {}
        self._lock = threading.RLock()

    def path(self, clustering_id: int) -> Path:
        return self.folder / f"clustering-{clustering_id}.npz"

    def save(self, clustering_id: int, model: Any) -> None:
        from .cluster import save_model

        self.folder.mkdir(exist_ok=True)
        save_model(model, self.path(clustering_id))

    def get(self, set_id: int, clustering_id: int, label_map: dict[int, int]) -> Optional[tuple[Any, dict[int, int]]]:
        """(fitted model, label map) of the set's clustering, loaded once; None when its file is
        missing."""
        from .cluster import load_model

        with self._lock:
            cached = self._cache.get(set_id)
            if cached is not None and cached[0] == clustering_id:
                return cached[1], cached[2]
            path = self.path(clustering_id)
            if not path.exists():
                log.warning("clustering state %s is missing; run `peoplemap cluster` again", path)
                return None
            model = load_model(path)
            self._cache[set_id] = (clustering_id, model, label_map)
            return model, label_map

    def drop(self, set_id: int) -> None:
        with self._lock:
            self._cache.pop(set_id, None)

    def prune(self, keep: Callable[[int], bool]) -> None:
        """Delete the files of clusterings for which keep(id) is False (and stray files)."""
        for f in self.folder.glob("clustering-*.npz*"):
            number = f.name.split(".")[0].split("-")[1]
            if not number.isdigit() or not keep(int(number)):
                f.unlink(missing_ok=True)

    def delete(self, clustering_ids: list[int]) -> None:
        for cid in clustering_ids:
            for f in self.folder.glob(f"clustering-{cid}.npz*"):
                f.unlink(missing_ok=True)


class Whitenings:
    """The collection whitening of each vector set that has one, cached by file stamp."""

    def __init__(self, folder: Path):
        self.folder = folder
        self._cache: dict[int, tuple[int, Any]] = {}
        self._lock = threading.RLock()

    def path(self, set_id: int) -> Path:
        return self.folder / f"set-{set_id}-whitening.npz"

    def stamp(self, set_id: int) -> int:
        """The file's modification time in ns; 0 when the set has no whitening."""
        try:
            return self.path(set_id).stat().st_mtime_ns
        except FileNotFoundError:
            return 0

    def get(self, set_id: int) -> Optional[Any]:
        """The set's fitted whitening (peoplemap.reid.Whitening), or None."""
        from .reid import Whitening

        stamp = self.stamp(set_id)
        if not stamp:
            return None
        with self._lock:
            cached = self._cache.get(set_id)
            if cached is None or cached[0] != stamp:
                cached = (stamp, Whitening.load(self.path(set_id)))
                self._cache[set_id] = cached
            return cached[1]

    def save(self, set_id: int, whitening: Any) -> None:
        """Write atomically (a reader never sees half a file)."""
        path = self.path(set_id)
        path.parent.mkdir(exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        whitening.save(tmp)
        os.replace(tmp, path)

    def delete(self, set_id: int) -> None:
        self.path(set_id).unlink(missing_ok=True)
        with self._lock:
            self._cache.pop(set_id, None)


class ReviewState:
    """What the review questions (peoplemap.review) keep between calls, per vector set: the set's
    vectors in memory, reused while the set's stamp (generation, size, version, whitening) is the
    same, and named tables that review itself keeps exact as people and unsorted faces change
    (neighbours of the current vectors, no answers). A table is also kept in `folder` after a large
    search (`keep`), so that a library opened again answers at once; it is loaded as a starting
    point only, and review's update brings it up to date. The files hold vectors: forgetting a set
    deletes them."""

    def __init__(self, folder: Optional[Path] = None) -> None:
        self.folder = folder
        self._vectors: dict[int, tuple[Hashable, Any]] = {}
        self._tables: dict[tuple[int, str], Any] = {}
        self.lock = threading.RLock()
        """Held while a library's review questions are computed: one computation at a time."""

    def vectors(self, set_id: int, stamp: Hashable, read: Callable[[], Any]) -> Any:
        """The set's vectors as `read()` gave them for `stamp`; read again when the stamp moved."""
        with self.lock:
            cached = self._vectors.get(set_id)
            if cached is None or cached[0] != stamp:
                self._vectors.pop(set_id, None)  # let the old array go before reading the new one
                cached = (stamp, read())
                self._vectors[set_id] = cached
            return cached[1]

    def _path(self, set_id: int, name: str) -> Optional[Path]:
        return None if self.folder is None else self.folder / f"set-{set_id}-{name}.npz"

    def table(self, set_id: int, name: str, make: Callable[[], Any]) -> Any:
        """The set's table `name`: made by `make()` the first time, and filled from its kept file
        (its `load_arrays`) when there is one."""
        with self.lock:
            t = self._tables.get((set_id, name))
            if t is None:
                t = self._tables[(set_id, name)] = make()
                path = self._path(set_id, name)
                if path is not None and path.exists():
                    import numpy as np

                    try:
                        with np.load(path, allow_pickle=False) as z:
                            t.load_arrays({k: z[k] for k in z.files})
                    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as exc:
                        # a damaged or cut-off derived file: start empty
                        log.warning("%s: cannot read the kept review table (%s); computing it again", path, exc)
                        t = self._tables[(set_id, name)] = make()
            return t

    def keep(self, set_id: int, name: str) -> None:
        """Write the set's table `name` to its file (atomically), for the next opening."""
        path = self._path(set_id, name)
        with self.lock:
            t = self._tables.get((set_id, name))
            if path is None or t is None:
                return
            import numpy as np

            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(path.stem + ".tmp.npz")
            try:
                np.savez(tmp, **t.arrays())
                os.replace(tmp, path)
            except OSError as exc:  # a read-only library still answers, only not faster next time
                log.warning("cannot keep the review table %s: %s", path, exc)
                tmp.unlink(missing_ok=True)

    def drop(self, set_id: Optional[int] = None) -> None:
        """Forget a set's (or every set's) vectors and tables in memory."""
        with self.lock:
            for key in [k for k in self._vectors if set_id is None or k == set_id]:
                del self._vectors[key]
            for key in [k for k in self._tables if set_id is None or k[0] == set_id]:
                del self._tables[key]

    def delete(self, set_id: int) -> None:
        """Forget a set's tables in memory and on disk."""
        self.drop(set_id)
        if self.folder is not None and self.folder.exists():
            for p in self.folder.glob(f"set-{set_id}-*.npz"):
                p.unlink(missing_ok=True)


class DerivedFiles:
    """Every derived file of one library folder."""

    def __init__(self, library: Path):
        self.indexes = SearchIndexes(library / "indexes")
        self.cluster_models = ClusterModels(library / "cluster-models")
        self.whitenings = Whitenings(library / "transforms")
        self.thumbnails = library / "thumbnails"
        self.review = ReviewState(library / "review")

    def forget_set(self, set_id: int, clustering_ids: list[int]) -> None:
        """Delete a vector set's derived files and caches (after biometric data was removed)."""
        self.indexes.delete(set_id)
        self.cluster_models.drop(set_id)
        self.cluster_models.delete(clustering_ids)
        self.whitenings.delete(set_id)
        self.review.delete(set_id)
        if self.thumbnails.exists():
            shutil.rmtree(self.thumbnails, ignore_errors=True)
