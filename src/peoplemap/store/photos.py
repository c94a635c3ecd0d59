"""What photos' metadata says (date, orientation, place) and the names their face regions gave.

`photo_meta` has one row per image whose metadata was read (migration 4); `imported_names` holds
the name a face region gave an item until the index run has made it a confirmed member of the
person of that name (`pending_names` / `names_done`), so a run killed in between finishes the job
on the next run.
"""
from __future__ import annotations

import sqlite3
import time
from typing import Optional, Sequence

from .db import Database, in_chunks, marks
from .records import PhotoMeta


def write_meta(c: sqlite3.Connection, image_id: int, meta: PhotoMeta, now: float) -> None:
    """Inside the caller's transaction (an index batch): the photo's metadata, and its sidecars'
    problems as skipped files (earlier problems of the same sidecars cleared)."""
    c.execute("INSERT OR REPLACE INTO photo_meta(image_id, taken, utc_offset, orientation, latitude, "
              "longitude, altitude, sidecar_mtime) VALUES (?,?,?,?,?,?,?,?)",
              (image_id, meta.taken, meta.utc_offset, meta.orientation, meta.latitude,
               meta.longitude, meta.altitude, meta.sidecar_mtime))
    for side in meta.sidecars:
        c.execute("DELETE FROM skipped WHERE path = ?", (side,))
    for side, reason in meta.sidecar_problems:
        c.execute("INSERT OR REPLACE INTO skipped(path, reason, size, mtime, seen_at) "
                  "VALUES (?, ?, NULL, NULL, ?)", (side, reason, now))


def record_name(c: sqlite3.Connection, item_id: int, name: str) -> None:
    """Inside the caller's transaction: the name a face region gives this new item."""
    c.execute("INSERT OR REPLACE INTO imported_names(item_id, name, applied) VALUES (?, ?, 0)",
              (item_id, name))


class PhotosRepo:
    def __init__(self, db: Database):
        self.db = db

    # -- metadata ----------------------------------------------------------------------------
    def put(self, rows: Sequence[tuple[int, PhotoMeta]]) -> None:
        """Metadata of photos indexed before it was read (older libraries)."""
        now = time.time()
        with self.db.write() as c:
            for image_id, meta in rows:
                write_meta(c, image_id, meta, now)

    def missing_under(self, root: str) -> list[tuple[int, str, int, int]]:
        """(image id, path, width, height) of the images under root whose metadata was never read."""
        from .images import under  # images.py writes through this module's functions

        return [(int(i), p, int(w), int(h)) for i, p, w, h in self.db.query(
            "SELECT i.id, i.path, i.width, i.height FROM images i WHERE i.path >= ? AND i.path < ? "
            "AND NOT EXISTS (SELECT 1 FROM photo_meta m WHERE m.image_id = i.id) ORDER BY i.path",
            under(root))]

    def get(self, image_ids: Sequence[int]) -> dict[int, PhotoMeta]:
        out: dict[int, PhotoMeta] = {}
        for chunk in in_chunks([int(i) for i in image_ids]):
            for row in self.db.query(
                    "SELECT image_id, taken, utc_offset, orientation, latitude, longitude, altitude, "
                    f"sidecar_mtime FROM photo_meta WHERE image_id IN ({marks(len(chunk))})", chunk):
                out[int(row[0])] = PhotoMeta(*row[1:])
        return out

    def taken_of_items(self, item_ids: Sequence[int]) -> dict[int, str]:
        """item id -> the date and time its photo was taken ("YYYY-MM-DD HH:MM:SS"), where known."""
        out: dict[int, str] = {}
        for chunk in in_chunks([int(i) for i in item_ids]):
            out.update((int(i), t) for i, t in self.db.query(
                "SELECT it.id, m.taken FROM items it JOIN photo_meta m ON m.image_id = it.image_id "
                f"WHERE it.id IN ({marks(len(chunk))}) AND m.taken IS NOT NULL", chunk))
        return out

    def years(self) -> list[int]:
        """The years the library's photos were taken in (those whose metadata says)."""
        return sorted(int(y) for (y,) in self.db.query(
            "SELECT DISTINCT substr(taken, 1, 4) FROM photo_meta WHERE taken IS NOT NULL")
            if str(y).isdigit())

    def sizes(self, image_ids: Sequence[int]) -> dict[int, tuple[str, int, int]]:
        """image id -> (path, width, height) of the image as shown (EXIF orientation applied)."""
        out: dict[int, tuple[str, int, int]] = {}
        for chunk in in_chunks([int(i) for i in image_ids]):
            out.update((int(i), (p, int(w), int(h))) for i, p, w, h in self.db.query(
                f"SELECT id, path, width, height FROM images WHERE id IN ({marks(len(chunk))})", chunk))
        return out

    def timeline(self, person_id: int) -> list[tuple[Optional[str], int, str, int]]:
        """(taken, image id, path, item id) of every photo the person is in, one row per photo
        (its first face of the person), dated photos by date, then the undated by path."""
        return [(t, int(i), p, int(it)) for t, i, p, it in self.db.query(
            "SELECT m.taken, im.id, im.path, MIN(it.id) FROM person_items pi "
            "JOIN items it ON it.id = pi.item_id JOIN images im ON im.id = it.image_id "
            "LEFT JOIN photo_meta m ON m.image_id = im.id WHERE pi.person_id = ? "
            "GROUP BY im.id ORDER BY m.taken IS NULL, m.taken, im.path", (person_id,))]

    def sidecars_read(self, root: str, set_id: int) -> dict[str, tuple[int, int, int, Optional[float]]]:
        """path -> (image id, width, height, sidecar mtime when its regions were last read) of the
        images under root that the set has processed."""
        from .images import under

        return {p: (int(i), int(w), int(h), m) for i, p, w, h, m in self.db.query(
            "SELECT i.id, i.path, i.width, i.height, m.sidecar_mtime FROM images i "
            "JOIN processed pr ON pr.image_id = i.id AND pr.set_id = ? "
            "LEFT JOIN photo_meta m ON m.image_id = i.id WHERE i.path >= ? AND i.path < ?",
            (set_id, *under(root)))}

    def regions_read(self, image_id: int, sidecar_mtime: Optional[float], names: Sequence[tuple[int, str]],
                     problems: Sequence[tuple[str, str]], sidecars: Sequence[str]) -> None:
        """A photo's sidecars read again: the names their regions give its items (applied at the end
        of the run), their problems, and when they were read."""
        now = time.time()
        with self.db.write() as c:
            c.execute("INSERT OR IGNORE INTO photo_meta(image_id) VALUES (?)", (image_id,))
            c.execute("UPDATE photo_meta SET sidecar_mtime = ? WHERE image_id = ?", (sidecar_mtime, image_id))
            for item_id, name in names:
                record_name(c, item_id, name)
            for side in sidecars:
                c.execute("DELETE FROM skipped WHERE path = ?", (side,))
            for side, reason in problems:
                c.execute("INSERT OR REPLACE INTO skipped(path, reason, size, mtime, seen_at) "
                          "VALUES (?, ?, NULL, NULL, ?)", (side, reason, now))

    def boxes(self, image_id: int, set_id: int) -> list[tuple[int, Optional[tuple[int, int, int, int]]]]:
        """(item id, box) of the set's items in one image."""
        return [(int(i), None if x is None else (int(x), int(y), int(w), int(h))) for i, x, y, w, h in
                self.db.query("SELECT id, x, y, w, h FROM items WHERE image_id = ? AND set_id = ? ORDER BY id",
                              (image_id, set_id))]

    # -- names from face regions -------------------------------------------------------------
    def pending_names(self, set_id: int) -> list[tuple[int, str]]:
        """(item id, name) of the set's items whose region name has not been applied yet."""
        return [(int(i), n) for i, n in self.db.query(
            "SELECT n.item_id, n.name FROM imported_names n JOIN items it ON it.id = n.item_id "
            "WHERE it.set_id = ? AND n.applied = 0 ORDER BY n.item_id", (set_id,))]

    def names_done(self, item_ids: Sequence[int]) -> None:
        with self.db.write() as c:
            for chunk in in_chunks([int(i) for i in item_ids]):
                c.execute(f"UPDATE imported_names SET applied = 1 WHERE item_id IN ({marks(len(chunk))})",
                          chunk)

    def imported(self, item_ids: Sequence[int]) -> dict[int, str]:
        """item id -> the name its face region gave it (for the items that came with one)."""
        out: dict[int, str] = {}
        for chunk in in_chunks([int(i) for i in item_ids]):
            out.update((int(i), n) for i, n in self.db.query(
                f"SELECT item_id, name FROM imported_names WHERE item_id IN ({marks(len(chunk))})", chunk))
        return out


__all__ = ["PhotosRepo", "write_meta", "record_name"]
