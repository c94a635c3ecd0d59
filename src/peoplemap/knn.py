"""k-nearest-neighbour graphs of a whole vector set, with FAISS: exact up to a size, approximate above.

`knn_graph(Z, k)` returns, for every row, its k nearest other rows and their euclidean distances,
nearest first. Exact search is a blocked brute force (BLAS); above `exact_max` rows an HNSW index is
built and every row is searched in it. (IVF partitions were measured and dropped: on generated
128-d identity embeddings they found only 82-89% of each point's same-identity neighbours at
usable speeds; HNSW finds 98%.)
"""
from __future__ import annotations

import logging
import numpy as np

from .types import ProgressCallback, no_progress

log = logging.getLogger(__name__)

EXACT_MAX = 100_000
"""Above this many rows the graph comes from an HNSW index rather than brute force (which grows as
n^2: ~12 s at 100k on 2 cores)."""
QUERY_BLOCK = 16_384
"""Rows searched per FAISS call (bounds the distance block's memory and paces progress)."""


HNSW_M = 16
"""Links per node of the HNSW graph used above `exact_max` rows."""
HNSW_EF_CONSTRUCTION = 80
HNSW_EF_SEARCH = 128
"""Measured on generated identity embeddings (128-d, 100k): efSearch 64 finds 98% of each point's
same-identity neighbours among its 16 nearest, against 94% at 16 (benchmarks/bench_cluster.py)."""


def build_hnsw(Z: np.ndarray, *, m: int | None = None, ef_construction: int | None = None,
               progress: ProgressCallback = no_progress) -> "object":
    """An IndexHNSWFlat (L2) over the rows of Z, added in blocks so progress can be reported."""
    import faiss

    n, d = Z.shape
    index = faiss.IndexHNSWFlat(d, m or HNSW_M)
    index.hnsw.efConstruction = ef_construction or HNSW_EF_CONSTRUCTION
    step = QUERY_BLOCK * 4
    for a in range(0, n, step):
        index.add(Z[a:a + step])
        progress("graph", min(n, a + step), n)
    return index


def knn_graph(Z: np.ndarray, k: int, *, exact_max: int | None = None, ef_search: int | None = None,
              progress: ProgressCallback = no_progress) -> tuple[np.ndarray, np.ndarray, object]:
    """(distances float32 (n, k), neighbours int64 (n, k), index): each row's k nearest other rows,
    and the FAISS index that found them (flat or HNSW over the rows of Z, for later queries).

    Missing neighbours (n <= k, or an approximate search finding fewer) are -1 with distance inf.
    """
    import faiss

    Z = np.ascontiguousarray(Z, dtype=np.float32)
    n, d = Z.shape
    if n <= (EXACT_MAX if exact_max is None else exact_max):
        index = faiss.IndexFlatL2(d)
        index.add(Z)
        how = "exact"
    else:
        index = build_hnsw(Z, progress=progress)
        index.hnsw.efSearch = max(ef_search or HNSW_EF_SEARCH, k + 1)
        how = f"HNSW M={HNSW_M} efSearch {index.hnsw.efSearch}"
    log.info("k-nearest-neighbour graph of %d x %d vectors, k=%d (%s)", n, d, k, how)
    dist = np.empty((n, k), dtype=np.float32)
    nbr = np.empty((n, k), dtype=np.int64)
    kk = min(k + 1, n)
    for a in range(0, n, QUERY_BLOCK):
        b = min(n, a + QUERY_BLOCK)
        D, I = index.search(Z[a:b], kk)
        dist[a:b], nbr[a:b] = _drop_self(D, I, np.arange(a, b), k)
        progress("neighbours", min(n, a + QUERY_BLOCK), n)
    np.sqrt(np.maximum(dist, 0, out=dist), out=dist)
    return dist, nbr, index


def _drop_self(D: np.ndarray, I: np.ndarray, rows: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Remove each row's own entry (wherever ties put it, or its absence) and pad to k columns."""
    m = len(rows)
    is_self = I == rows[:, None]
    # Keep the first k entries that are not the row itself (and not FAISS's -1 padding).
    keep = ~is_self & (I >= 0)
    rank = np.cumsum(keep, axis=1) - 1
    keep &= rank < k
    out_d = np.full((m, k), np.inf, dtype=np.float32)
    out_i = np.full((m, k), -1, dtype=np.int64)
    r, c = np.nonzero(keep)
    out_d[r, rank[r, c]] = D[r, c]
    out_i[r, rank[r, c]] = I[r, c]
    return out_d, out_i
