"""FAISS nearest-neighbour index over L2-normalised item vectors, keyed by item id.

Exact search (IndexFlatL2) below `APPROX_THRESHOLD` vectors; above it "pq": a 4-bit product-quantizer
fast scan over all vectors proposes `PQ_K_FACTOR` x k candidates that are re-ranked exactly (FAISS
IndexRefineFlat). HNSW stays available as kind "hnsw", and "ivfpq" for very large sets: an inverted
file of 8-bit product-quantizer codes, trained on a sample and filled shard by shard
(peoplemap.index_build), whose candidates are re-ranked on 8-bit scalar codes instead of the full
vectors, so memory stays near (code size + d) bytes per item. All are wrapped in IndexIDMap2 so
search returns item ids directly.

Why "pq" and not HNSW above the threshold (benchmarks/bench_search.py, 1M generated 128-d identity
vectors, 2 cores): HNSW (M=32, efConstruction 100) took 587 s to build and reached recall@10 0.93 at
efSearch 512 (2.2 ms); the PQ scan + exact re-rank builds in ~10 s and reaches 0.99 at ~1 ms. Distances are euclidean (not squared): for unit vectors
0 = identical, 2 = opposite, and cosine similarity = 1 - d**2 / 2.

An index is saved as `path` (faiss.write_index) plus `path.json` holding kind, dim, n and a
caller-provided `stamp` that the Library compares with its own to detect a stale index.
"""
from __future__ import annotations

import json
import logging
import os
import tempfile
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

from .errors import InputError, LibraryError

log = logging.getLogger(__name__)

APPROX_THRESHOLD = 50_000
"""kind="auto" builds an exact index below this many vectors (flat p50 ~1.3 ms at 50k, 2.6 ms at
100k, 32 ms at 1M) and a "pq" one from here up."""
PQ_K_FACTOR = 50
"""Candidates re-ranked exactly per result wanted (k=10: 500); 1M: recall@10 0.994 at ~1 ms."""
PQ_TRAIN_MAX = 100_000
"""Rows the product quantizer is trained on (a random sample above this)."""
PQ_MIN_TRAIN = 64
"""Fewest rows a "pq" index can be trained on (16 codes per sub-quantizer, with some margin)."""
HNSW_M = 32
HNSW_EF_CONSTRUCTION = 200
HNSW_EF_SEARCH = 128
NORM_TOLERANCE = 1e-3
"""Rows whose L2 norm differs from 1 by more than this are refused."""
IVFPQ_PROBE_SHARE = 16
"""An "ivfpq" search visits 1/16 of the inverted lists (at least 32): on generated identity vectors
(benchmarks/make_embeddings.py, 300k, 2048 lists) recall@10 is 0.68 at 32 lists, 0.80 at 128,
0.86 at 256 and 0.91 at 512, the coarse lists being what misses neighbours."""
IVFPQ_K_FACTOR = 16
"""Candidates an "ivfpq" search re-ranks on 8-bit scalar codes per result wanted."""
IVFPQ_MIN_TRAIN = 256
"""Fewest rows an "ivfpq" index can be trained on (256 codes per 8-bit sub-quantizer)."""
KINDS = ("flat", "pq", "hnsw", "ivfpq")
_FORMAT = "peoplemap-vector-index/1"


def check_vectors(X: Any, dim: int | None, what: str) -> np.ndarray:
    """A C-contiguous float32 (n, d) matrix of finite unit vectors, or InputError."""
    try:
        X = np.asarray(X, dtype=np.float32)
    except (TypeError, ValueError) as exc:
        raise InputError(f"{what} must be a numeric matrix: {exc}") from None
    if X.ndim != 2:
        raise InputError(f"{what} must be 2-D (n, dim), got shape {X.shape}")
    if X.shape[1] == 0:
        raise InputError(f"{what} has dimension 0; vectors need at least one value")
    if dim is not None and X.shape[1] != dim:
        raise InputError(f"{what} has dimension {X.shape[1]} but the index has dimension {dim}")
    finite = np.isfinite(X).all(axis=1)
    if not finite.all():
        raise InputError(f"{what} contains NaN or infinite values, first at row {int(np.argmin(finite))}")
    norms = np.linalg.norm(X, axis=1)
    off = np.abs(norms - 1.0) > NORM_TOLERANCE
    if off.any():
        i = int(np.argmax(off))
        raise InputError(f"{what} must be L2-normalised; row {i} has norm {norms[i]:.4g}")
    return np.ascontiguousarray(X)


def _check_ids(ids: Any, n: int) -> np.ndarray:
    try:
        ids = np.asarray(ids)
    except (TypeError, ValueError):
        raise InputError("ids must be a 1-D array of non-negative integers") from None
    if ids.ndim != 1 or ids.shape[0] != n:
        raise InputError(f"ids must be a 1-D array with one id per vector ({n}), got shape {ids.shape}")
    if n and not np.issubdtype(ids.dtype, np.integer):
        raise InputError(f"ids must be integers, got dtype {ids.dtype}")
    ids = ids.astype(np.int64)
    if n and ids.min() < 0:
        raise InputError(f"ids must be non-negative (-1 marks a missing result), got {int(ids.min())}")
    if np.unique(ids).size != n:
        raise InputError("ids must be unique; the same item id appears twice")
    return np.ascontiguousarray(ids)


def ivfpq_nlist(n: int) -> int:
    """Inverted lists of an "ivfpq" index for about n vectors: ~4 sqrt(n), a power of two, 16..65536."""
    return int(min(65536, max(16, 2 ** round(np.log2(4 * np.sqrt(max(n, 1)))))))


def ivfpq_spec(dim: int, n: int) -> str:
    """FAISS factory string of an "ivfpq" index for about n vectors: `ivfpq_nlist(n)` lists, 8-bit
    PQ codes of at most 64 bytes (at least 4 dimensions per byte), 8-bit scalar codes to re-rank."""
    m = max(k for k in range(1, min(64, max(1, dim // 4)) + 1) if dim % k == 0)
    return f"IVF{ivfpq_nlist(n)},PQ{m}x8np,Refine(SQ8)"  # np: no polysemous training (4x slower)


def _new_faiss_index(kind: str, dim: int, n: int = 0) -> Any:
    import faiss

    if kind == "ivfpq":
        inner = faiss.index_factory(dim, ivfpq_spec(dim, n))
        # Codes of the vectors, not of their residuals: residual PQ needs a table of nlist x m x 256
        # floats at load time, which the deserialization limit in `load` refuses (and the 8-bit
        # re-rank makes up the accuracy).
        faiss.downcast_index(faiss.extract_index_ivf(inner)).by_residual = False
        _tune_ivfpq(inner)
        return faiss.IndexIDMap2(inner)
    if kind == "flat":
        inner = faiss.IndexFlatL2(dim)
    elif kind == "pq":
        # 4-bit codes of 2 dimensions each (1 when d is odd): 64 bytes per 128-d vector, scanned in SIMD
        base = faiss.IndexPQFastScan(dim, dim // 2 if dim % 2 == 0 else dim, 4)
        inner = faiss.IndexRefineFlat(base)
        inner.k_factor = PQ_K_FACTOR
    else:
        inner = faiss.IndexHNSWFlat(dim, HNSW_M)
        inner.hnsw.efConstruction = HNSW_EF_CONSTRUCTION
        inner.hnsw.efSearch = HNSW_EF_SEARCH
    return faiss.IndexIDMap2(inner)


def _tune_ivfpq(inner: Any) -> None:
    import faiss

    ivf = faiss.extract_index_ivf(inner)
    ivf.nprobe = min(ivf.nlist, max(32, ivf.nlist // IVFPQ_PROBE_SHARE))
    faiss.downcast_index(inner).k_factor = IVFPQ_K_FACTOR


class VectorIndex:
    """Nearest-neighbour search over item vectors; results carry item ids."""

    def __init__(self, index: Any, kind: str, stamp: str = "") -> None:
        """Wrap a faiss IndexIDMap2; use `build` or `load` rather than calling this directly."""
        if kind not in KINDS:
            raise InputError(f"Unknown index kind: {kind!r}. Must be one of {list(KINDS)}")
        self._index = index
        self.kind = kind
        self.stamp = stamp

    @property
    def dim(self) -> int:
        return int(self._index.d)

    def __len__(self) -> int:
        return int(self._index.ntotal)

    def __repr__(self) -> str:
        return f"VectorIndex(kind={self.kind!r}, dim={self.dim}, n={len(self)}, stamp={self.stamp!r})"

    @classmethod
    def build(cls, X: np.ndarray, ids: np.ndarray, *, kind: str = "auto", stamp: str = "") -> "VectorIndex":
        """Index float32 L2-normalised rows X (n, d) under int64 item ids; kind "auto" picks by size."""
        X = check_vectors(X, None, "X")
        if kind == "auto":
            kind = "pq" if X.shape[0] >= APPROX_THRESHOLD else "flat"
        if kind not in KINDS:
            raise InputError(f"Unknown index kind: {kind!r}. Must be one of {['auto', *KINDS]}")
        index = cls(_new_faiss_index(kind, X.shape[1], X.shape[0]), kind, stamp)
        index.add(X, ids)
        log.info("built %s index: %d vectors of dimension %d", kind, len(index), index.dim)
        return index

    @classmethod
    def empty(cls, kind: str, dim: int, n: int, *, stamp: str = "") -> "VectorIndex":
        """An untrained index of `kind` sized for about n vectors of dimension dim, to be filled
        with `train` and `add_new` (building one from shards without a full matrix)."""
        return cls(_new_faiss_index(kind, dim, n), kind, stamp)

    def train(self, sample: np.ndarray) -> None:
        """Train the quantizers of a "pq" / "ivfpq" index on a sample of the vectors."""
        self._index.train(check_vectors(sample, self.dim, "training sample"))

    @property
    def nlist(self) -> int:
        """Inverted lists of an "ivfpq" index (0 for other kinds)."""
        import faiss

        if self.kind != "ivfpq":
            return 0
        return int(faiss.extract_index_ivf(self._index.index).nlist)

    def add_new(self, X: np.ndarray, ids: np.ndarray) -> None:
        """Add rows under ids known to be new and unique (ascending catalog keys): no duplicate
        check against the whole index, which would make filling a large index by shards O(n^2)."""
        X = check_vectors(X, self.dim, "X")
        self._index.add_with_ids(X, _check_ids(ids, X.shape[0]))

    def add(self, X: np.ndarray, ids: np.ndarray) -> None:
        """Add rows X under item ids that are not in the index yet."""
        X = check_vectors(X, self.dim, "X")
        ids = _check_ids(ids, X.shape[0])
        if not len(ids):
            return
        if not self._index.is_trained:  # "pq", "ivfpq": the quantizers learn from the first rows added
            least = IVFPQ_MIN_TRAIN if self.kind == "ivfpq" else PQ_MIN_TRAIN
            if len(X) < least:
                raise InputError(f"a {self.kind!r} index needs at least {least} vectors to start; "
                                 f"got {len(X)} (use kind 'flat')")
            rows = X if len(X) <= PQ_TRAIN_MAX else X[np.sort(
                np.random.default_rng(0).choice(len(X), PQ_TRAIN_MAX, replace=False))]
            self._index.train(rows)
        if len(self):
            import faiss

            present = faiss.vector_to_array(self._index.id_map)
            dup = ids[np.isin(ids, present)]
            if dup.size:
                raise InputError(f"item id {int(dup[0])} is already in the index ({dup.size} duplicate(s))")
        self._index.add_with_ids(X, ids)
        if self.kind == "flat" and len(self) >= APPROX_THRESHOLD:
            log.info("flat index holds %d vectors (approximate from %d); rebuild to switch", len(self),
                     APPROX_THRESHOLD)

    def search(self, Q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """k nearest neighbours of each row of Q (a single 1-D vector is one query).

        Returns (distances (m, k) float32 euclidean, ids (m, k) int64), nearest first; where fewer
        than k results exist the rest are id -1 with distance inf.
        """
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
            raise InputError(f"k must be an integer >= 1, got {k!r}")
        Q = np.asarray(Q)
        if Q.ndim == 1:
            Q = Q[None, :]
        Q = check_vectors(Q, self.dim, "query")
        m, k = Q.shape[0], int(k)
        if len(self) == 0 or m == 0:
            return np.full((m, k), np.inf, dtype=np.float32), np.full((m, k), -1, dtype=np.int64)
        kk = min(k, len(self))
        sq, ids = self._index.search(Q, kk)
        ids = ids.astype(np.int64)
        dist = np.sqrt(np.maximum(sq, 0.0)).astype(np.float32)
        dist[ids < 0] = np.inf
        if kk < k:
            dist = np.hstack([dist, np.full((m, k - kk), np.inf, dtype=np.float32)])
            ids = np.hstack([ids, np.full((m, k - kk), -1, dtype=np.int64)])
        return dist, ids

    def ids(self) -> np.ndarray:
        """All item ids in the index, in insertion order."""
        import faiss

        return faiss.vector_to_array(self._index.id_map).astype(np.int64)

    def save(self, path: str | os.PathLike) -> None:
        """Write the index to `path` and its sidecar to `path.json` (each replaced atomically)."""
        import faiss

        path = Path(path)
        # Straight to a file: serialising to memory first would hold two extra copies of a big index.
        _write_atomic(path, lambda tmp: faiss.write_index(self._index, tmp))
        meta = {"format": _FORMAT, "kind": self.kind, "dim": self.dim, "n": len(self), "stamp": self.stamp}
        _write_atomic(_sidecar(path), json.dumps(meta, indent=1).encode("utf-8"))

    @staticmethod
    def read_meta(path: str | os.PathLike) -> dict[str, Any]:
        """The sidecar of a saved index (kind, dim, n, stamp) without loading the index itself."""
        side = _sidecar(Path(path))
        try:
            meta = json.loads(side.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise LibraryError(f"{side}: cannot read index metadata ({exc}); rebuild the index") from None
        if not isinstance(meta, dict) or meta.get("format") != _FORMAT or meta.get("kind") not in KINDS:
            raise LibraryError(f"{side}: not a peoplemap index sidecar; rebuild the index")
        return meta

    @classmethod
    def load(cls, path: str | os.PathLike) -> "VectorIndex":
        """Read an index written by `save`; a missing or inconsistent pair raises LibraryError."""
        import faiss

        meta = cls.read_meta(path)
        try:
            size = os.path.getsize(path)
        except OSError as exc:
            raise LibraryError(f"{path}: cannot read index ({exc}); rebuild it") from None
        try:
            # faiss allocates what a header claims before reading it: no vector in the file can be
            # larger than the file, so a damaged or hostile header cannot ask for gigabytes.
            with _deserialization_limit(max(1, size)):
                index = faiss.read_index(str(path))  # the concrete type, owning its inner index
        except (RuntimeError, MemoryError) as exc:
            why = (str(exc).splitlines() or [type(exc).__name__])[0]
            raise LibraryError(f"{path}: cannot read index ({why}); rebuild it") from None
        if not isinstance(index, faiss.IndexIDMap2) or index.d != meta["dim"] or index.ntotal != meta["n"]:
            raise LibraryError(f"{path}: index does not match its sidecar {meta}; rebuild the index")
        if meta["kind"] == "hnsw":
            faiss.downcast_index(index.index).hnsw.efSearch = HNSW_EF_SEARCH
        elif meta["kind"] == "pq":
            faiss.downcast_index(index.index).k_factor = PQ_K_FACTOR
        elif meta["kind"] == "ivfpq":
            _tune_ivfpq(index.index)
        return cls(index, meta["kind"], str(meta.get("stamp", "")))


def _sidecar(path: Path) -> Path:
    return path.with_name(path.name + ".json")


def _write_atomic(path: Path, data: "bytes | Callable[[str], None]") -> None:
    """Replace `path` with `data` (bytes, or a function writing the file it is given) through a new
    temporary file: readers never see half a file, and a pre-existing file or symlink under a fixed
    temporary name is never written through."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            if isinstance(data, bytes):
                f.write(data)
        if not isinstance(data, bytes):
            data(tmp)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


_limit_lock = threading.Lock()


@contextmanager
def _deserialization_limit(max_bytes: int) -> Iterator[None]:
    import faiss

    if not hasattr(faiss, "set_deserialization_vector_byte_limit"):  # older faiss
        yield
        return
    with _limit_lock:
        old = faiss.get_deserialization_vector_byte_limit()
        faiss.set_deserialization_vector_byte_limit(max_bytes)
        try:
            yield
        finally:
            faiss.set_deserialization_vector_byte_limit(old)
