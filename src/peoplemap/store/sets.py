"""Vector sets: one per model, with the model's version and a generation that every change bumps."""
from __future__ import annotations

import json
import time
from typing import Any

from ..errors import LibraryError
from ..responses import VectorSetInfo
from .db import Database


class VectorSetsRepo:
    def __init__(self, db: Database):
        self.db = db

    def all(self) -> list[VectorSetInfo]:
        rows = self.db.query(
            "SELECT s.id, s.model, s.version, s.dim, s.item_kind, s.description, s.generation, "
            "(SELECT COUNT(*) FROM items i WHERE i.set_id = s.id), "
            "(SELECT COUNT(*) FROM processed p WHERE p.set_id = s.id) "
            "FROM vector_sets s ORDER BY s.id")
        return [VectorSetInfo(r[0], r[1], r[2], r[3], r[4], json.loads(r[5]), r[7], r[8], r[6])
                for r in rows]

    def ensure(self, model: str, version: str, dim: int, item_kind: str, description: dict[str, Any],
               *, rebuild: bool, compatible: tuple[str, ...] = ()) -> int:
        """The id of the model's set, created if missing; a set made by another version (or
        rebuild=True) is dropped and made anew, and without rebuild that is refused. A set made by
        a `compatible` version (the same vectors under another name) takes the current version."""
        row = self.db.one("SELECT id, version, dim FROM vector_sets WHERE model = ?", (model,))
        if row is not None:
            set_id, old_version, old_dim = row
            if old_version in compatible and old_dim == dim and not rebuild:
                with self.db.write() as c:
                    c.execute("UPDATE vector_sets SET version = ? WHERE id = ?", (version, set_id))
                old_version = version
            if old_version == version and old_dim == dim and not rebuild:
                return int(set_id)
            if not rebuild:
                raise LibraryError(
                    f"the library's {model} vectors were made by version {old_version} ({old_dim}-d) "
                    f"and the installed model is version {version} ({dim}-d); they cannot be mixed. "
                    "Re-run with --rebuild to re-extract them")
            with self.db.write() as c:
                c.execute("DELETE FROM vector_sets WHERE id = ?", (set_id,))
        with self.db.write() as c:
            return int(c.execute(
                "INSERT INTO vector_sets(model, version, dim, item_kind, description, created_at) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (model, version, dim, item_kind, json.dumps(description), time.time())).lastrowid)

    def bump(self, set_id: int) -> None:
        """The set's vectors changed in place (a new whitening): everything derived is stale."""
        with self.db.write() as c:
            c.execute("UPDATE vector_sets SET generation = generation + 1 WHERE id = ?", (set_id,))
