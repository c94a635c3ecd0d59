"""A clustering run over one stored vector set: fit, number clusters by size, store labels and
people; and the placement of items indexed since, with the existing clusters and people."""
from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

import numpy as np

from . import membership
from .responses import AssignSummary, ClusterSummary
from .types import NOISE, ProgressCallback

if TYPE_CHECKING:
    from .library import Library
    from .responses import VectorSetInfo

log = logging.getLogger(__name__)


def run_clustering(lib: "Library", s: "VectorSetInfo", *, profile: str, min_cluster_size: int | None,
                   progress: ProgressCallback, items=None, **params: Any) -> ClusterSummary:
    from .cluster import Clusterer, profile_distances

    t0 = time.perf_counter()
    progress("cluster", 0, 3)
    ids, X = lib.vectors(s.model)
    if items is not None:
        keep = np.isin(ids, np.asarray(list(items), dtype=np.int64))
        ids, X = ids[keep], X[keep]
    cannot_link = same_image_groups(lib, s.id, ids) if s.item_kind != "image" else None
    progress("cluster", 1, 3)
    scores = None
    # the profiles' distances are written in dlib face descriptor units (Model.distance_scale)
    for name, value in profile_distances(profile, lib.distance_scale(s.model)).items():
        params.setdefault(name, value)
    if profile == "default":
        # the default profile checks HDBSCAN's groups against the model's match distance
        # (cluster.refine_by_links), joins groups that are one person on average
        # (cluster.merge_groups) and drops groups of weak detections (cluster.drop_weak_groups);
        # models without these get HDBSCAN alone
        params.setdefault("link_distance", lib.match_distance(s.model))
        params.setdefault("merge_distance", lib.merge_distance(s.model) if params["link_distance"] else None)
        params.setdefault("min_group_score", lib.min_group_score(s.model))
        if params["min_group_score"] is not None:
            scores = lib.store.items.scores(s.id, ids)
    est = Clusterer(profile, min_cluster_size=min_cluster_size, **params).fit(
        X, cannot_link=cannot_link, progress=progress, copy=False,  # X is ours: normalise in place
        scores=scores)
    del X
    labels = np.asarray(est.labels_, dtype=np.int64)
    probs = np.asarray(est.probabilities_, dtype=np.float64)
    progress("cluster", 2, 3)

    # Number clusters by size, largest first, so "cluster 0" is the biggest group everywhere.
    uniq, counts = np.unique(labels[labels != NOISE], return_counts=True)
    order = uniq[np.lexsort((uniq, -counts))]
    label_map = {int(old): new for new, old in enumerate(order)}
    lut = np.full(int(labels.max()) + 2 if labels.size else 1, NOISE, dtype=np.int64)
    lut[order] = np.arange(order.size)
    new_labels = np.where(labels == NOISE, NOISE, lut[labels])
    used = estimator_params(est)
    seconds = time.perf_counter() - t0
    cid = lib.store.save_clustering(
        s.id, profile=profile, params={**used, "label_map": {str(k): v for k, v in label_map.items()}},
        generation=s.generation, ids=ids, labels=new_labels, probabilities=probs, seconds=seconds,
        membership=membership.after_clustering)
    models = lib.derived.cluster_models
    models.save(cid, est)
    models.drop(s.id)
    kept = set(lib.store.clusterings.ids())
    models.prune(lambda k: k in kept)
    progress("cluster", 3, 3)
    return ClusterSummary(model=s.model, profile=profile, params=used, n_items=len(ids),
                          n_clusters=len(label_map), n_noise=int((new_labels == NOISE).sum()),
                          seconds=round(seconds, 3))


def estimator_params(est) -> dict:
    """The estimator's resolved parameters that can be stored as JSON."""
    return {k: v for k, v in est.params_.items() if v is None or isinstance(v, (int, float, str, bool))}


def same_image_groups(lib: "Library", set_id: int, ids: np.ndarray) -> list[list[int]]:
    """Row indices (into `ids`) of items that share an image: two faces in one photo are two people."""
    pos = {int(i): k for k, i in enumerate(ids)}
    out = []
    for members in lib.store.items.image_groups(set_id).values():
        rows = [pos[i] for i in members if i in pos]
        if len(rows) > 1:
            out.append(rows)
    return out


def assign_new_items(lib: "Library", s: "VectorSetInfo", *,
                     progress: ProgressCallback) -> AssignSummary:
    """Give items indexed since the last clustering a label (and a person) without re-clustering.

    Each new item goes to the cluster `cluster.assign` picks (the rule search uses for a query);
    its person follows peoplemap.membership.place. Items no cluster accepts are unsorted. The
    clustering then covers every item again (it is no longer stale); a full re-cluster later
    regroups everything and keeps people and names.
    """
    from .searching import assign_points

    t0 = time.perf_counter()
    c = lib.clustering(s.model)
    if c is None:
        return AssignSummary(s.model)
    new_ids = lib.store.clusterings.unlabeled(s.id, c.id)
    if new_ids.size == 0:
        return AssignSummary(s.model)
    progress("assign", 0, int(new_ids.size))
    labels: list[int] = []
    confidences: list[float] = []
    for a in range(0, new_ids.size, 65_536):
        _ids, X = lib.vectors(s.model, ids=new_ids[a:a + 65_536].tolist())
        for found in assign_points(lib, s.model, X):
            labels.append(NOISE if found.cluster is None else int(found.cluster))
            confidences.append(float(found.confidence))
        progress("assign", min(new_ids.size, a + 65_536), int(new_ids.size))
    lib.store.save_placements(s.id, c.id, new_ids.tolist(), labels, confidences, membership.place)
    placed = sum(label != NOISE for label in labels)
    seconds = time.perf_counter() - t0
    out = AssignSummary(s.model, int(new_ids.size), placed, int(new_ids.size) - placed, round(seconds, 3))
    log.info("placed %d of %d new items with existing people in %.1f s", out.assigned, out.new_items,
             seconds)
    return out
