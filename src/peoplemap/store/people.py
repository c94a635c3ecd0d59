"""People of a vector set, who belongs to them, and the user's decisions about them."""
from __future__ import annotations

import sqlite3
import time
from typing import Optional, Sequence

import numpy as np

from ..membership import Member, MembershipPlan
from .db import Database, in_chunks, marks


class PeopleRepo:
    def __init__(self, db: Database):
        self.db = db

    # -- reading -----------------------------------------------------------------------------
    def rows(self, set_id: int) -> list[tuple[int, Optional[str], bool, int]]:
        """(person id, name, hidden, item id) of every membership of the set, by person then item."""
        return [(int(p), n, bool(h), int(i)) for p, n, h, i in self.db.query(
            "SELECT pe.id, pe.name, pe.hidden, pi.item_id FROM people pe JOIN person_items pi "
            "ON pi.person_id = pe.id WHERE pe.set_id = ? ORDER BY pe.id, pi.item_id", (set_id,))]

    def listing(self, set_id: int) -> list[tuple[int, Optional[str], bool]]:
        """(person id, name, hidden) of every person of the set, by id."""
        return [(int(p), n, bool(h)) for p, n, h in self.db.query(
            "SELECT id, name, hidden FROM people WHERE set_id = ? ORDER BY id", (set_id,))]

    def membership_arrays(self, set_id: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(item ids, person ids, confirmed) of every membership of the set as arrays, in no
        particular order: a whole-library read without a Python object per face (peoplemap.review)."""
        a = np.array(self.db.query(
            "SELECT pi.item_id, pi.person_id, pi.pinned FROM person_items pi JOIN people pe "
            "ON pe.id = pi.person_id WHERE pe.set_id = ?", (set_id,)), dtype=np.int64).reshape(-1, 3)
        return a[:, 0].copy(), a[:, 1].copy(), a[:, 2] != 0

    def of_items(self, item_ids: Sequence[int]) -> dict[int, tuple[int, Optional[str]]]:
        """item id -> (person id, name) for the given items only (the search hot path)."""
        out: dict[int, tuple[int, Optional[str]]] = {}
        for chunk in in_chunks([int(i) for i in item_ids]):
            for item_id, pid, name in self.db.query(
                    "SELECT pi.item_id, pe.id, pe.name FROM person_items pi JOIN people pe ON "
                    f"pe.id = pi.person_id WHERE pi.item_id IN ({marks(len(chunk))})", chunk):
                out[int(item_id)] = (int(pid), name)
        return out

    def names(self, person_ids: Sequence[int]) -> dict[int, Optional[str]]:
        out: dict[int, Optional[str]] = {}
        for chunk in in_chunks([int(i) for i in person_ids]):
            out.update(self.db.query(f"SELECT id, name FROM people WHERE id IN ({marks(len(chunk))})", chunk))
        return out

    def covers(self, set_id: int) -> dict[int, int]:
        """person id -> the face the user chose to show the person by."""
        return {int(p): int(i) for p, i in self.db.query(
            "SELECT id, cover_item_id FROM people WHERE set_id = ? AND cover_item_id IS NOT NULL", (set_id,))}

    def set_cover(self, person_id: int, item_id: Optional[int]) -> None:
        """Show the person by this face (None: peoplemap picks)."""
        with self.db.write() as c:
            c.execute("UPDATE people SET cover_item_id = ? WHERE id = ?", (item_id, person_id))

    def members(self, set_id: int, conn: Optional[sqlite3.Connection] = None) -> dict[int, Member]:
        """item id -> its person and whether the user confirmed it."""
        c = conn or self.db.conn()
        return {int(i): Member(int(p), bool(pin)) for i, p, pin in c.execute(
            "SELECT pi.item_id, pi.person_id, pi.pinned FROM person_items pi JOIN people pe "
            "ON pe.id = pi.person_id WHERE pe.set_id = ?", (set_id,))}

    def rejected(self, set_id: int, conn: Optional[sqlite3.Connection] = None) -> set[tuple[int, int]]:
        """(item id, person id) pairs the user said are not the same person."""
        c = conn or self.db.conn()
        return {(int(i), int(p)) for i, p in c.execute(
            "SELECT r.item_id, r.person_id FROM rejections r JOIN people pe ON pe.id = r.person_id "
            "WHERE pe.set_id = ?", (set_id,))}

    def different(self, set_id: int) -> set[tuple[int, int]]:
        """(a, b) person pairs, a < b, that the user said are different people."""
        return {(int(a), int(b)) for a, b in self.db.query(
            "SELECT d.a, d.b FROM different_people d JOIN people pe ON pe.id = d.a WHERE pe.set_id = ?",
            (set_id,))}

    # -- what clustering and placement write -----------------------------------------------
    def apply_plan(self, c: sqlite3.Connection, set_id: int, plan: MembershipPlan) -> None:
        """Inside the caller's transaction: unconfirmed memberships become `plan`'s; new people are
        made for its negative ids; people left without items are dropped."""
        c.execute("DELETE FROM person_items WHERE pinned = 0 AND person_id IN "
                  "(SELECT id FROM people WHERE set_id = ?)", (set_id,))
        now = time.time()
        # New people get ids above every id ever given (AUTOINCREMENT's counter), in one batch.
        seq = c.execute("SELECT seq FROM sqlite_sequence WHERE name = 'people'").fetchone()
        top = max(int(seq[0]) if seq else 0, int(c.execute("SELECT MAX(id) FROM people").fetchone()[0] or 0))
        new_ids = {-(k + 1): top + 1 + k for k in range(plan.new_people)}
        c.executemany("INSERT INTO people(id, set_id, created_at) VALUES (?, ?, ?)",
                      [(pid, set_id, now) for pid in new_ids.values()])
        c.executemany("INSERT INTO person_items(item_id, person_id, pinned) VALUES (?, ?, 0)",
                      [(i, new_ids.get(p, p)) for i, p in plan.rows])
        c.execute("DELETE FROM people WHERE set_id = ? AND id NOT IN "
                  "(SELECT DISTINCT person_id FROM person_items)", (set_id,))

    def add_members(self, c: sqlite3.Connection, rows: list[tuple[int, int]]) -> None:
        """Inside the caller's transaction: unconfirmed memberships for items that have none."""
        c.executemany("INSERT OR IGNORE INTO person_items(item_id, person_id, pinned) VALUES (?, ?, 0)", rows)

    # -- the user's edits ------------------------------------------------------------------
    def rename(self, person_id: int, name: Optional[str]) -> None:
        with self.db.write() as c:
            c.execute("UPDATE people SET name = ? WHERE id = ?", (name, person_id))

    def hide(self, person_id: int, hidden: bool) -> None:
        with self.db.write() as c:
            c.execute("UPDATE people SET hidden = ? WHERE id = ?", (int(hidden), person_id))

    def merge(self, target: int, others: Sequence[int], name: Optional[str]) -> None:
        """Every item of `others` joins `target`, confirmed; the others are removed, their
        rejections carried over to the target."""
        with self.db.write() as c:
            for o in others:
                c.execute("UPDATE person_items SET person_id = ?, pinned = 1 WHERE person_id = ?", (target, o))
                c.execute("UPDATE OR IGNORE rejections SET person_id = ? WHERE person_id = ?", (target, o))
                c.execute("DELETE FROM people WHERE id = ?", (o,))
            c.execute("UPDATE person_items SET pinned = 1 WHERE person_id = ?", (target,))
            c.execute("UPDATE people SET name = ? WHERE id = ?", (name, target))

    def split(self, set_id: int, person_id: int, item_ids: Sequence[int], name: Optional[str]) -> int:
        """Move items out of a person into a new person of their own; both keep their items
        confirmed. Returns the new person's id."""
        with self.db.write() as c:
            new_id = int(c.execute("INSERT INTO people(set_id, name, created_at) VALUES (?, ?, ?)",
                                   (set_id, name, time.time())).lastrowid)
            c.executemany("UPDATE person_items SET person_id = ?, pinned = 1 WHERE item_id = ?",
                          [(new_id, i) for i in item_ids])
            c.execute("UPDATE person_items SET pinned = 1 WHERE person_id = ?", (person_id,))
        return new_id

    def create(self, set_id: int, name: Optional[str], item_ids: Sequence[int]) -> int:
        """A new person holding these items, confirmed (they leave whoever had them)."""
        with self.db.write() as c:
            new_id = int(c.execute("INSERT INTO people(set_id, name, created_at) VALUES (?, ?, ?)",
                                   (set_id, name, time.time())).lastrowid)
            c.executemany("INSERT OR REPLACE INTO person_items(item_id, person_id, pinned) VALUES (?, ?, 1)",
                          [(int(i), new_id) for i in item_ids])
            c.execute("DELETE FROM people WHERE set_id = ? AND id NOT IN "
                      "(SELECT DISTINCT person_id FROM person_items)", (set_id,))
        return new_id

    def confirm(self, set_id: int, person_id: int, item_ids: Sequence[int]) -> None:
        """These items belong to the person, for good (they may come from another person)."""
        with self.db.write() as c:
            for chunk in in_chunks(item_ids):
                c.execute(f"DELETE FROM rejections WHERE person_id = ? AND item_id IN ({marks(len(chunk))})",
                          (person_id, *chunk))
            c.executemany("INSERT OR REPLACE INTO person_items(item_id, person_id, pinned) VALUES (?, ?, 1)",
                          [(int(i), person_id) for i in item_ids])
            c.execute("DELETE FROM people WHERE set_id = ? AND id NOT IN "
                      "(SELECT DISTINCT person_id FROM person_items)", (set_id,))

    def reject(self, set_id: int, person_id: int, item_ids: Sequence[int]) -> None:
        """These items are not the person: they leave it and never join it again."""
        now = time.time()
        with self.db.write() as c:
            for chunk in in_chunks(item_ids):
                c.execute(f"DELETE FROM person_items WHERE person_id = ? AND item_id IN ({marks(len(chunk))})",
                          (person_id, *chunk))
            c.executemany("INSERT OR REPLACE INTO rejections(item_id, person_id, decided_at) VALUES (?, ?, ?)",
                          [(int(i), person_id, now) for i in item_ids])

    def mark_different(self, a: int, b: int) -> None:
        a, b = min(a, b), max(a, b)
        with self.db.write() as c:
            c.execute("INSERT OR REPLACE INTO different_people(a, b, decided_at) VALUES (?, ?, ?)",
                      (a, b, time.time()))

    def not_a_face(self, set_id: int, item_ids: Sequence[int]) -> None:
        """False detections: the items go (with their vectors), and their boxes are remembered by
        the photo's content so that processing the photo again does not bring them back."""
        now = time.time()
        with self.db.write() as c:
            for chunk in in_chunks(item_ids):
                rows = c.execute(
                    "SELECT im.sha256, i.x, i.y, i.w, i.h FROM items i JOIN images im ON im.id = i.image_id "
                    f"WHERE i.id IN ({marks(len(chunk))}) AND i.x IS NOT NULL", chunk).fetchall()
                c.executemany("INSERT OR REPLACE INTO not_faces(sha256, x, y, w, h, decided_at) "
                              "VALUES (?, ?, ?, ?, ?, ?)", [(*r, now) for r in rows])
                c.execute(f"DELETE FROM items WHERE id IN ({marks(len(chunk))})", chunk)
            c.execute("DELETE FROM people WHERE set_id = ? AND id NOT IN "
                      "(SELECT DISTINCT person_id FROM person_items)", (set_id,))
            c.execute("UPDATE vector_sets SET generation = generation + 1 WHERE id = ?", (set_id,))

    def snapshot(self, set_id: int) -> dict:
        """The set's people and the user's decisions, keyed by photo path and box instead of item
        id, so that they can be carried over to the items of a re-extraction (`restore`)."""
        q = self.db.query
        face = ("JOIN items i ON i.id = {t}.item_id JOIN images im ON im.id = i.image_id "
                "JOIN people pe ON pe.id = {t}.person_id WHERE pe.set_id = ?")
        return {
            "people": [(int(p), n, bool(h)) for p, n, h in q(
                "SELECT id, name, hidden FROM people WHERE set_id = ?", (set_id,))],
            "members": [(int(p), bool(pin), path, None if x is None else (x, y, w, h)) for p, pin, path, x, y, w, h in q(
                "SELECT pi.person_id, pi.pinned, im.path, i.x, i.y, i.w, i.h FROM person_items pi "
                + face.format(t="pi"), (set_id,))],
            "rejections": [(int(p), path, None if x is None else (x, y, w, h)) for p, path, x, y, w, h in q(
                "SELECT r.person_id, im.path, i.x, i.y, i.w, i.h FROM rejections r " + face.format(t="r"),
                (set_id,))],
            "covers": [(int(p), path, None if x is None else (x, y, w, h)) for p, path, x, y, w, h in q(
                "SELECT pe.id, im.path, i.x, i.y, i.w, i.h FROM people pe JOIN items i ON "
                "i.id = pe.cover_item_id JOIN images im ON im.id = i.image_id WHERE pe.set_id = ?", (set_id,))],
            "different": sorted(self.different(set_id)),
        }

    def restore(self, set_id: int, people: list[tuple[int, Optional[str], bool]],
                members: list[tuple[int, int, bool]], rejections: list[tuple[int, int]],
                different: list[tuple[int, int]], covers: dict[int, int]) -> dict[int, int]:
        """Make the snapshot's people again (same names, hidden flags) with the given memberships
        (item id, old person id, confirmed), rejections (item id, old person id), different pairs
        and covers (old person id -> item id); people left without any face are not made.
        Returns old person id -> new person id."""
        used = {p for _i, p, _c in members}
        now = time.time()
        new: dict[int, int] = {}
        with self.db.write() as c:
            for pid, name, hidden in people:
                if pid in used:
                    new[pid] = int(c.execute(
                        "INSERT INTO people(set_id, name, hidden, created_at) VALUES (?, ?, ?, ?)",
                        (set_id, name, int(hidden), now)).lastrowid)
            c.executemany("INSERT OR IGNORE INTO person_items(item_id, person_id, pinned) VALUES (?, ?, ?)",
                          [(i, new[p], int(conf)) for i, p, conf in members if p in new])
            c.executemany("INSERT OR IGNORE INTO rejections(item_id, person_id, decided_at) VALUES (?, ?, ?)",
                          [(i, new[p], now) for i, p in rejections if p in new])
            c.executemany("INSERT OR IGNORE INTO different_people(a, b, decided_at) VALUES (?, ?, ?)",
                          [(min(new[a], new[b]), max(new[a], new[b]), now) for a, b in different
                           if a in new and b in new])
            c.executemany("UPDATE people SET cover_item_id = ? WHERE id = ?",
                          [(i, new[p]) for p, i in covers.items() if p in new])
        return new

    def forget(self, set_id: int, person_id: int, item_ids: Sequence[int]) -> None:
        """Delete a person with its items and vectors for good (secure_delete overwrites the freed
        pages; the WAL is checkpointed so the vectors are not left behind in the file)."""
        self.db.conn().execute("PRAGMA secure_delete = ON")
        with self.db.write() as c:
            for chunk in in_chunks(item_ids):
                c.execute(f"DELETE FROM items WHERE id IN ({marks(len(chunk))})", chunk)
            c.execute("DELETE FROM people WHERE id = ?", (person_id,))
            c.execute("UPDATE vector_sets SET generation = generation + 1 WHERE id = ?", (set_id,))
        self.db.checkpoint()
