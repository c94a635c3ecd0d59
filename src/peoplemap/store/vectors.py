"""Items (one face, body or whole image each) and their stored vectors."""
from __future__ import annotations

from typing import Iterator, Optional, Sequence

import numpy as np

from ..errors import LibraryError
from ..types import Item
from .db import Database, in_chunks, marks


def vector_to_blob(v: np.ndarray) -> bytes:
    return np.ascontiguousarray(v, dtype="<f4").tobytes()


def blobs_to_matrix(blobs: list[bytes], dim: int, *, first: int = 0) -> np.ndarray:
    """Stored float32 vectors as an (n, dim) array; LibraryError naming a damaged one (numbered
    from `first`)."""
    if not blobs:
        return np.zeros((0, dim), dtype=np.float32)
    bad = next((i for i, b in enumerate(blobs) if len(b) != 4 * dim), None)
    if bad is not None:
        raise LibraryError(f"the library's vectors are damaged: vector {first + bad} has "
                           f"{len(blobs[bad])} bytes, not {4 * dim} ({dim} float32); re-index with --rebuild")
    X = np.frombuffer(b"".join(blobs), dtype="<f4").reshape(len(blobs), dim)
    return X.astype(np.float32, copy=True)


_ITEM_SQL = ("SELECT i.id, i.image_id, im.path, i.x, i.y, i.w, i.h, i.score FROM items i "
             "JOIN images im ON im.id = i.image_id WHERE i.set_id = ?")


def _item(r: tuple, kind: str) -> Item:
    box = None if r[3] is None else (int(r[3]), int(r[4]), int(r[5]), int(r[6]))
    return Item(id=int(r[0]), image_id=int(r[1]), path=r[2], box=box, kind=kind, score=float(r[7]))


class ItemsRepo:
    def __init__(self, db: Database):
        self.db = db

    def get(self, set_id: int, kind: str, ids: Optional[Sequence[int]] = None) -> list[Item]:
        """Items of a set (only the given ids, in that order, when ids is not None)."""
        if ids is None:
            return [_item(r, kind) for r in self.db.query(_ITEM_SQL + " ORDER BY i.id", (set_id,))]
        ids = [int(i) for i in ids]
        out: dict[int, Item] = {}
        for chunk in in_chunks(ids):
            for r in self.db.query(_ITEM_SQL + f" AND i.id IN ({marks(len(chunk))})", [set_id, *chunk]):
                it = _item(r, kind)
                out[it.id] = it
        return [out[i] for i in ids if i in out]

    def of_image(self, image_id: int, kind: str) -> list[Item]:
        """Every item found in one image (all vector sets), in id order."""
        sql = _ITEM_SQL.replace("WHERE i.set_id = ?", "WHERE i.image_id = ?")
        return [_item(r, kind) for r in self.db.query(sql + " ORDER BY i.id", (image_id,))]

    def scores(self, set_id: int, ids: np.ndarray) -> np.ndarray:
        """The detection score of each of `ids` (items of the set), in their order."""
        rows = self.db.query("SELECT id, score FROM items WHERE set_id = ? ORDER BY id", (set_id,))
        all_ids = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
        all_scores = np.fromiter((r[1] for r in rows), dtype=np.float64, count=len(rows))
        at = np.searchsorted(all_ids, ids)
        if len(ids) and (at.max() >= len(all_ids) or not (all_ids[at] == ids).all()):
            raise KeyError("some items are not in the set")
        return all_scores[at]

    def prominence(self, ids: Sequence[int]) -> dict[int, float]:
        """Per item, its box's shorter side over its photo's shorter side (1.0 for whole images):
        how much the photo is about it."""
        import json

        rows = self.db.query(
            "SELECT it.id, it.w, it.h, i.width, i.height FROM items it JOIN images i ON i.id = it.image_id "
            "WHERE it.id IN (SELECT value FROM json_each(?))", (json.dumps([int(i) for i in ids]),))
        return {int(i): 1.0 if w is None else min(w, h) / max(1, min(W, H)) for i, w, h, W, H in rows}

    def ids(self, set_id: int) -> np.ndarray:
        """Every item id of the set, ascending."""
        rows = self.db.query("SELECT id FROM items WHERE set_id = ? ORDER BY id", (set_id,))
        return np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))

    def count(self, set_id: Optional[int] = None) -> int:
        if set_id is None:
            return int(self.db.one("SELECT COUNT(*) FROM items")[0])
        return int(self.db.one("SELECT COUNT(*) FROM items WHERE set_id = ?", (set_id,))[0])

    def sample_ids(self, set_id: int, k: int) -> np.ndarray:
        """k item ids of the set, a deterministic pseudo-random sample (a multiplicative hash of the
        id orders them; SQLite keeps only the k smallest), ascending."""
        rows = self.db.query(
            "SELECT id FROM items WHERE set_id = ? ORDER BY (id * 2654435761) % 4294967296, id LIMIT ?",
            (set_id, int(k)))
        return np.sort(np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows)))

    def id_shards(self, set_id: int, shard: int) -> Iterator[np.ndarray]:
        """The set's item ids ascending, `shard` at a time (keyset pagination: no list of the whole
        set is ever held)."""
        last = -1
        while True:
            rows = self.db.query("SELECT id FROM items WHERE set_id = ? AND id > ? ORDER BY id LIMIT ?",
                                 (set_id, last, int(shard)))
            if not rows:
                return
            ids = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
            last = int(ids[-1])
            yield ids

    def image_groups(self, set_id: int) -> dict[int, list[int]]:
        """image id -> its item ids, for images with more than one item of the set."""
        groups: dict[int, list[int]] = {}
        for item_id, image_id in self.db.query(
                "SELECT id, image_id FROM items WHERE set_id = ? AND image_id IN (SELECT image_id "
                "FROM items WHERE set_id = ? GROUP BY image_id HAVING COUNT(*) > 1)", (set_id, set_id)):
            groups.setdefault(int(image_id), []).append(int(item_id))
        return groups

    def vectors(self, set_id: int, dim: int, ids: Optional[Sequence[int]] = None
                ) -> tuple[np.ndarray, np.ndarray]:
        """(item ids int64 (n,), raw vectors float32 (n, dim)) in item id order, only `ids` when
        given. Rows stream from SQLite into one preallocated array in one read snapshot, so a
        million vectors need little more memory than the result."""
        if ids is None:
            where, chunks = "", [()]
        else:
            wanted = sorted({int(i) for i in ids})
            chunks = [tuple(ch) for ch in in_chunks(wanted)]
            where = "AND i.id IN ({})"
        with self.db.snapshot() as conn:
            n = 0
            for ch in chunks:
                n += conn.execute(
                    "SELECT COUNT(*) FROM items i JOIN vectors v ON v.item_id = i.id WHERE i.set_id = ? "
                    + where.format(marks(len(ch))), (set_id, *ch)).fetchone()[0]
            out_ids = np.empty(n, dtype=np.int64)
            X = np.empty((n, dim), dtype=np.float32)
            k = 0
            for ch in chunks:
                cur = conn.execute(
                    "SELECT i.id, v.vector FROM items i JOIN vectors v ON v.item_id = i.id "
                    "WHERE i.set_id = ? " + where.format(marks(len(ch))) + " ORDER BY i.id",
                    (set_id, *ch))
                while rows := cur.fetchmany(8192):
                    m = len(rows)
                    out_ids[k:k + m] = [r[0] for r in rows]
                    X[k:k + m] = blobs_to_matrix([r[1] for r in rows], dim, first=k)
                    k += m
        return out_ids, X

    def delete(self, set_id: int, ids: Sequence[int]) -> None:
        """Delete items and their vectors for good: secure_delete overwrites the freed pages and the
        WAL is checkpointed, so the vectors are not left behind in the file."""
        conn = self.db.conn()
        conn.execute("PRAGMA secure_delete = ON")
        with self.db.write() as c:
            for chunk in in_chunks(ids):
                c.execute(f"DELETE FROM items WHERE id IN ({marks(len(chunk))})", chunk)
            c.execute("UPDATE vector_sets SET generation = generation + 1 WHERE id = ?", (set_id,))
        self.db.checkpoint()
