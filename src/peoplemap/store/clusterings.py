"""Clusterings of a vector set and their labels (only the latest clustering of a set is kept)."""
from __future__ import annotations

import json
from typing import Optional, Sequence

import numpy as np

from ..responses import Clustering
from .db import Database, in_chunks, marks


class ClusteringsRepo:
    def __init__(self, db: Database):
        self.db = db

    def latest(self, set_id: int, generation: int) -> Optional[Clustering]:
        """The set's current clustering; stale when the set's generation moved on since."""
        row = self.db.one("SELECT id, profile, params, set_generation, created_at FROM clusterings "
                          "WHERE set_id = ? ORDER BY id DESC LIMIT 1", (set_id,))
        if row is None:
            return None
        return Clustering(int(row[0]), set_id, row[1], json.loads(row[2]), row[3] != generation, row[4])

    def ids(self, set_id: Optional[int] = None) -> list[int]:
        """Ids of the stored clusterings (of one set, when given)."""
        if set_id is None:
            return [int(i) for (i,) in self.db.query("SELECT id FROM clusterings")]
        return [int(i) for (i,) in self.db.query("SELECT id FROM clusterings WHERE set_id = ?", (set_id,))]

    def labels(self, clustering_id: int, ids: Optional[Sequence[int]] = None) -> dict[int, int]:
        """item id -> label (NOISE for unsorted), only the given items when ids is not None."""
        sql = "SELECT item_id, label FROM cluster_labels WHERE clustering_id = ?"
        if ids is None:
            return dict(self.db.query(sql, (clustering_id,)))
        out: dict[int, int] = {}
        for chunk in in_chunks([int(i) for i in ids]):
            out.update(self.db.query(sql + f" AND item_id IN ({marks(len(chunk))})", [clustering_id, *chunk]))
        return out

    def unlabeled(self, set_id: int, clustering_id: int) -> np.ndarray:
        """Item ids of the set that the clustering has no label for (indexed since), ascending."""
        rows = self.db.query(
            "SELECT i.id FROM items i WHERE i.set_id = ? AND NOT EXISTS (SELECT 1 FROM cluster_labels "
            "cl WHERE cl.clustering_id = ? AND cl.item_id = i.id) ORDER BY i.id", (set_id, clustering_id))
        return np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))

    def votes(self, clustering_id: int, labels: Sequence[int]) -> dict[int, dict[int, int]]:
        """label -> {person id: how many of the cluster's items belong to that person}."""
        out: dict[int, dict[int, int]] = {}
        for chunk in in_chunks(sorted({int(x) for x in labels})):
            for label, person_id, n in self.db.query(
                    "SELECT cl.label, pi.person_id, COUNT(*) FROM cluster_labels cl JOIN person_items pi "
                    "ON pi.item_id = cl.item_id WHERE cl.clustering_id = ? AND cl.label IN ("
                    + marks(len(chunk)) + ") GROUP BY cl.label, pi.person_id", (clustering_id, *chunk)):
                out.setdefault(int(label), {})[int(person_id)] = int(n)
        return out
