"""People: the clusters of a vector set as persons a user can name, merge, split, hide and forget.

After every clustering, new clusters are matched to the existing people by the items they share, so
names and hidden flags survive re-indexing and re-clustering. A user's decisions (merge, split,
move) pin items to a person; pinned items keep their person whatever the clustering says.
"""
from __future__ import annotations

import logging
import sqlite3
import time
from collections import Counter
from dataclasses import dataclass
from typing import TYPE_CHECKING, Iterable, Optional, Sequence

from .errors import InputError
from .types import NOISE

if TYPE_CHECKING:
    from .library import Library

log = logging.getLogger(__name__)

MAX_NAME = 200


@dataclass(frozen=True)
class Person:
    id: int
    name: Optional[str]
    hidden: bool
    size: int
    item_ids: list[int]

    @property
    def label(self) -> str:
        """What to show: the name, or "person N"."""
        return self.name or f"person {self.id}"


def sync_after_clustering(c: sqlite3.Connection, set_id: int, labels: dict[int, int]) -> None:
    """Turn a fresh clustering into people, keeping existing people where clusters overlap them.

    Each new cluster goes to the existing person holding most of its (unpinned and pinned) items;
    several clusters may go to one person (a merge survives a re-cluster); a cluster sharing no
    items with anyone becomes a new, unnamed person. Pinned items stay where the user put them.
    """
    old = {i: (p, pin) for i, p, pin in c.execute(
        "SELECT pi.item_id, pi.person_id, pi.pinned FROM person_items pi JOIN people pe "
        "ON pe.id = pi.person_id WHERE pe.set_id = ?", (set_id,))}
    clusters: dict[int, list[int]] = {}
    for item_id, label in labels.items():
        if label != NOISE and not old.get(item_id, (None, 0))[1]:
            clusters.setdefault(label, []).append(item_id)
    c.execute("DELETE FROM person_items WHERE pinned = 0 AND person_id IN "
              "(SELECT id FROM people WHERE set_id = ?)", (set_id,))
    now = time.time()
    # New people get ids above every existing one, in one batch (a million items make ~10^5 people).
    next_id = (c.execute("SELECT MAX(id) FROM people").fetchone()[0] or 0) + 1
    new_people: list[tuple[int, int, float]] = []
    rows: list[tuple[int, int]] = []
    for label in sorted(clusters):
        members = clusters[label]
        votes = Counter(old[i][0] for i in members if i in old)
        if votes:
            person_id = votes.most_common(1)[0][0]
        else:
            person_id = next_id
            next_id += 1
            new_people.append((person_id, set_id, now))
        rows.extend((i, person_id) for i in members)
    c.executemany("INSERT INTO people(id, set_id, created_at) VALUES (?, ?, ?)", new_people)
    c.executemany("INSERT INTO person_items(item_id, person_id, pinned) VALUES (?, ?, 0)", rows)
    _drop_empty(c, set_id)


def _drop_empty(c: sqlite3.Connection, set_id: int) -> None:
    c.execute("DELETE FROM people WHERE set_id = ? AND id NOT IN "
              "(SELECT DISTINCT person_id FROM person_items)", (set_id,))


def list_people(lib: "Library", model: Optional[str] = None, *,
                include_hidden: bool = False) -> list[Person]:
    """People of a vector set, largest first."""
    s = lib.vector_set(model)
    rows = lib.catalog.query(
        "SELECT pe.id, pe.name, pe.hidden, pi.item_id FROM people pe JOIN person_items pi "
        "ON pi.person_id = pe.id WHERE pe.set_id = ? ORDER BY pe.id, pi.item_id", (s.id,))
    people: dict[int, tuple[Optional[str], bool, list[int]]] = {}
    for pid, name, hidden, item_id in rows:
        people.setdefault(pid, (name, bool(hidden), []))[2].append(item_id)
    out = [Person(pid, name, hidden, len(items), items) for pid, (name, hidden, items) in people.items()
           if include_hidden or not hidden]
    return sorted(out, key=lambda p: (-p.size, p.id))


def person_of_items(lib: "Library", model: Optional[str] = None) -> dict[int, Person]:
    """item id -> Person (hidden people included)."""
    return {i: p for p in list_people(lib, model, include_hidden=True) for i in p.item_ids}


def persons_of(lib: "Library", item_ids: Sequence[int]) -> dict[int, tuple[int, Optional[str]]]:
    """item id -> (person id, name) for the given items only (the search hot path)."""
    out: dict[int, tuple[int, Optional[str]]] = {}
    ids = [int(i) for i in item_ids]
    for k in range(0, len(ids), 500):
        chunk = ids[k:k + 500]
        for item_id, pid, name in lib.catalog.query(
                "SELECT pi.item_id, pe.id, pe.name FROM person_items pi JOIN people pe ON "
                f"pe.id = pi.person_id WHERE pi.item_id IN ({','.join('?' * len(chunk))})", chunk):
            out[item_id] = (pid, name)
    return out


def person_of_cluster(lib: "Library", clustering_id: int,
                      label: Optional[int]) -> Optional[tuple[int, Optional[str]]]:
    """(person id, name) that most of a cluster's items belong to; None for no cluster/people."""
    if label is None:
        return None
    row = lib.catalog.one(
        "SELECT pe.id, pe.name, COUNT(*) AS n FROM cluster_labels cl JOIN person_items pi "
        "ON pi.item_id = cl.item_id JOIN people pe ON pe.id = pi.person_id "
        "WHERE cl.clustering_id = ? AND cl.label = ? GROUP BY pe.id ORDER BY n DESC, pe.id LIMIT 1",
        (clustering_id, int(label)))
    return None if row is None else (int(row[0]), row[1])


def resolve(lib: "Library", ref: str | int, model: Optional[str] = None) -> Person:
    """A person by id or by exact name (case-insensitive); clear error otherwise."""
    people = list_people(lib, model, include_hidden=True)
    text = str(ref).strip()
    if text.isdigit():
        for p in people:
            if p.id == int(text):
                return p
    matches = [p for p in people if p.name and p.name.casefold() == text.casefold()]
    if len(matches) == 1:
        return matches[0]
    if len(matches) > 1:
        raise InputError(f"{len(matches)} people are named {text!r}; use an id: "
                         f"{[p.id for p in matches]}")
    raise InputError(f"no person {text!r} in this library; `peoplemap people list` shows them")


def _valid_name(name: str) -> str:
    name = " ".join(str(name).split())
    if not name:
        raise InputError("a person's name cannot be empty")
    if len(name) > MAX_NAME:
        raise InputError(f"a person's name can have at most {MAX_NAME} characters")
    return name


def name_person(lib: "Library", ref: str | int, name: str, model: Optional[str] = None) -> Person:
    p = resolve(lib, ref, model)
    new = _valid_name(name)
    with lib.catalog.write() as c:
        c.execute("UPDATE people SET name = ? WHERE id = ?", (new, p.id))
    return resolve(lib, p.id, model)


def hide_person(lib: "Library", ref: str | int, hidden: bool = True,
                model: Optional[str] = None) -> Person:
    p = resolve(lib, ref, model)
    with lib.catalog.write() as c:
        c.execute("UPDATE people SET hidden = ? WHERE id = ?", (int(hidden), p.id))
    return resolve(lib, p.id, model)


def merge_people(lib: "Library", target: str | int, others: Sequence[str | int],
                 model: Optional[str] = None) -> Person:
    """Move every item of `others` into `target` (pinned); the others are removed.
    The target keeps its name, or takes the first other's name if it has none."""
    t = resolve(lib, target, model)
    rest = [resolve(lib, o, model) for o in others]
    if not rest:
        raise InputError("merge needs at least one other person")
    if any(o.id == t.id for o in rest):
        raise InputError(f"cannot merge person {t.id} into itself")
    name = t.name or next((o.name for o in rest if o.name), None)
    with lib.catalog.write() as c:
        for o in rest:
            c.execute("UPDATE person_items SET person_id = ?, pinned = 1 WHERE person_id = ?",
                      (t.id, o.id))
            c.execute("DELETE FROM people WHERE id = ?", (o.id,))
        c.execute("UPDATE person_items SET pinned = 1 WHERE person_id = ?", (t.id,))
        c.execute("UPDATE people SET name = ? WHERE id = ?", (name, t.id))
    return resolve(lib, t.id, model)


def split_person(lib: "Library", ref: str | int, item_ids: Iterable[int],
                 model: Optional[str] = None, name: Optional[str] = None) -> Person:
    """Move items out of a person into a new person of their own (pinned)."""
    p = resolve(lib, ref, model)
    ids = sorted({int(i) for i in item_ids})
    if not ids:
        raise InputError("split needs at least one item id")
    foreign = [i for i in ids if i not in set(p.item_ids)]
    if foreign:
        raise InputError(f"items {foreign} do not belong to {p.label}")
    if len(ids) == p.size:
        raise InputError(f"that is every item of {p.label}; nothing would be left to split from")
    s = lib.vector_set(model)
    with lib.catalog.write() as c:
        new_id = c.execute("INSERT INTO people(set_id, name, created_at) VALUES (?, ?, ?)",
                           (s.id, _valid_name(name) if name else None, time.time())).lastrowid
        c.executemany("UPDATE person_items SET person_id = ?, pinned = 1 WHERE item_id = ?",
                      [(new_id, i) for i in ids])
        # What stays is now a user-checked person too.
        c.execute("UPDATE person_items SET pinned = 1 WHERE person_id = ?", (p.id,))
    return resolve(lib, new_id, model)


def forget_person(lib: "Library", ref: str | int, model: Optional[str] = None) -> int:
    """Delete a person's items and vectors for good; returns the number of items removed.

    SQLite's secure_delete overwrites the freed pages and the WAL is checkpointed, so the vectors
    are not left behind in the file. The fitted clustering state (which holds reference vectors)
    is deleted too: search assigns no cluster until the next `cluster` run.
    """
    p = resolve(lib, ref, model)
    conn = lib.catalog.conn()
    conn.execute("PRAGMA secure_delete = ON")
    with lib.catalog.write() as c:
        for k in range(0, len(p.item_ids), 500):
            chunk = p.item_ids[k:k + 500]
            c.execute(f"DELETE FROM items WHERE id IN ({','.join('?' * len(chunk))})", chunk)
        c.execute("DELETE FROM people WHERE id = ?", (p.id,))
        s = lib.vector_set(model)
        c.execute("UPDATE vector_sets SET generation = generation + 1 WHERE id = ?", (s.id,))
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    lib.forget_derived(model)
    log.info("forgot %s: %d items", p.label, p.size)
    return p.size
