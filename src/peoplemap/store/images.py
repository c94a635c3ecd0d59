"""Images, which vector sets processed them, and files that could not be used."""
from __future__ import annotations

import os
import time
from typing import Optional


from ..ingest import Skipped
from .db import Database, in_chunks, marks
from .records import BatchCounts, FoundItem, ImageRecord, SkipRecord
from .photos import record_name, write_meta
from .vectors import vector_to_blob


def under(root: str) -> tuple[str, str]:
    """Path range bounds for everything under folder `root` (no LIKE: paths may hold % and _)."""
    prefix = root.rstrip(os.sep) + os.sep
    return prefix, prefix + "\U0010ffff"


class ImagesRepo:
    def __init__(self, db: Database):
        self.db = db

    # -- reading -----------------------------------------------------------------------------
    def known_under(self, root: str, set_id: int) -> dict[str, tuple[int, int, float, bool]]:
        """path -> (image id, size, mtime, processed by this set) for catalogued files under root."""
        lo, hi = under(root)
        return {p: (iid, size, mtime, bool(done)) for iid, p, size, mtime, done in self.db.query(
            "SELECT i.id, i.path, i.size, i.mtime, EXISTS(SELECT 1 FROM processed p "
            "WHERE p.image_id=i.id AND p.set_id=?) FROM images i WHERE i.path >= ? AND i.path < ?",
            (set_id, lo, hi))}

    def skipped_under(self, root: str) -> dict[str, tuple[Optional[int], Optional[float]]]:
        """path -> (size, mtime) of recorded skipped files under root."""
        lo, hi = under(root)
        return {p: (size, mtime) for p, size, mtime in self.db.query(
            "SELECT path, size, mtime FROM skipped WHERE path >= ? AND path < ?", (lo, hi))}

    def skipped(self, root: Optional[str] = None) -> list[Skipped]:
        """Files that could not be used, with the reason (under root only, when given)."""
        if root is None:
            rows = self.db.query("SELECT path, reason FROM skipped ORDER BY path")
        else:
            rows = self.db.query("SELECT path, reason FROM skipped WHERE path >= ? AND path < ? "
                                 "ORDER BY path", under(root))
        return [Skipped(p, r) for p, r in rows]

    def under(self, root: str) -> list[tuple[int, str, str]]:
        """(image id, path, sha256) of the images under root, by path."""
        return [(int(i), p, s) for i, p, s in self.db.query(
            "SELECT id, path, sha256 FROM images WHERE path >= ? AND path < ? ORDER BY path",
            under(root))]

    def processed_with_sha(self, set_id: int, sha256: str, prefer: Optional[int] = None) -> Optional[int]:
        """An image with this content that the set has processed already, or None; `prefer` (the
        file's own image id) first, so that a touched file keeps its own items."""
        row = self.db.one("SELECT i.id FROM images i JOIN processed p ON p.image_id = i.id AND "
                          "p.set_id = ? WHERE i.sha256 = ? ORDER BY i.id = ? DESC LIMIT 1",
                          (set_id, sha256, -1 if prefer is None else prefer))
        return None if row is None else int(row[0])

    def without_items(self, set_id: int) -> list[str]:
        """Paths of images in which the set's model found nothing to embed (e.g. no face)."""
        return [p for (p,) in self.db.query(
            "SELECT i.path FROM images i JOIN processed p ON p.image_id = i.id "
            "WHERE p.set_id = ? AND p.n_items = 0 ORDER BY i.path", (set_id,))]

    def count(self) -> int:
        return int(self.db.one("SELECT COUNT(*) FROM images")[0])

    def find(self, ref: "int | str") -> Optional[tuple[int, str, str]]:
        """(image id, path, sha256) of an image by id or by path, or None."""
        if isinstance(ref, int):
            row = self.db.one("SELECT id, path, sha256 FROM images WHERE id = ?", (ref,))
        else:
            row = self.db.one("SELECT id, path, sha256 FROM images WHERE path = ?", (str(ref),))
        return None if row is None else (int(row[0]), row[1], row[2])

    def add_item(self, image_id: int, set_id: int, item: FoundItem) -> int:
        """One more item in an image the set has processed (a face the detector missed, drawn by
        the user); returns its id. The user said it is a face: a not-a-face record of the same box
        is dropped."""
        with self.db.write() as c:
            x, y, w, h = item.box if item.box is not None else (None, None, None, None)
            c.execute("DELETE FROM not_faces WHERE sha256 = (SELECT sha256 FROM images WHERE id = ?) "
                      "AND x = ? AND y = ? AND w = ? AND h = ?", (image_id, x, y, w, h))
            item_id = int(c.execute(
                "INSERT INTO items(image_id, set_id, x, y, w, h, score) VALUES (?,?,?,?,?,?,?)",
                (image_id, set_id, x, y, w, h, float(item.score))).lastrowid)
            c.execute("INSERT INTO vectors(item_id, vector) VALUES (?, ?)", (item_id, vector_to_blob(item.vector)))
            c.execute("INSERT INTO processed(image_id, set_id, n_items) VALUES (?, ?, 1) "
                      "ON CONFLICT(image_id, set_id) DO UPDATE SET n_items = n_items + 1", (image_id, set_id))
            c.execute("UPDATE vector_sets SET generation = generation + 1 WHERE id = ?", (set_id,))
        return item_id

    # -- writing -----------------------------------------------------------------------------
    def write_batch(self, set_id: int, records: list[ImageRecord], skips: list[SkipRecord]) -> BatchCounts:
        """Commit one batch of an index run in one transaction: skipped files, images, their items
        and vectors. A killed run loses at most the batch in flight."""
        counts = BatchCounts()
        now = time.time()
        with self.db.write() as c:
            for s in skips:
                if s.image_id is not None:
                    c.execute("DELETE FROM images WHERE id = ?", (s.image_id,))
                c.execute("INSERT OR REPLACE INTO skipped(path, reason, size, mtime, seen_at) "
                          "VALUES (?, ?, ?, ?, ?)", (s.path, s.reason, s.size, s.mtime, now))
            for r in records:
                image_id = r.image_id
                if image_id is not None and r.reuse_from == image_id:
                    # Its own content again (a touched or copied-back file): every face, vector,
                    # person and decision stays; only the file's size and time are new.
                    c.execute("UPDATE images SET size=?, mtime=? WHERE id=?", (r.size, r.mtime, image_id))
                    c.execute("DELETE FROM skipped WHERE path = ?", (r.path,))
                    if r.meta is not None:
                        write_meta(c, image_id, r.meta, now)
                    counts.images += 1
                    counts.reused += 1
                    continue
                if image_id is not None:
                    old = c.execute("SELECT sha256 FROM images WHERE id = ?", (image_id,)).fetchone()
                    if old is not None and old[0] != r.sha256:
                        # New content at the same path: every model's items for it are stale.
                        c.execute("DELETE FROM items WHERE image_id = ?", (image_id,))
                        c.execute("DELETE FROM processed WHERE image_id = ?", (image_id,))
                    c.execute("UPDATE images SET sha256=?, size=?, mtime=?, width=?, height=?, "
                              "format=? WHERE id=?", (r.sha256, r.size, r.mtime, r.width, r.height,
                                                      r.format, image_id))
                    c.execute("DELETE FROM items WHERE image_id = ? AND set_id = ?", (image_id, set_id))
                else:
                    image_id = int(c.execute(
                        "INSERT INTO images(path, sha256, size, mtime, width, height, format, added_at) "
                        "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                        (r.path, r.sha256, r.size, r.mtime, r.width, r.height, r.format, now),
                    ).lastrowid)
                c.execute("DELETE FROM skipped WHERE path = ?", (r.path,))
                if r.reuse_from is not None:
                    n = _copy_items(c, r.reuse_from, image_id, set_id)
                    counts.reused += 1
                else:
                    refused = {tuple(b) for b in c.execute(
                        "SELECT x, y, w, h FROM not_faces WHERE sha256 = ?", (r.sha256,))}
                    kept = [it for it in r.items if not _refused(it.box, refused)]
                    n = len(kept)
                    for it in kept:
                        item_id = c.execute(
                            "INSERT INTO items(image_id, set_id, x, y, w, h, score) "
                            "VALUES (?,?,?,?,?,?,?)",
                            (image_id, set_id, *(it.box or (None, None, None, None)), float(it.score)),
                        ).lastrowid
                        c.execute("INSERT INTO vectors(item_id, vector) VALUES (?, ?)",
                                  (item_id, vector_to_blob(it.vector)))
                        if it.name:  # a face region in the photo's metadata named it
                            record_name(c, item_id, it.name)
                c.execute("INSERT OR REPLACE INTO processed(image_id, set_id, n_items) VALUES (?, ?, ?)",
                          (image_id, set_id, n))
                if r.meta is not None:
                    write_meta(c, image_id, r.meta, now)
                counts.images += 1
                counts.items += n
                counts.without_items += n == 0
            c.execute("UPDATE vector_sets SET generation = generation + 1 WHERE id = ?", (set_id,))
        return counts

    def forget(self, gone_images: list[int], gone_skipped: list[str], scan_skips: list[Skipped]) -> None:
        """Drop images and skipped entries whose files are gone; record scan-level problems."""
        with self.db.write() as c:
            for chunk in in_chunks(gone_images):
                c.execute(f"DELETE FROM images WHERE id IN ({marks(len(chunk))})", chunk)
            for chunk in in_chunks(gone_skipped):
                c.execute(f"DELETE FROM skipped WHERE path IN ({marks(len(chunk))})", chunk)
            for s in scan_skips:
                c.execute("INSERT OR REPLACE INTO skipped(path, reason, size, mtime, seen_at) "
                          "VALUES (?, ?, NULL, NULL, ?)", (s.path, s.reason, time.time()))
            if gone_images:
                c.execute("UPDATE vector_sets SET generation = generation + 1")


def _refused(box, refused: set) -> bool:
    """True when `box` is (mostly) one the user said is not a face: intersection over union > 0.5."""
    if box is None or not refused:
        return False
    x, y, w, h = box
    for rx, ry, rw, rh in refused:
        iw = max(0, min(x + w, rx + rw) - max(x, rx))
        ih = max(0, min(y + h, ry + rh) - max(y, ry))
        inter = iw * ih
        if inter and inter / (w * h + rw * rh - inter) > 0.5:
            return True
    return False


def _copy_items(c, src_image: int, dst_image: int, set_id: int) -> int:
    rows = c.execute("SELECT i.x, i.y, i.w, i.h, i.score, v.vector FROM items i "
                     "JOIN vectors v ON v.item_id = i.id WHERE i.image_id = ? AND i.set_id = ? "
                     "ORDER BY i.id", (src_image, set_id)).fetchall()
    for x, y, w, h, score, blob in rows:
        item_id = c.execute("INSERT INTO items(image_id, set_id, x, y, w, h, score) "
                            "VALUES (?,?,?,?,?,?,?)", (dst_image, set_id, x, y, w, h, score)).lastrowid
        c.execute("INSERT INTO vectors(item_id, vector) VALUES (?, ?)", (item_id, blob))
    return len(rows)


__all__ = ["ImagesRepo", "under"]
