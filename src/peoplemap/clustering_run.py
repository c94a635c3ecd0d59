"""A clustering run over one stored vector set: fit, number clusters by size, store labels."""
from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING, Any

import numpy as np

from .types import NOISE, ProgressCallback

if TYPE_CHECKING:
    from .library import ClusterSummary, Library, VectorSetInfo


def model_path(lib: "Library", clustering_id: int):
    return lib.path / "cluster-models" / f"clustering-{clustering_id}.npz"


def run_clustering(lib: "Library", s: "VectorSetInfo", *, profile: str, min_cluster_size: int | None,
                   progress: ProgressCallback, items=None, **params: Any) -> "ClusterSummary":
    from .cluster import Clusterer, save_model
    from .library import ClusterSummary
    from .people import sync_after_clustering

    t0 = time.perf_counter()
    progress("cluster", 0, 3)
    ids, X = lib.vectors(s.model)
    if items is not None:
        keep = np.isin(ids, np.asarray(list(items), dtype=np.int64))
        ids, X = ids[keep], X[keep]
    cannot_link = _same_image_groups(lib, s.id, ids) if s.item_kind != "image" else None
    progress("cluster", 1, 3)
    est = Clusterer(profile, min_cluster_size=min_cluster_size, **params).fit(X, cannot_link=cannot_link)
    labels = np.asarray(est.labels_, dtype=np.int64)
    probs = np.asarray(est.probabilities_, dtype=np.float64)
    progress("cluster", 2, 3)

    # Number clusters by size, largest first, so "cluster 0" is the biggest group everywhere.
    uniq, counts = np.unique(labels[labels != NOISE], return_counts=True)
    order = uniq[np.lexsort((uniq, -counts))]
    label_map = {int(old): new for new, old in enumerate(order)}
    new_labels = np.array([label_map.get(int(v), NOISE) for v in labels], dtype=np.int64)
    used = _est_params(est)
    seconds = time.perf_counter() - t0
    n_noise = int((new_labels == NOISE).sum())
    with lib.catalog.write() as c:
        cid = int(c.execute(
            "INSERT INTO clusterings(set_id, profile, params, set_generation, n_items, n_clusters, "
            "n_noise, seconds, created_at) VALUES (?,?,?,?,?,?,?,?,?)",
            (s.id, profile, json.dumps({**used, "label_map": {str(k): v for k, v in label_map.items()}}),
             s.generation, len(ids), len(label_map), n_noise, seconds, time.time())).lastrowid)
        c.executemany("INSERT INTO cluster_labels(clustering_id, item_id, label, probability) "
                      "VALUES (?,?,?,?)",
                      [(cid, int(i), int(l), float(p)) for i, l, p in zip(ids, new_labels, probs)])
        sync_after_clustering(c, s.id, {int(i): int(l) for i, l in zip(ids, new_labels)})
        # Older clusterings of this set are history; keep only the latest to bound the file.
        c.execute("DELETE FROM clusterings WHERE set_id = ? AND id < ?", (s.id, cid))
    path = model_path(lib, cid)
    path.parent.mkdir(exist_ok=True)
    save_model(est, path)
    for old in path.parent.glob("clustering-*.npz"):
        if old != path and not lib.catalog.one("SELECT 1 FROM clusterings WHERE id = ?",
                                               (int(old.stem.split("-")[1]),)):
            old.unlink(missing_ok=True)
    progress("cluster", 3, 3)
    return ClusterSummary(model=s.model, profile=profile, params=used, n_items=len(ids),
                          n_clusters=len(label_map), n_noise=n_noise, seconds=round(seconds, 3))


def _est_params(est) -> dict:
    """The estimator's resolved parameters that can be stored as JSON."""
    return {k: v for k, v in est.params_.items() if v is None or isinstance(v, (int, float, str, bool))}


def _same_image_groups(lib: "Library", set_id: int, ids: np.ndarray) -> list[list[int]]:
    """Row indices of items that share an image: two faces in one photo are two people."""
    pos = {int(i): k for k, i in enumerate(ids)}
    groups: dict[int, list[int]] = {}
    for item_id, image_id in lib.catalog.query(
            "SELECT id, image_id FROM items WHERE set_id = ?", (set_id,)):
        if item_id in pos:
            groups.setdefault(image_id, []).append(pos[item_id])
    return [g for g in groups.values() if len(g) > 1]
