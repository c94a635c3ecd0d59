"""The storage layer: the only code that speaks SQL.

A library's catalog is one SQLite file (WAL mode). `Store` opens it, brings its schema up to date
(numbered migrations, `migrations.py`) and hands out one repository per concern:

- `images`:     images, which vector sets processed them, skipped files (`images.py`)
- `items`:      items and their vectors (`vectors.py`)
- `sets`:       vector sets, one per model (`sets.py`)
- `clusterings`: clusterings and their labels (`clusterings.py`)
- `people`:     people, memberships, the user's decisions (`people.py`)
- `runs`:       index / cluster / forget runs (`runs.py`)
- `photos`:     photos' dates, orientation and places; names from face regions (`photos.py`)

Ids are never reused (AUTOINCREMENT): an item id means one row for the life of the library.
Writes that span concerns (a clustering with its people) are one transaction here.
"""
from __future__ import annotations

import itertools
import json
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ..membership import Member, MembershipPlan
from ..types import NOISE
from .clusterings import ClusteringsRepo
from .db import DB_NAME, Database
from .images import ImagesRepo
from .migrations import SCHEMA_VERSION, Migration, migrate
from .people import PeopleRepo
from .photos import PhotosRepo
from .records import BatchCounts, FoundItem, ImageRecord, PhotoMeta, SkipRecord
from .runs import RunsRepo
from .sets import VectorSetsRepo
from .vectors import ItemsRepo

__all__ = ["Store", "Database", "DB_NAME", "SCHEMA_VERSION", "ImageRecord", "SkipRecord", "FoundItem",
           "BatchCounts", "PhotoMeta"]


class Store:
    """One library's catalog: the repositories over its SQLite file."""

    def __init__(self, db_path: Path):
        self.db = Database(db_path)
        self.migrated: list[Migration] = migrate(self.db.conn(), str(db_path))
        """Migrations this open applied (empty when the file was current)."""
        self.images = ImagesRepo(self.db)
        self.items = ItemsRepo(self.db)
        self.sets = VectorSetsRepo(self.db)
        self.clusterings = ClusteringsRepo(self.db)
        self.people = PeopleRepo(self.db)
        self.runs = RunsRepo(self.db)
        self.photos = PhotosRepo(self.db)

    def close(self) -> None:
        self.db.close()

    def counts(self) -> dict[str, int]:
        return {"images": self.images.count(), "items": self.items.count()}

    def schema_version(self) -> int:
        return int(self.db.one("SELECT value FROM meta WHERE key = 'schema_version'")[0])

    # -- writes across concerns --------------------------------------------------------------
    def save_clustering(self, set_id: int, *, profile: str, params: dict[str, Any], generation: int,
                        ids: np.ndarray, labels: np.ndarray, probabilities: np.ndarray, seconds: float,
                        membership: Callable[[dict[int, int], dict[int, Member], set[tuple[int, int]]],
                                             MembershipPlan]) -> int:
        """Store a clustering, its labels and the people it makes (`membership` decides who is who
        from the labels, the current members and the rejections, read in the same transaction).
        Older clusterings of the set are dropped. Returns the clustering's id."""
        n_noise = int((labels == NOISE).sum())
        n_clusters = len(set(labels.tolist()) - {NOISE})
        with self.db.write() as c:
            cid = int(c.execute(
                "INSERT INTO clusterings(set_id, profile, params, set_generation, n_items, n_clusters, "
                "n_noise, seconds, created_at) VALUES (?,?,?,?,?,?,?,?,?)",
                (set_id, profile, json.dumps(params), generation, len(ids), n_clusters, n_noise,
                 seconds, time.time())).lastrowid)
            c.executemany("INSERT INTO cluster_labels(clustering_id, item_id, label, probability) "
                          "VALUES (?,?,?,?)", zip(itertools.repeat(cid), ids.tolist(), labels.tolist(),
                                                  probabilities.tolist()))
            by_item = dict(zip(ids.tolist(), labels.tolist()))
            plan = membership(by_item, self.people.members(set_id, c), self.people.rejected(set_id, c))
            self.people.apply_plan(c, set_id, plan)
            c.execute("DELETE FROM clusterings WHERE set_id = ? AND id < ?", (set_id, cid))
        return cid

    def save_placements(self, set_id: int, clustering_id: int, ids: list[int], labels: list[int],
                        confidences: list[float],
                        membership: Callable[[dict[int, int], dict[int, dict[int, int]],
                                              set[tuple[int, int]]], list[tuple[int, int]]]) -> None:
        """Labels for items indexed after the clustering, and their people (`membership` decides
        from the labels, the clusters' current members and the rejections); the clustering then
        covers the set's current generation again."""
        placed = sorted({label for label in labels if label != NOISE})
        with self.db.write() as c:
            votes = self.clusterings.votes(clustering_id, placed)
            c.executemany("INSERT OR REPLACE INTO cluster_labels(clustering_id, item_id, label, probability) "
                          "VALUES (?,?,?,?)", zip(itertools.repeat(clustering_id), ids, labels, confidences))
            rows = membership(dict(zip(ids, labels)), votes, self.people.rejected(set_id, c))
            self.people.add_members(c, rows)
            n_noise, n_items = c.execute(
                "SELECT SUM(label = ?), COUNT(*) FROM cluster_labels WHERE clustering_id = ?",
                (NOISE, clustering_id)).fetchone()
            gen = c.execute("SELECT generation FROM vector_sets WHERE id = ?", (set_id,)).fetchone()[0]
            c.execute("UPDATE clusterings SET set_generation = ?, n_items = ?, n_noise = ? WHERE id = ?",
                      (gen, n_items, n_noise or 0, clustering_id))
