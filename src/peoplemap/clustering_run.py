"""A clustering run over one stored vector set: fit, number clusters by size, store labels."""
from __future__ import annotations

import itertools
import json
import logging
import time
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from .types import NOISE, ProgressCallback

if TYPE_CHECKING:
    from .library import ClusterSummary, Library, VectorSetInfo

log = logging.getLogger(__name__)


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
    est = Clusterer(profile, min_cluster_size=min_cluster_size, **params).fit(
        X, cannot_link=cannot_link, progress=progress, copy=False)  # X is ours: normalise in place
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
                      zip(itertools.repeat(cid), ids.tolist(), new_labels.tolist(), probs.tolist()))
        sync_after_clustering(c, s.id, dict(zip(ids.tolist(), new_labels.tolist())))
        # Older clusterings of this set are history; keep only the latest to bound the file.
        c.execute("DELETE FROM clusterings WHERE set_id = ? AND id < ?", (s.id, cid))
    path = model_path(lib, cid)
    path.parent.mkdir(exist_ok=True)
    save_model(est, path)
    for old in path.parent.glob("clustering-*.npz*"):
        if old.name.startswith(path.name):
            continue
        number = old.name.split(".")[0].split("-")[1]
        if not number.isdigit() or not lib.catalog.one("SELECT 1 FROM clusterings WHERE id = ?",
                                                       (int(number),)):
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


@dataclass(frozen=True)
class AssignSummary:
    """What `assign_new_items` did: new items placed with existing clusters/people, or left unsorted."""
    model: str
    new_items: int = 0
    assigned: int = 0
    unsorted: int = 0
    seconds: float = 0.0

    def to_json(self) -> dict:
        return asdict(self)


def assign_new_items(lib: "Library", s: "VectorSetInfo", *,
                     progress: ProgressCallback) -> AssignSummary:
    """Give items indexed since the last clustering a label (and a person) without re-clustering.

    Each new item goes to the cluster `cluster.assign` picks (the rule search uses for a query);
    its person is the person holding most of that cluster's items. Items no cluster accepts are
    unsorted. The clustering then covers every item again (it is no longer stale); a full
    re-cluster later regroups everything and keeps people and names (people.sync_after_clustering).
    """
    from .searching import _assign

    t0 = time.perf_counter()
    c = lib.clustering(s.model)
    if c is None:
        return AssignSummary(s.model)
    new_ids = np.asarray([r[0] for r in lib.catalog.query(
        "SELECT i.id FROM items i WHERE i.set_id = ? AND NOT EXISTS (SELECT 1 FROM cluster_labels cl "
        "WHERE cl.clustering_id = ? AND cl.item_id = i.id) ORDER BY i.id", (s.id, c.id))], dtype=np.int64)
    if new_ids.size == 0:
        return AssignSummary(s.model)
    progress("assign", 0, int(new_ids.size))
    labels: list[int] = []
    confidences: list[float] = []
    for a in range(0, new_ids.size, 65_536):
        ids, X = lib.vectors(s.model, ids=new_ids[a:a + 65_536].tolist())
        for found in _assign(lib, s.model, X):
            labels.append(NOISE if found.cluster is None else int(found.cluster))
            confidences.append(float(found.confidence))
        progress("assign", min(new_ids.size, a + 65_536), int(new_ids.size))
    placed = [label for label in labels if label != NOISE]
    with lib.catalog.write() as w:
        owner = _person_of_labels(w, c.id, sorted(set(placed)))
        w.executemany("INSERT OR REPLACE INTO cluster_labels(clustering_id, item_id, label, probability) "
                      "VALUES (?,?,?,?)", zip(itertools.repeat(c.id), new_ids.tolist(), labels, confidences))
        w.executemany("INSERT OR IGNORE INTO person_items(item_id, person_id, pinned) VALUES (?, ?, 0)",
                      [(i, owner[label]) for i, label in zip(new_ids.tolist(), labels) if label in owner])
        n_noise = w.execute("SELECT COUNT(*) FROM cluster_labels WHERE clustering_id = ? AND label = ?",
                            (c.id, NOISE)).fetchone()[0]
        n_items = w.execute("SELECT COUNT(*) FROM cluster_labels WHERE clustering_id = ?",
                            (c.id,)).fetchone()[0]
        gen = w.execute("SELECT generation FROM vector_sets WHERE id = ?", (s.id,)).fetchone()[0]
        w.execute("UPDATE clusterings SET set_generation = ?, n_items = ?, n_noise = ? WHERE id = ?",
                  (gen, n_items, n_noise, c.id))
    seconds = time.perf_counter() - t0
    out = AssignSummary(s.model, int(new_ids.size), len(placed), int(new_ids.size) - len(placed),
                        round(seconds, 3))
    log.info("placed %d of %d new items with existing people in %.1f s", out.assigned, out.new_items,
             seconds)
    return out


def _person_of_labels(c, clustering_id: int, labels: list[int]) -> dict[int, int]:
    """cluster label -> the person holding most of its items (labels with no person are left out)."""
    votes: dict[int, tuple[int, int]] = {}
    for k in range(0, len(labels), 500):
        chunk = labels[k:k + 500]
        for label, person_id, n in c.execute(
                "SELECT cl.label, pi.person_id, COUNT(*) FROM cluster_labels cl JOIN person_items pi "
                "ON pi.item_id = cl.item_id WHERE cl.clustering_id = ? AND cl.label IN ("
                + ",".join("?" * len(chunk)) + ") GROUP BY cl.label, pi.person_id",
                (clustering_id, *chunk)):
            if label not in votes or (n, -person_id) > (votes[label][1], -votes[label][0]):
                votes[label] = (person_id, n)
    return {label: p for label, (p, _n) in votes.items()}
