"""Group item vectors into people with HDBSCAN, and place new points into a fitted grouping.

`Clusterer` is a scikit-learn-style estimator: `__init__` only stores keyword parameters, `fit`
validates them, fitted state ends in `_`. `assign(model, X_new)` is a free function over a fitted
model, like hdbscan's `approximate_predict`. `save_model` / `load_model` persist a fitted model as
one `.npz` file (numeric arrays plus a JSON string; loaded with `allow_pickle=False`).

Assignment rule (see `assign`): a cluster's *radius* is the largest nearest-neighbour distance
between two of its members (the scale at which every member has a neighbour in the cluster).
A new point may join cluster c when its distance to the nearest member of c is at most
`ASSIGN_SLACK * radius_c`.
"""
from __future__ import annotations

import json
import logging
import os
import tempfile
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np

from .errors import InputError
from .types import NOISE, Assignment, ProgressCallback, no_progress

log = logging.getLogger(__name__)

_HDBSCAN_DEFAULTS: dict[str, Any] = {
    "cluster_selection_method": "eom",
    "cluster_selection_epsilon": 0.0,
    "alpha": 1.0,
    "allow_single_cluster": False,
    # "auto": exact HDBSCAN (hdbscan's "best": Prim's for d > 60, measured ~4x faster than Boruvka at
    # d=128..512, n=10k) up to GRAPH_MIN points, HDBSCAN over a kNN graph (graph_hdbscan) above.
    "algorithm": "auto",
}
CW_THRESHOLD = 0.345
"""Chinese whispers joins two unit vectors closer than this: dlib's documented threshold for its
face descriptors (0.5 on raw descriptors of norm ~1.45)."""
CW_K = 32
"""Each point's edges come from its CW_K nearest neighbours (exact up to knn.EXACT_MAX points, HNSW
above), so the graph grows as n, not n^2; on celeba_wild_dev the labels equal dlib's all-pairs
`chinese_whispers_clustering`."""
PROFILES: dict[str, dict[str, Any]] = {
    # The original design, exactly: StandardScaler -> PCA(50) -> hdbscan.HDBSCAN(min_cluster_size=3,
    # metric="euclidean"), every other HDBSCAN parameter at the hdbscan package's default.
    # PCA keeps sklearn's default solver; random_state=0 only matters where that solver is randomized.
    "seed": {"preprocess": "standardize+pca", "pca_max_components": 50,
             "min_cluster_size": 3, "min_samples": None, **_HDBSCAN_DEFAULTS},
    # L2-normalised identity embeddings: no scaling, no PCA; euclidean on unit vectors is monotone in
    # cosine distance. Its distances (and chinese whispers' below) are in dlib face descriptor units:
    # run_clustering multiplies them by the model's distance_scale (profile_distances). Chosen once, by
    # measurement on all six shared face sets with the face model, then fixed (no per-dataset tuning): groups
    # of two count (people with few photos), min_samples=2 keeps chains of near-duplicates from bridging
    # people, eps=0.25 merges the sub-clusters of one person that eom selection otherwise splits (dlib's 0.6
    # same-person threshold is ~0.41 between unit vectors). With link_distance (Library.cluster passes the
    # model's match distance; the face model's is 0.32 x 1.4) HDBSCAN's groups are then checked against it
    # (refine_by_links): BCubed F on LFW DevTest 0.846 -> 0.939, celeba_wild_dev 0.912 -> 0.923, and no shared
    # face set lower (benchmarks/RESULTS.md, "Default clustering").
    "default": {"preprocess": "l2-normalize", **_HDBSCAN_DEFAULTS, "min_cluster_size": 2,
                "min_samples": 2, "cluster_selection_method": "eom",
                "cluster_selection_epsilon": 0.25, "link_distance": None, "merge_distance": None,
                "min_group_score": None},
    # dlib's chinese whispers (label propagation over the graph of pairs closer than CW_THRESHOLD),
    # the peer method of dlib's face-clustering example; groups of one are unsorted.
    "chinese-whispers": {"preprocess": "l2-normalize", "method": "chinese-whispers",
                         "threshold": CW_THRESHOLD, "min_cluster_size": 2, "min_samples": None,
                         **_HDBSCAN_DEFAULTS},
}

def profile_distances(profile: str, scale: float) -> dict[str, float]:
    """The distances of clustering profile `profile` (HDBSCAN's epsilon, chinese whispers'
    threshold; written in dlib face descriptor units) for a model whose distance_scale is `scale`:
    empty when nothing changes."""
    if scale == 1.0:
        return {}
    spec = PROFILES.get(profile, {})
    return {name: float(spec[name]) * scale for name in ("cluster_selection_epsilon", "threshold")
            if spec.get(name)}


_HDBSCAN_PARAMS = ("min_cluster_size", "min_samples", *_HDBSCAN_DEFAULTS)
TUNABLE = (*_HDBSCAN_PARAMS, "threshold", "link_distance", "merge_distance", "min_group_score")
_GRAPH_PARAMS = ("min_cluster_size", "min_samples", "cluster_selection_method",
                 "cluster_selection_epsilon", "alpha", "allow_single_cluster")
"""Parameters a caller may override; the preprocessing of a profile is fixed."""

_ALGORITHMS = ("auto", "knn-graph", "best", "generic", "prims_kdtree", "prims_balltree", "boruvka_kdtree", "boruvka_balltree")

GRAPH_MIN = 5_000
"""With algorithm="auto", more points than this are clustered over a kNN graph. Exact HDBSCAN in
128-d grows as n^2 (8 s at 10k, 125 s at 30k on 2 cores); the graph version took 0.3 s and 5.5 s
there with BCubed F equal to exact's within 0.001 (benchmarks/bench_cluster.py)."""

ASSIGN_K = 5
"""Neighbours consulted by `assign` for its vote."""
ASSIGN_SLACK = 1.25
"""A new point may sit this many cluster radii from the cluster's nearest member."""

_FORMAT = "peoplemap-cluster-model/1"
_ARRAYS = ("labels", "probabilities", "radii", "scaler_mean", "scaler_scale", "pca_mean", "pca_components")


def _check_matrix(X: Any, what: str = "X") -> np.ndarray:
    """A finite 2-D numeric matrix with at least one column, or InputError."""
    try:
        X = np.asarray(X)
        if X.dtype not in (np.float32, np.float64):  # float32 stays float32, as in the design's code
            X = X.astype(np.float64)
    except (TypeError, ValueError) as exc:
        raise InputError(f"{what} must be a numeric matrix: {exc}") from None
    if X.ndim != 2:
        raise InputError(f"{what} must be 2-D (n_samples, n_features), got shape {X.shape}")
    if X.shape[1] == 0:
        raise InputError(f"{what} has 0 features (shape {X.shape}); vectors need at least one value")
    bad = ~np.isfinite(X).all(axis=1)
    if bad.any():
        rows = np.flatnonzero(bad)
        raise InputError(
            f"{what} contains NaN or infinite values in {rows.size} row(s), first at row {int(rows[0])}"
        )
    return X


def _l2_normalize(X: np.ndarray, what: str, check_only: bool = False) -> np.ndarray:
    """X / its row norms (a new array); check_only: X holds the norms, only refuse zero rows."""
    norms = X if check_only else np.linalg.norm(X, axis=1, keepdims=True)
    zero = np.flatnonzero(norms[:, 0] == 0)
    if zero.size:
        raise InputError(f"{what} row {int(zero[0])} is all zeros; it cannot be L2-normalised")
    return norms if check_only else X / norms


class Clusterer:
    """HDBSCAN over item vectors, in one of the `PROFILES` ("seed", "default", or dlib's
    "chinese-whispers"); with `link_distance`, HDBSCAN's groups checked against that distance
    (`refine_by_links`).

    Fitted attributes: `labels_` (NOISE = -1), `probabilities_`, `n_clusters_`, `params_` (the
    resolved parameters), `reference_` / `reference_labels_` (clustered points in clustering space)
    and `radii_` (per cluster, used by `assign`).
    """

    def __init__(
        self,
        profile: str = "default",
        *,
        min_cluster_size: int | None = None,
        min_samples: int | None = None,
        **params: Any,
    ) -> None:
        self.profile = profile
        self.min_cluster_size = min_cluster_size
        self.min_samples = min_samples
        self.params = params

    def get_params(self) -> dict[str, Any]:
        """The constructor arguments (as given, not resolved)."""
        sizes = {"min_cluster_size": self.min_cluster_size, "min_samples": self.min_samples}
        return {"profile": self.profile, **sizes, **self.params}

    # -- validation ---------------------------------------------------------------------------
    def _resolve_params(self) -> dict[str, Any]:
        if self.profile not in PROFILES:
            raise InputError(f"Unknown clustering profile: {self.profile!r}. Must be one of {sorted(PROFILES)}")
        unknown = sorted(set(self.params) - set(TUNABLE))
        if unknown:
            raise InputError(f"Unknown clustering parameter(s) {unknown}. Allowed: {list(TUNABLE)}")
        p = dict(PROFILES[self.profile])
        p.update(self.params)
        if self.min_cluster_size is not None:
            p["min_cluster_size"] = self.min_cluster_size
        if self.min_samples is not None:
            p["min_samples"] = self.min_samples
        mcs = p["min_cluster_size"]
        if isinstance(mcs, bool) or not isinstance(mcs, (int, np.integer)) or mcs < 2:
            raise InputError(f"min_cluster_size must be an integer >= 2, got {mcs!r}")
        ms = p["min_samples"]
        if ms is not None and (isinstance(ms, bool) or not isinstance(ms, (int, np.integer)) or ms < 1):
            raise InputError(f"min_samples must be None or an integer >= 1, got {ms!r}")
        if p["cluster_selection_method"] not in ("eom", "leaf"):
            bad = p["cluster_selection_method"]
            raise InputError(f"cluster_selection_method must be 'eom' or 'leaf', got {bad!r}")
        for name, low_ok in (("cluster_selection_epsilon", True), ("alpha", False)):
            v = p[name]
            number = not isinstance(v, bool) and isinstance(v, (int, float)) and bool(np.isfinite(v))
            if not number or v < 0 or (v == 0 and not low_ok):
                kind = "non-negative" if low_ok else "positive"
                raise InputError(f"{name} must be a {kind} number, got {v!r}")
            p[name] = float(v)
        if "threshold" in p:
            t = p["threshold"]
            if isinstance(t, bool) or not isinstance(t, (int, float)) or not 0 < t <= 2:
                raise InputError(f"threshold must be a distance between unit vectors in (0, 2], got {t!r}")
            p["threshold"] = float(t)
        for name in ("link_distance", "merge_distance"):
            if p.get(name) is None:
                continue
            t = p[name]
            if isinstance(t, bool) or not isinstance(t, (int, float)) or not 0 < t <= 2:
                raise InputError(f"{name} must be a distance between unit vectors in (0, 2], got {t!r}")
            if p["preprocess"] != "l2-normalize":
                raise InputError(f"{name} needs a profile that clusters unit vectors (not 'seed')")
            p[name] = float(t)
        if p.get("merge_distance") is not None and p.get("link_distance") is None:
            raise InputError("merge_distance joins the groups that link_distance checked: give both")
        if p.get("min_group_score") is not None:
            v = p["min_group_score"]
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not np.isfinite(v):
                raise InputError(f"min_group_score must be a number, got {v!r}")
            p["min_group_score"] = float(v)
        if p["algorithm"] not in _ALGORITHMS:
            raise InputError(f"algorithm must be one of {list(_ALGORITHMS)}, got {p['algorithm']!r}")
        p["min_cluster_size"] = int(mcs)
        p["min_samples"] = None if ms is None else int(ms)
        p["allow_single_cluster"] = bool(p["allow_single_cluster"])
        return p

    # -- fitting ------------------------------------------------------------------------------
    def fit(self, X: np.ndarray, cannot_link: Sequence[Sequence[int]] | None = None, *,
            progress: ProgressCallback = no_progress, copy: bool = True,
            scores: np.ndarray | None = None) -> "Clusterer":
        """Cluster the rows of X; rows in one `cannot_link` group never end up in the same cluster.
        copy=False lets the "default" profile normalise a float32 X in place (a million 128-d rows:
        512 MB less at the peak); X is then changed."""
        p = self._resolve_params()
        X = _check_matrix(X)
        n, d = X.shape
        groups = _check_groups(cannot_link, n)
        self.params_ = p
        self.n_features_in_ = d
        self.n_samples_ = n
        Z = self._fit_preprocess(X, copy=copy)

        labels = np.full(n, NOISE, dtype=np.int64)
        probs = np.zeros(n, dtype=np.float64)
        knn: Optional[tuple[np.ndarray, np.ndarray]] = None
        ann: Any = None
        if p["algorithm"] == "auto":
            p["algorithm"] = "knn-graph" if n > GRAPH_MIN else "best"
        if p.get("method") == "chinese-whispers":
            if n >= 2 and n >= p["min_cluster_size"]:
                labels, probs = chinese_whispers(Z, p["threshold"], p["min_cluster_size"], progress=progress)
        elif n >= 2 and n >= p["min_cluster_size"] and p["algorithm"] == "knn-graph":
            from .graph_hdbscan import graph_hdbscan

            g = graph_hdbscan(Z, progress=progress, **{k: p[k] for k in _GRAPH_PARAMS})
            labels, probs, knn = g.labels, g.probabilities, (g.dist, g.nbr)
            ann = g.index if hasattr(g.index, "hnsw") else None  # flat ones are cheap to rebuild
        elif n >= 2 and n >= p["min_cluster_size"]:
            import hdbscan

            hdb = hdbscan.HDBSCAN(metric="euclidean", **{k: p[k] for k in _HDBSCAN_PARAMS})
            labels = hdb.fit_predict(Z).astype(np.int64)
            probs = np.asarray(hdb.probabilities_, dtype=np.float64)
        else:
            log.info("clustering %d point(s) with min_cluster_size=%d: all unsorted", n, p["min_cluster_size"])
        clustered = n >= 2 and n >= p["min_cluster_size"]
        if clustered and p.get("link_distance") is not None and p.get("method") != "chinese-whispers":
            graph = knn
            if graph is None or graph[0].shape[1] < min(LINK_K, n - 1):
                from .knn import knn_graph

                dist, nbr, _ = knn_graph(Z, min(LINK_K, n - 1), progress=progress)
                graph = (dist, nbr)
            labels, probs = refine_by_links(labels, probs, *graph, p["link_distance"], p["min_cluster_size"])
            if p.get("merge_distance") is not None:
                labels = merge_groups(labels, Z, graph[1], p["merge_distance"], groups or ())

        if groups:
            labels, probs = _apply_cannot_link(Z, labels, probs, groups, p["min_cluster_size"])
        if p.get("min_group_score") is not None and scores is not None:
            labels, probs = drop_weak_groups(labels, probs, np.asarray(scores, dtype=np.float64),
                                             float(p["min_group_score"]))
        self.labels_ = labels
        self.probabilities_ = probs
        self.n_clusters_ = int(labels.max() + 1) if labels.size else 0
        self.ann_index_ = ann
        self._set_reference(Z[labels != NOISE], labels[labels != NOISE],
                            radii=None if knn is None else _radii_from_knn(Z, labels, *knn))
        n_noise = int((labels == NOISE).sum())
        log.info("clustered %d points into %d clusters, %d unsorted", n, self.n_clusters_, n_noise)
        return self

    def _fit_preprocess(self, X: np.ndarray, copy: bool = True) -> np.ndarray:
        """Fit the profile's preprocessing; keep it as plain arrays so it can be saved without pickle."""
        n, d = X.shape
        self.scaler_mean_ = np.zeros(0)
        self.scaler_scale_ = np.zeros(0)
        self.pca_mean_ = np.zeros(0)
        self.pca_components_ = np.zeros((0, d))
        if self.params_["preprocess"] == "l2-normalize":
            if not copy and X.dtype == np.float32 and X.flags.writeable:
                norms = np.linalg.norm(X, axis=1, keepdims=True)
                _l2_normalize(norms, "X", check_only=True)
                X /= norms
                return X
            return _l2_normalize(X, "X")
        # seed: literally the design's StandardScaler + PCA, so labels match its code exactly
        from sklearn.decomposition import PCA
        from sklearn.preprocessing import StandardScaler

        if n == 0:
            self.scaler_mean_, self.scaler_scale_ = np.zeros(d), np.ones(d)
            return np.zeros((0, 0))
        scaler = StandardScaler()
        Xs = scaler.fit_transform(X)
        self.scaler_mean_ = np.asarray(scaler.mean_, dtype=np.float64)
        self.scaler_scale_ = np.asarray(scaler.scale_, dtype=np.float64)
        k = min(int(self.params_["pca_max_components"]), n - 1, d)
        if k < 1:
            return np.zeros((n, 0))
        pca = PCA(n_components=k, random_state=0)
        Z = pca.fit_transform(Xs)
        self.pca_mean_ = np.asarray(pca.mean_, dtype=np.float64)
        self.pca_components_ = np.asarray(pca.components_, dtype=np.float64)
        return np.asarray(Z, dtype=np.float64)

    def _set_reference(self, ref: np.ndarray, ref_labels: np.ndarray,
                       radii: Optional[np.ndarray] = None) -> None:
        self.reference_: Optional[np.ndarray] = np.ascontiguousarray(ref, dtype=np.float32)
        self.reference_labels_: Optional[np.ndarray] = np.asarray(ref_labels, dtype=np.int64)
        self.radii_ = (_cluster_radii(self.reference_, self.reference_labels_, self.n_clusters_)
                       if radii is None else radii)
        self._nn_cache: Optional[Any] = None

    def _check_fitted(self) -> None:
        if not hasattr(self, "labels_"):
            raise InputError("This Clusterer is not fitted yet; call fit(X) first or load_model(path)")

    def transform(self, X: np.ndarray) -> np.ndarray:
        """Map rows of X into the space clustering ran in."""
        self._check_fitted()
        X = _check_matrix(X)
        if X.shape[1] != self.n_features_in_:
            raise InputError(f"X has {X.shape[1]} features but the model was fitted on {self.n_features_in_}")
        if self.params_["preprocess"] == "l2-normalize":
            return _l2_normalize(X, "X")
        Xs = (X - self.scaler_mean_) / self.scaler_scale_ if self.scaler_mean_.size else X
        if self.pca_components_.shape[0] == 0:
            return np.zeros((X.shape[0], 0))
        return (Xs - self.pca_mean_) @ self.pca_components_.T


def drop_weak_groups(labels: np.ndarray, probs: np.ndarray, scores: np.ndarray,
                     floor: float) -> tuple[np.ndarray, np.ndarray]:
    """Groups whose median detection score is below `floor` become unsorted: false detections
    (hair, text, logos) resemble each other more than they resemble anyone."""
    if len(scores) != len(labels):
        raise InputError(f"scores has {len(scores)} values for {len(labels)} points")
    kept = np.flatnonzero(labels != NOISE)
    if not len(kept):
        return labels, probs
    # every group's median at once (a million faces in 100k groups): sort by group, then score
    order = kept[np.lexsort((scores[kept], labels[kept]))]
    groups, start, size = np.unique(labels[order], return_index=True, return_counts=True)
    s = scores[order]
    median = (s[start + (size - 1) // 2] + s[start + size // 2]) / 2
    weak = groups[median < floor]
    if not len(weak):
        return labels, probs
    drop = np.isin(labels, weak)
    log.info("%d group(s) of %d item(s) with a median detection score below %s left unsorted",
             len(weak), int(drop.sum()), floor)
    labels = np.where(drop, NOISE, labels)
    return _relabel(labels), np.where(drop, 0.0, probs)


LINK_K = 16
"""Neighbours per point consulted by `refine_by_links` (the graph HDBSCAN's own, where it ran)."""
JOIN_SLACK = 1.125
ATTACH_SLACK = 1.25
ATTACH_RATIO = 0.9


def refine_by_links(labels: np.ndarray, probs: np.ndarray, dist: np.ndarray, nbr: np.ndarray,
                    link: float, min_cluster_size: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """HDBSCAN's clusters checked against the model's match distance `link` (dist/nbr: each row's
    nearest neighbours, nearest first, -1 for none).

    Density alone cannot tell a person photographed often from a crowd of strangers who each
    appear once (HDBSCAN joins the strangers of LFW into mixed clusters), and a fixed threshold
    alone cannot follow one person through lighting and age (chains, or splits). So:
    1. two faces stay together only where HDBSCAN put them together AND a chain of pairs closer
       than `link` joins them (connected components of the link graph split a cluster);
    2. a linked face HDBSCAN left unsorted joins the group of its nearest neighbour in its
       component; a clustered face with no link joins the group of its nearest neighbour when
       that neighbour is grouped, of its own HDBSCAN cluster and within JOIN_SLACK * link;
    3. groups smaller than min_cluster_size are unsorted; then an unsorted face joins the group of
       its nearest sorted neighbour within ATTACH_SLACK * link when that neighbour is clearly
       (ATTACH_RATIO) nearer than any face outside the group, unsorted ones included (a stranger
       among many look-alikes stays unsorted);
    4. by the same rule, two unsorted faces that are each other's nearest neighbour and clearly
       nearer each other than anyone else become a group of two (where min_cluster_size allows).
    Measured on the shared face sets and the in-the-wild dev sets (benchmarks/RESULTS.md)."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    n = len(labels)
    labels = np.asarray(labels, dtype=np.int64)
    ok = nbr >= 0
    rows, cols = np.nonzero(ok & (dist < link))
    adj = coo_matrix((np.ones(len(rows), dtype=np.int8), (rows, nbr[rows, cols])), shape=(n, n))
    _, comp = connected_components(adj, directed=False)
    linked = np.bincount(comp)[comp] >= 2
    both = (labels != NOISE) & linked
    new = np.full(n, NOISE, dtype=np.int64)
    _, new[both] = np.unique(labels[both] * n + comp[both], return_inverse=True)
    out_p = np.where(both, probs, 0.0)

    def nearest(rows_: np.ndarray, allowed: np.ndarray, within: float = np.inf) -> np.ndarray:
        """Per row, the column of its nearest neighbour where `allowed` (rows x k) holds, or -1."""
        a = allowed & ok[rows_] & (dist[rows_] < within)
        return np.where(a.any(axis=1), a.argmax(axis=1), -1)

    # 2a. linked, unsorted by HDBSCAN: nearest neighbour of the same component that has a group
    r = np.flatnonzero(linked & (labels == NOISE))
    if r.size:
        nb = nbr[r]
        nbs = np.maximum(nb, 0)
        allowed = (new[nbs] != NOISE) & (comp[nbs] == comp[r][:, None])
        j = nearest(r, allowed)
        hit = j >= 0
        new[r[hit]] = new[nb[hit, j[hit]]]
        out_p[r[hit]] = np.clip(1 - dist[r[hit], j[hit]] / (ATTACH_SLACK * link), 0.05, 1)
        rest = r[~hit]  # a component HDBSCAN left unsorted entirely: a group of its own
        if rest.size:
            _, inv = np.unique(comp[rest], return_inverse=True)
            new[rest] = new.max() + 1 + inv
            out_p[rest] = 0.5
    # 2b. clustered, with no link: join the group of its nearest neighbour, where that neighbour
    #     is grouped, of its own HDBSCAN cluster, and within JOIN_SLACK * link
    r = np.flatnonzero((labels != NOISE) & ~linked)
    if r.size:
        nb = nbr[r]
        nbs = np.maximum(nb, 0)
        allowed = (new[nbs] != NOISE) & (labels[nbs] == labels[r][:, None])
        j = nearest(r, allowed, JOIN_SLACK * link)
        hit = j >= 0
        # no other face nearer than that group's (a face of someone else, or an unsorted one)
        target = new[nbs[np.arange(r.size), np.maximum(j, 0)]]
        other = ok[r] & (new[nbs] != target[:, None])
        first_other = np.where(other.any(axis=1), other.argmax(axis=1), nbr.shape[1])
        hit &= j < first_other
        new[r[hit]] = new[nb[hit, j[hit]]]
        out_p[r[hit]] = np.clip(1 - dist[r[hit], j[hit]] / (ATTACH_SLACK * link), 0.05, 1)
    # 3. small groups are unsorted; attach the unsorted that clearly belong
    if (new != NOISE).any():
        sizes = np.bincount(new[new != NOISE])
        small = (new != NOISE) & (sizes[np.maximum(new, 0)] < min_cluster_size)
        new[small] = NOISE
        out_p[small] = 0.0
    r = np.flatnonzero(new == NOISE)
    if r.size and (new != NOISE).any():
        nb = nbr[r]
        nbs = np.maximum(nb, 0)
        j = nearest(r, new[nbs] != NOISE, ATTACH_SLACK * link)
        hit = j >= 0
        r, nb, nbs, j = r[hit], nb[hit], nbs[hit], j[hit]
        target = new[nb[np.arange(len(r)), j]]
        d1 = dist[r, j]
        other = ok[r] & (new[nbs] != target[:, None]) & (nb != r[:, None])
        has = other.any(axis=1)
        d2 = np.where(has, dist[r, np.where(has, other.argmax(axis=1), 0)], dist[r, -1])
        take = d1 < ATTACH_RATIO * d2
        new[r[take]] = target[take]
        out_p[r[take]] = np.clip(1 - d1[take] / (ATTACH_SLACK * link), 0.05, 1)
    # 4. two unsorted faces, each the other's nearest neighbour within ATTACH_SLACK * link and
    #    clearly (ATTACH_RATIO) nearer each other than anyone else, are a group of two (a person
    #    photographed twice, whose pair no link or density joined)
    r = np.flatnonzero(new == NOISE)
    if r.size >= 2 and min_cluster_size <= 2 and nbr.shape[1] >= 2:
        first, d1, d2 = nbr[r, 0], dist[r, 0], dist[r, 1]
        sure = np.zeros(n, dtype=bool)
        sure[r] = (first >= 0) & (d1 < ATTACH_SLACK * link) & (d1 < ATTACH_RATIO * d2)
        mate = np.full(n, -1, dtype=np.int64)
        mate[r] = first
        q = np.maximum(first, 0)
        pair = sure[r] & sure[q] & (mate[q] == r) & (r < q)
        a, b = r[pair], q[pair]
        if a.size:
            new[a] = new[b] = new.max() + 1 + np.arange(a.size)  # NOISE is -1: from 0 when none
            out_p[a] = out_p[b] = np.clip(1 - d1[pair] / (ATTACH_SLACK * link), 0.05, 1)
    return _relabel(new), out_p


SPREAD_RATIO = 1.15
"""`merge_groups` also joins two groups (of SPREAD_MIN_SIZE or more each) whose faces are on average
no farther apart than SPREAD_RATIO times the spread within the wider of them: one person's wide
blob that HDBSCAN cut in two. Measured on the dev sets' clusterings (benchmarks/RESULTS.md): the
halves of one person sat at 1.01-1.17 times their spread, different people of every face set at 1.23
or more, apart from small mixed LFW groups."""
SPREAD_MIN_SIZE = 3
"""A group's spread is estimated from its pairs: at least 3 of them."""
SPREAD_CAP = 1.19
"""...and never beyond SPREAD_CAP times the merge distance (0.41 for faces: dlib's 0.6 same-person
threshold between unit vectors)."""


def average_distance(mean_a: np.ndarray, mean_b: np.ndarray) -> np.ndarray:
    """Root mean square distance over all pairs of two groups of unit vectors, from their means
    (rows of means, or one mean each): the mean squared distance is 2 - 2 mean(A) . mean(B). The
    measure `merge_groups` joins groups by and `review.merge_suggestions` ranks people by."""
    dot = np.einsum("...i,...i->...", mean_a, mean_b)
    return np.sqrt(np.maximum(0.0, 2.0 - 2.0 * dot))


def merge_groups(labels: np.ndarray, Z: np.ndarray, nbr: np.ndarray, distance: float,
                 groups: Sequence[np.ndarray] = (), *, spread_ratio: float | None = SPREAD_RATIO) -> np.ndarray:
    """Join groups whose faces are, on average, closer than `distance`: average linkage (the root
    mean square distance over all pairs of their members) between groups that a nearest-neighbour
    edge (`nbr`) connects, closest pair first, each merged group then compared again. Two groups
    holding members of one `groups` row (faces of one photo) are never joined. With
    `spread_ratio`, two groups of SPREAD_MIN_SIZE or more are also joined when their average
    distance is below `spread_ratio` times the wider one's own spread (the root mean square
    distance between its members) and below SPREAD_CAP * distance.

    HDBSCAN splits one person's photos into two groups where its density tree happens to (adding
    0.5% more photos to celeba_wild_dev split a 25-photo person into 12 + 11) and keeps a
    person's lab-lit poses apart (att_orl, yale); the average over all pairs is what a chain of
    look-alikes cannot fake. For unit rows the mean squared distance between groups A and B is
    2 - 2 mean(A) . mean(B), so a group costs one vector sum."""
    import heapq

    labels = np.asarray(labels, dtype=np.int64)
    grouped = labels != NOISE
    if grouped.sum() == 0 or nbr.size == 0:
        return labels
    k = int(labels.max()) + 1
    sums = np.zeros((k, Z.shape[1]), dtype=np.float64)
    np.add.at(sums, labels[grouped], Z[grouped])
    counts = np.bincount(labels[grouped], minlength=k).astype(np.float64)
    codes = []
    for j in range(nbr.shape[1]):  # a column at a time: a million rows x 16 at once is ~1 GB
        col = nbr[:, j]
        ok = (col >= 0) & grouped
        a, b = labels[ok], labels[col[ok]]
        ok = (b != NOISE) & (a != b)
        codes.append(np.unique(np.minimum(a[ok], b[ok]) * k + np.maximum(a[ok], b[ok])))
    pairs = np.unique(np.concatenate(codes)) if codes else np.zeros(0, dtype=np.int64)
    xs, ys = pairs // k, pairs % k
    means = sums / np.maximum(counts, 1)[:, None]
    d0 = average_distance(means[xs], means[ys])
    reach = distance if spread_ratio is None else SPREAD_CAP * distance
    close = d0 < reach
    # Only close pairs matter: the mean squared distance of a merged group to another is the
    # size-weighted mean of its parts', so it is below `reach` only if one part's was.
    adjacent: dict[int, set[int]] = {}
    for x, y in zip(xs[close].tolist(), ys[close].tolist()):
        adjacent.setdefault(x, set()).add(y)
        adjacent.setdefault(y, set()).add(x)
    photos: dict[int, set[int]] = {}
    for gi, g in enumerate(groups):
        for c in np.unique(labels[np.asarray(g)]):
            if c != NOISE:
                photos.setdefault(int(c), set()).add(gi)

    def apart(x: int, y: int) -> float:
        return float(average_distance(sums[x] / counts[x], sums[y] / counts[y]))

    def spread(x: int) -> float:
        """root mean square distance between two members of x: sum over ordered pairs of
        |a - b|^2 = 2 n^2 - 2 |sum|^2, over n (n - 1) pairs"""
        n = counts[x]
        return float(np.sqrt(max(0.0, (2 * n * n - 2 * float(sums[x] @ sums[x])) / (n * (n - 1)))))

    def joins(x: int, y: int, d: float) -> bool:
        if d < distance:
            return True
        return (spread_ratio is not None and min(counts[x], counts[y]) >= SPREAD_MIN_SIZE
                and d < spread_ratio * max(spread(x), spread(y)))

    heap = [(apart(x, y), x, y) for x, y in zip(xs[close].tolist(), ys[close].tolist())]
    heapq.heapify(heap)
    into = np.arange(k)
    while heap:
        d, x, y = heapq.heappop(heap)
        if into[x] != x or into[y] != y:
            continue  # one of them was merged since
        if abs(apart(x, y) - d) > 1e-12 or photos.get(x, set()) & photos.get(y, set()):
            continue  # stale (re-queued when its groups changed) or two faces of one photo
        if not joins(x, y, d):
            continue  # re-queued if either group changes
        if counts[y] > counts[x]:
            x, y = y, x
        into[y] = x
        sums[x] += sums[y]
        counts[x] += counts[y]
        photos.setdefault(x, set()).update(photos.pop(y, set()))
        neighbours = (adjacent.pop(y, set()) | adjacent.get(x, set())) - {x, y}
        adjacent[x] = set()
        for z in neighbours:
            adjacent[z].discard(y)
            adjacent[z].discard(x)
            dz = apart(x, z)
            if dz < reach:
                adjacent[x].add(z)
                adjacent[z].add(x)
                heapq.heappush(heap, (dz, min(x, z), max(x, z)))
    root = into.copy()
    for c in range(k):  # follow chains of merges to their last group
        r = c
        while root[r] != r:
            r = root[r]
        root[c] = r
    return _relabel(np.where(grouped, root[np.maximum(labels, 0)], NOISE))


def chinese_whispers(Z: np.ndarray, threshold: float, min_cluster_size: int = 2, *,
                     progress: ProgressCallback = no_progress) -> tuple[np.ndarray, np.ndarray]:
    """(labels, probabilities) of dlib's chinese whispers over the pairs of rows of Z closer than
    `threshold`, taken from each row's CW_K nearest neighbours; clusters smaller than
    min_cluster_size are NOISE, the rest numbered by their smallest row. Probabilities are the share
    of a member's graph neighbours in its own cluster."""
    import dlib

    from .knn import knn_graph

    n = len(Z)
    dist, nbr, _ = knn_graph(Z, min(CW_K, n - 1), progress=progress)
    rows, cols = np.nonzero((dist < threshold) & (nbr >= 0))
    a, b = rows, nbr[rows, cols]
    pairs = np.unique(np.stack([np.minimum(a, b), np.maximum(a, b)], axis=1), axis=0)
    edges = [(i, i) for i in range(n)] + [(int(i), int(j)) for i, j in pairs]
    raw = np.asarray(dlib.chinese_whispers(edges), dtype=np.int64)
    sizes = np.bincount(raw)
    keep = sizes[raw] >= min_cluster_size
    labels = np.full(n, NOISE, dtype=np.int64)
    labels[keep] = raw[keep]
    labels = _relabel(labels)
    probs = np.zeros(n, dtype=np.float64)
    if len(pairs):
        same = labels[pairs[:, 0]] == labels[pairs[:, 1]]
        deg = np.bincount(pairs.ravel(), minlength=n).astype(np.float64)
        inside = np.bincount(pairs[same].ravel(), minlength=n).astype(np.float64)
        probs = np.where(labels != NOISE, inside / np.maximum(deg, 1.0), 0.0)
    return labels, probs


def _check_groups(cannot_link: Sequence[Sequence[int]] | None, n: int) -> list[np.ndarray]:
    if cannot_link is None:
        return []
    groups = []
    for i, g in enumerate(cannot_link):
        try:
            idx = np.unique(np.asarray(list(g), dtype=np.int64))
        except (TypeError, ValueError):
            raise InputError(f"cannot_link group {i} must be a sequence of row indices, got {g!r}") from None
        if idx.size and (idx[0] < 0 or idx[-1] >= n):
            raise InputError(f"cannot_link group {i} has index out of range 0..{n - 1}: {list(map(int, idx))}")
        if idx.size > 1:
            groups.append(idx)
    return groups


def _apply_cannot_link(
    Z: np.ndarray, labels: np.ndarray, probs: np.ndarray, groups: list[np.ndarray], min_cluster_size: int
) -> tuple[np.ndarray, np.ndarray]:
    """Keep one member per (group, cluster): highest probability, then nearest the cluster centroid.

    The others become NOISE; clusters left smaller than min_cluster_size dissolve; evicted points
    then join another cluster if `assign`'s rule accepts them there without a new conflict.
    """
    labels, probs = labels.copy(), probs.copy()
    touched = np.unique(np.concatenate([labels[g] for g in groups]))
    order = np.argsort(labels, kind="stable")
    start = np.searchsorted(labels[order], touched)
    end = np.searchsorted(labels[order], touched, side="right")
    centroids = {int(c): Z[order[a:b]].mean(axis=0) for c, a, b in zip(touched, start, end) if c != NOISE}
    evicted: list[int] = []
    for g in groups:
        for c in np.unique(labels[g]):
            if c == NOISE:
                continue
            members = g[labels[g] == c]
            if members.size < 2:
                continue
            dist = np.linalg.norm(Z[members] - centroids[int(c)], axis=1)
            keep = members[np.lexsort((members, dist, -probs[members]))[0]]
            for r in members[members != keep]:
                evicted.append(int(r))
                labels[r], probs[r] = NOISE, 0.0
    sizes = np.bincount(labels[labels != NOISE])
    for c in np.flatnonzero((sizes > 0) & (sizes < min_cluster_size)):
        probs[labels == c] = 0.0
        labels[labels == c] = NOISE
    labels = _relabel(labels)
    log.info("cannot-link: moved %d point(s) out of shared clusters", len(evicted))

    if evicted and (labels != NOISE).any():
        n_clusters = int(labels.max() + 1)
        ref = np.ascontiguousarray(Z[labels != NOISE], dtype=np.float32)
        ref_labels = labels[labels != NOISE]
        radii = _cluster_radii(ref, ref_labels, n_clusters)
        rows = np.asarray(evicted, dtype=np.int64)
        found = _assign_points(Z[rows].astype(np.float32), ref_labels, radii, _FlatNeighbours(ref))
        for r, (c, conf) in zip(rows, found):
            if c is None:
                continue
            if any(r in g and (labels[g] == c).any() for g in groups):
                continue
            labels[r], probs[r] = c, conf
    return labels, probs


def _relabel(labels: np.ndarray) -> np.ndarray:
    """Renumber clusters 0..k-1 in order of their old ids, keeping NOISE."""
    kept = np.unique(labels[labels != NOISE])
    return np.where(labels == NOISE, NOISE, np.searchsorted(kept, labels)).astype(np.int64)


def _cluster_radii(ref: np.ndarray, ref_labels: np.ndarray, n_clusters: int,
                   only: Optional[np.ndarray] = None) -> np.ndarray:
    """Per cluster: the largest distance from a member to its nearest fellow member.
    only: compute these clusters only (the others stay 0)."""
    radii = np.zeros(n_clusters, dtype=np.float64)
    if n_clusters == 0:
        return radii
    order = np.argsort(ref_labels, kind="stable")
    bounds = np.searchsorted(ref_labels[order], np.arange(n_clusters + 1))
    for c in (range(n_clusters) if only is None else only):
        pts = ref[order[bounds[c]:bounds[c + 1]]].astype(np.float64)
        if len(pts) < 2:
            continue
        sq = (pts * pts).sum(axis=1)
        d2 = sq[:, None] + sq[None, :] - 2.0 * pts @ pts.T
        np.fill_diagonal(d2, np.inf)
        radii[c] = float(np.sqrt(max(0.0, d2.min(axis=1).max())))
    return radii


def _radii_from_knn(Z: np.ndarray, labels: np.ndarray, dist: np.ndarray, nbr: np.ndarray) -> np.ndarray:
    """`_cluster_radii` from the kNN graph: a member's nearest fellow member is usually among its
    graph neighbours; clusters with a member whose fellows are all beyond them are computed exactly."""
    n_clusters = int(labels.max() + 1) if labels.size else 0
    member = labels != NOISE
    nl = np.where(nbr >= 0, labels[np.maximum(nbr, 0)], NOISE - 1)
    same = (nl == labels[:, None]) & member[:, None]
    has = same.any(axis=1)
    first = np.argmax(same, axis=1)
    near = dist[np.arange(len(labels)), first].astype(np.float64)
    radii = np.zeros(n_clusters, dtype=np.float64)
    ok = member & has
    np.maximum.at(radii, labels[ok], near[ok])
    missing = np.unique(labels[member & ~has])
    if missing.size:
        rows = np.flatnonzero(np.isin(labels, missing))
        exact = _cluster_radii(Z[rows], labels[rows], n_clusters, only=missing)
        radii[missing] = exact[missing]
    return radii


class _FlatNeighbours:
    """Exact nearest reference points (FAISS flat L2): `search(Q, k) -> (dist, idx into ref)`."""

    def __init__(self, ref: np.ndarray):
        import faiss

        self.index = faiss.IndexFlatL2(ref.shape[1])
        self.index.add(np.ascontiguousarray(ref, dtype=np.float32))

    def search(self, Q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        D, I = self.index.search(np.ascontiguousarray(Q, dtype=np.float32), k)
        return np.sqrt(np.maximum(D, 0)).astype(np.float64), I


class _GraphNeighbours:
    """Nearest reference points through the HNSW index the kNN graph was built with, which holds
    every fitted row (noise too): ask for more, keep the first k that are clustered."""

    def __init__(self, index: Any, labels: np.ndarray):
        self.index = index
        clustered = labels != NOISE
        self.pos = np.where(clustered, np.cumsum(clustered) - 1, -1)

    def search(self, Q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        n = len(self.pos)
        kk = min(n, max(4 * k, 32))
        D, I = self.index.search(np.ascontiguousarray(Q, dtype=np.float32), kk)
        P = np.where(I >= 0, self.pos[np.maximum(I, 0)], -1)
        keep = P >= 0
        rank = np.cumsum(keep, axis=1) - 1
        keep &= rank < k
        dist = np.full((len(Q), k), np.inf)
        idx = np.full((len(Q), k), -1, dtype=np.int64)
        r, c = np.nonzero(keep)
        dist[r, rank[r, c]] = np.sqrt(np.maximum(D[r, c], 0))
        idx[r, rank[r, c]] = P[r, c]
        return dist, idx


def _assign_points(
    Q: np.ndarray, ref_labels: np.ndarray, radii: np.ndarray, nn: Any
) -> list[tuple[Optional[int], float]]:
    """(cluster, confidence) per row of Q; see `assign` for the rule. nn: a neighbour source over
    the clustered reference points (`_FlatNeighbours` or `_GraphNeighbours`)."""
    if len(ref_labels) == 0 or len(Q) == 0:
        return [(None, 0.0)] * len(Q)
    k = min(ASSIGN_K, len(ref_labels))
    dist, idx = nn.search(Q, k)
    sizes = np.bincount(ref_labels, minlength=len(radii))
    out: list[tuple[Optional[int], float]] = []
    for drow, irow in zip(dist, idx):
        found = irow >= 0
        drow, irow = drow[found], irow[found]
        nbr = ref_labels[irow]
        best: tuple[Optional[int], float] = (None, 0.0)
        for c in dict.fromkeys(nbr.tolist()):  # clusters in order of their nearest member
            d_c = float(drow[np.argmax(nbr == c)])
            r_c = float(radii[c])
            ratio = d_c / r_c if r_c > 0 else (0.0 if d_c == 0 else np.inf)
            if ratio > ASSIGN_SLACK:
                continue
            k_c = min(k, int(sizes[c]))
            vote = float(np.count_nonzero(nbr[:k_c] == c)) / k_c
            conf = vote * (1.0 - 0.5 * ratio / ASSIGN_SLACK)
            if conf > best[1]:
                best = (int(c), conf)
        out.append(best)
    return out


def assign(model: Clusterer, X_new: np.ndarray, X_ref: np.ndarray | None = None, *,
           max_distance: float | None = None) -> list[Assignment]:
    """Place new points into the clusters of a fitted model, like hdbscan's approximate_predict.

    Rule: among the ASSIGN_K nearest clustered reference points, a cluster c is a candidate when its
    nearest member lies within ASSIGN_SLACK * radius_c. Confidence = vote * (1 - 0.5 * ratio / SLACK)
    where ratio = distance / radius_c (so closeness is in [0.5, 1]) and vote is the share of c among
    the min(ASSIGN_K, |c|) nearest reference points. The best candidate wins; no candidate gives
    Assignment(None, 0.0). X_ref (the original fitted X) is needed only when the model was saved
    without its reference points. Models fitted over a kNN graph of more than knn.EXACT_MAX points
    find neighbours through that graph's HNSW index (saved with the model), else exactly.
    max_distance: a cluster is a candidate only when its nearest member is at most this far (the
    model's match distance: a radius grown by a large, loose cluster must not take strangers in).
    """
    model._check_fitted()
    Q = model.transform(X_new).astype(np.float32)
    if X_ref is not None:
        X_ref = _check_matrix(X_ref, "X_ref")
        if X_ref.shape[0] != model.n_samples_:
            raise InputError(f"X_ref has {X_ref.shape[0]} rows but the model was fitted on {model.n_samples_}")
        clustered = model.labels_ != NOISE
        ref_labels = model.labels_[clustered]
        nn: Any = _FlatNeighbours(model.transform(X_ref)[clustered]) if len(ref_labels) else None
    elif model.ann_index_ is not None:
        ref_labels = model.labels_[model.labels_ != NOISE]
        if model._nn_cache is None:
            model._nn_cache = _GraphNeighbours(model.ann_index_, model.labels_)
        nn = model._nn_cache
    elif model.reference_ is None:
        raise InputError("This model was saved without reference points; pass X_ref (the fitted X) to assign()")
    else:
        ref_labels = model.reference_labels_
        if model._nn_cache is None and len(ref_labels):
            model._nn_cache = _FlatNeighbours(model.reference_)
        nn = model._nn_cache
    radii = model.radii_
    if max_distance is not None and model.params_["preprocess"] == "l2-normalize":
        # (a distance between unit vectors; in the seed profile's PCA space it means nothing)
        radii = np.minimum(radii, float(max_distance) / ASSIGN_SLACK)
    return [Assignment(c, conf) for c, conf in _assign_points(Q, ref_labels, radii, nn)]


def save_model(model: Clusterer, path: str | os.PathLike, *, include_reference: bool = True) -> None:
    """Write a fitted model to one .npz file (arrays + a JSON string), atomically."""
    model._check_fitted()
    meta = {
        "format": _FORMAT,
        "constructor": model.get_params(),
        "params": model.params_,
        "n_features_in": model.n_features_in_,
        "n_samples": model.n_samples_,
        "n_clusters": model.n_clusters_,
        "has_reference": bool(include_reference and model.reference_ is not None),
        "ann_index": getattr(model, "ann_index_", None) is not None,
    }
    arrays = {name: getattr(model, name + "_") for name in _ARRAYS}
    if meta["has_reference"]:
        arrays["reference"] = model.reference_
        arrays["reference_labels"] = model.reference_labels_
    path = Path(path)
    if meta["ann_index"]:
        import faiss

        _write_atomic(ann_path(path), lambda tmp: faiss.write_index(model.ann_index_, str(tmp)))
    def write_npz(tmp: str) -> None:
        with open(tmp, "wb") as f:  # a file object: np.savez would append ".npz" to a name
            np.savez(f, meta=np.array(json.dumps(meta, default=_json_scalar)), **arrays)

    _write_atomic(path, write_npz)


def ann_path(path: str | os.PathLike) -> Path:
    """The HNSW index file saved beside a model file (models fitted over a large kNN graph)."""
    return Path(str(path) + ".hnsw")


def _write_atomic(path: Path, write: Any) -> None:
    # A new temporary name (O_EXCL), never a fixed one that could already be a symlink elsewhere.
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _json_scalar(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"cannot store {type(value).__name__} in a model file")


def load_model(path: str | os.PathLike) -> Clusterer:
    """Read a model written by `save_model`; never unpickles anything."""
    try:
        with np.load(path, allow_pickle=False) as z:
            data = {k: z[k] for k in z.files}
    except (OSError, ValueError) as exc:
        raise InputError(f"{path}: not a readable clustering model ({exc})") from None
    try:
        meta = json.loads(str(data["meta"]))
    except (KeyError, ValueError):
        raise InputError(f"{path}: not a peoplemap clustering model (no metadata)") from None
    if meta.get("format") != _FORMAT:
        raise InputError(f"{path}: unsupported model format {meta.get('format')!r}; expected {_FORMAT!r}")
    try:
        ctor = dict(meta["constructor"])
        model = Clusterer(ctor.pop("profile"), min_cluster_size=ctor.pop("min_cluster_size"),
                          min_samples=ctor.pop("min_samples"), **ctor)
        model.params_ = meta["params"]
        model.n_features_in_ = int(meta["n_features_in"])
        model.n_samples_ = int(meta["n_samples"])
        model.n_clusters_ = int(meta["n_clusters"])
        for name in _ARRAYS:
            setattr(model, name + "_", data[name])
        has_ref = meta["has_reference"]
        model.reference_ = data["reference"] if has_ref else None
        model.reference_labels_ = data["reference_labels"] if has_ref else None
    except KeyError as exc:
        raise InputError(f"{path}: damaged clustering model, missing {exc}") from None
    model.ann_index_ = None
    if meta.get("ann_index"):
        try:
            import faiss

            model.ann_index_ = faiss.read_index(str(ann_path(path)))
        except (OSError, RuntimeError) as exc:  # a missing/damaged derived file: exact search instead
            log.warning("%s: cannot read its neighbour index (%s); assigning with exact search", path, exc)
    model._nn_cache = None
    return model
