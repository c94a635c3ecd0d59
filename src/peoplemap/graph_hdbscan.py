"""HDBSCAN over a k-nearest-neighbour graph: the same hierarchy and selection, at a million points.

Exact HDBSCAN builds the minimum spanning tree of the mutual-reachability graph over all pairs,
which is quadratic in 128 dimensions (tree indexes do not help there). Here the spanning tree is
taken over the kNN graph only (`knn.knn_graph`), with the same core distances (distance to the
`min_samples`-th neighbour) and the same edge weights max(core_a, core_b, d(a, b) / alpha). Pieces
the graph leaves unconnected are joined through their nearest pieces (by centroid), at the
distance between their most central members. The resulting tree goes through the hdbscan package's
own condensing, stability and selection code, so every selection parameter means what it means in
`hdbscan.HDBSCAN`. What can differ from the exact result are the merges above the scale of the
kNN graph: clusters farther apart than their k-th neighbours. benchmarks/bench_cluster.py measures
the agreement (BCubed F against exact HDBSCAN and against the truth).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from .knn import knn_graph
from .types import ProgressCallback, no_progress

log = logging.getLogger(__name__)

GRAPH_K = 16
"""Neighbours per point in the graph (raised to min_samples when that is larger)."""
_TINY = 1e-300
"""Stand-in weight for zero-length edges: scipy's spanning tree drops explicit zeros."""


@dataclass
class GraphResult:
    labels: np.ndarray
    probabilities: np.ndarray
    dist: np.ndarray
    """(n, k) distances to each point's graph neighbours, nearest first (reused for radii)."""
    nbr: np.ndarray
    """(n, k) row numbers of those neighbours (-1: none)."""
    index: object
    """The FAISS index over the rows (flat or HNSW) that found them."""
    n_pieces: int
    """Connected pieces of the kNN graph before they were joined."""


def graph_hdbscan(Z: np.ndarray, *, min_cluster_size: int, min_samples: int | None,
                  cluster_selection_method: str = "eom", cluster_selection_epsilon: float = 0.0,
                  alpha: float = 1.0, allow_single_cluster: bool = False, k: int = GRAPH_K,
                  exact_max: int | None = None,
                  progress: ProgressCallback = no_progress) -> GraphResult:
    """HDBSCAN labels (NOISE = -1) and membership probabilities of the rows of Z."""
    from hdbscan._hdbscan_linkage import label
    from hdbscan.hdbscan_ import _tree_to_labels

    n = Z.shape[0]
    ms = min_cluster_size if min_samples is None else min_samples
    ms = max(1, min(ms, n - 1))  # as hdbscan.hdbscan() clamps it
    k = max(k, ms)
    kw = {} if exact_max is None else {"exact_max": exact_max}
    dist, nbr, index = knn_graph(Z, k, progress=progress, **kw)
    core = dist[:, ms - 1].astype(np.float64)
    mst, pieces = _spanning_tree(Z, dist, nbr, core, alpha)
    progress("tree", 1, 2)
    tree = label(mst)
    labels, probs, *_ = _tree_to_labels(
        None, tree, min_cluster_size, cluster_selection_method, allow_single_cluster,
        False, cluster_selection_epsilon)
    progress("tree", 2, 2)
    return GraphResult(np.asarray(labels, dtype=np.int64), np.asarray(probs, dtype=np.float64),
                       dist, nbr, index, pieces)


def _spanning_tree(Z: np.ndarray, dist: np.ndarray, nbr: np.ndarray, core: np.ndarray,
                   alpha: float) -> tuple[np.ndarray, int]:
    """(n-1, 3) float64 rows (a, b, weight), sorted by weight, and the number of graph pieces."""
    from scipy.sparse import csr_matrix
    from scipy.sparse.csgraph import connected_components, minimum_spanning_tree

    n, k = nbr.shape
    # Every directed edge a -> b of the graph (no de-duplication needed: a pair listed from both ends
    # is two different matrix cells, both of the same weight). int32 rows/columns halve the memory.
    index_type = np.int32 if n < 2**31 - 1 else np.int64
    a = np.repeat(np.arange(n, dtype=index_type), k)
    b = nbr.ravel().astype(index_type)
    ok = b >= 0
    if not ok.all():
        a, b = a[ok], b[ok]
        d = dist.ravel()[ok].astype(np.float64)
    else:
        d = dist.ravel().astype(np.float64)
    del ok
    if alpha != 1.0:
        d /= alpha
    np.maximum(d, core[a], out=d)
    np.maximum(d, core[b], out=d)
    np.maximum(d, _TINY, out=d)
    graph = csr_matrix((d, (a, b)), shape=(n, n))
    del a, b, d
    forest = minimum_spanning_tree(graph).tocoo()
    del graph
    edges = [np.column_stack([forest.row, forest.col, forest.data]).astype(np.float64)]
    pieces, piece_of = connected_components(forest, directed=False)
    if pieces > 1:
        edges.append(_join_pieces(Z, core, piece_of, pieces, alpha))
    mst = np.concatenate(edges)
    mst[mst[:, 2] <= _TINY, 2] = 0.0
    mst = mst[np.argsort(mst[:, 2], kind="stable")]
    if len(mst) != n - 1:  # a bug, not bad input: the tree must span every point
        raise RuntimeError(f"spanning tree has {len(mst)} edges for {n} points")
    return np.ascontiguousarray(mst), int(pieces)


def _join_pieces(Z: np.ndarray, core: np.ndarray, piece_of: np.ndarray, pieces: int,
                 alpha: float) -> np.ndarray:
    """pieces-1 edges joining the graph's pieces: a spanning tree over the pieces.

    Each piece is represented by its member nearest its centroid; pieces are linked to their nearest
    pieces by centroid (exact kNN over centroids), edge weight = mutual reachability of the two
    representatives. Anything still apart is chained with a weight above every other edge.
    """
    import faiss
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components, minimum_spanning_tree

    d = Z.shape[1]
    counts = np.bincount(piece_of, minlength=pieces).astype(np.float64)
    cent = np.zeros((pieces, d), dtype=np.float64)
    np.add.at(cent, piece_of, Z)
    cent = (cent / counts[:, None]).astype(np.float32)
    off = ((Z - cent[piece_of]) ** 2).sum(axis=1)
    order = np.lexsort((off, piece_of))
    rep = order[np.searchsorted(piece_of[order], np.arange(pieces))]
    log.info("kNN graph has %d pieces; joining them through their nearest pieces", pieces)

    kk = min(pieces - 1, 8)
    index = faiss.IndexFlatL2(d)
    index.add(np.ascontiguousarray(cent))
    _, I = index.search(np.ascontiguousarray(cent), kk + 1)
    pa = np.repeat(np.arange(pieces), kk + 1)
    pb = I.ravel()
    ok = (pb >= 0) & (pb != pa)
    pa, pb = np.minimum(pa[ok], pb[ok]), np.maximum(pa[ok], pb[ok])
    _, first = np.unique(pa * pieces + pb, return_index=True)
    pa, pb = pa[first], pb[first]
    ra, rb = rep[pa], rep[pb]
    dd = np.sqrt(((Z[ra].astype(np.float64) - Z[rb]) ** 2).sum(axis=1)) / alpha
    w = np.maximum(np.maximum(core[ra], core[rb]), np.maximum(dd, _TINY))
    g = coo_matrix((w, (pa, pb)), shape=(pieces, pieces)).tocsr()
    t = minimum_spanning_tree(g).tocoo()
    out = [np.column_stack([rep[t.row], rep[t.col], t.data])]
    groups, group_of = connected_components(t, directed=False)
    if groups > 1:
        top = float(t.data.max()) if t.nnz else 1.0
        heads = rep[np.unique(group_of, return_index=True)[1]]
        out.append(np.column_stack([heads[:-1], heads[1:], np.full(groups - 1, 2.0 * top + 1.0)]))
    return np.concatenate(out).astype(np.float64)
