"""People: the clusters of a vector set as persons a user can name, merge, split, hide and forget.

Who an item belongs to is decided by peoplemap.membership (after a clustering, for new items, and
for a search query); the catalog is written through the storage layer (Library.store.people).
This module resolves what the user asks for ("Ada", "12"), checks it, and applies it. A user's
decisions (merge, split, confirm) make items confirmed members, which no clustering moves; a
rejection ("not this person") keeps an item out of that person for good.
"""
from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Iterable, Optional, Sequence

from . import membership
from .errors import InputError
from .responses import Person

if TYPE_CHECKING:
    from .library import Library

log = logging.getLogger(__name__)

MAX_NAME = 200


def list_people(lib: "Library", model: Optional[str] = None, *,
                include_hidden: bool = False) -> list[Person]:
    """People of a vector set, largest first."""
    s = lib.vector_set(model)
    people: dict[int, tuple[Optional[str], bool, list[int]]] = {}
    for pid, name, hidden, item_id in lib.store.people.rows(s.id):
        people.setdefault(pid, (name, hidden, []))[2].append(item_id)
    covers = lib.store.people.covers(s.id)
    out = [Person(pid, name, hidden, len(items), items, covers.get(pid))
           for pid, (name, hidden, items) in people.items() if include_hidden or not hidden]
    return sorted(out, key=lambda p: (-p.size, p.id))


def person_of_items(lib: "Library", model: Optional[str] = None) -> dict[int, Person]:
    """item id -> Person (hidden people included)."""
    return {i: p for p in list_people(lib, model, include_hidden=True) for i in p.item_ids}


def persons_of(lib: "Library", item_ids: Sequence[int]) -> dict[int, tuple[int, Optional[str]]]:
    """item id -> (person id, name) for the given items only (the search hot path)."""
    return lib.store.people.of_items(item_ids)


def person_of_cluster(lib: "Library", clustering_id: int,
                      label: Optional[int]) -> Optional[tuple[int, Optional[str]]]:
    """(person id, name) that a point placed in cluster `label` is given (membership's rule);
    None for no cluster or no person."""
    if label is None:
        return None
    votes = lib.store.clusterings.votes(clustering_id, [int(label)]).get(int(label), {})
    pid = membership.person_of_cluster(votes)
    if pid is None:
        return None
    return pid, lib.store.people.names([pid]).get(pid)


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


def valid_name(name: str) -> str:
    """A person's name with runs of whitespace made one space; InputError if empty or too long."""
    name = " ".join(str(name).split())
    if not name:
        raise InputError("a person's name cannot be empty")
    if len(name) > MAX_NAME:
        raise InputError(f"a person's name can have at most {MAX_NAME} characters")
    return name


def name_person(lib: "Library", ref: str | int, name: str, model: Optional[str] = None) -> Person:
    p = resolve(lib, ref, model)
    lib.store.people.rename(p.id, valid_name(name))
    return resolve(lib, p.id, model)


def hide_person(lib: "Library", ref: str | int, hidden: bool = True,
                model: Optional[str] = None) -> Person:
    p = resolve(lib, ref, model)
    lib.store.people.hide(p.id, hidden)
    return resolve(lib, p.id, model)


def merge_people(lib: "Library", target: str | int, others: Sequence[str | int],
                 model: Optional[str] = None) -> Person:
    """Move every item of `others` into `target` (confirmed); the others are removed.
    The target keeps its name, or takes the first other's name if it has none."""
    t = resolve(lib, target, model)
    rest = [resolve(lib, o, model) for o in others]
    if not rest:
        raise InputError("merge needs at least one other person")
    if any(o.id == t.id for o in rest):
        raise InputError(f"cannot merge person {t.id} into itself")
    name = t.name or next((o.name for o in rest if o.name), None)
    lib.store.people.merge(t.id, [o.id for o in rest], name)
    return resolve(lib, t.id, model)


def split_person(lib: "Library", ref: str | int, item_ids: Iterable[int],
                 model: Optional[str] = None, name: Optional[str] = None) -> Person:
    """Move items out of a person into a new person of their own (confirmed)."""
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
    new_id = lib.store.people.split(s.id, p.id, ids, valid_name(name) if name else None)
    return resolve(lib, new_id, model)


def _known_items(lib: "Library", item_ids: Iterable[int], model: Optional[str]) -> list[int]:
    ids = sorted({int(i) for i in item_ids})
    if not ids:
        raise InputError("name at least one item id")
    have = {it.id for it in lib.items(model, ids=ids)}
    missing = [i for i in ids if i not in have]
    if missing:
        raise InputError(f"no items {missing} in the {lib.vector_set(model).model} vector set")
    return ids


def create_person(lib: "Library", item_ids: Iterable[int], name: Optional[str] = None,
                  model: Optional[str] = None) -> Person:
    """A new person of these faces (named at once when a name is given), confirmed."""
    ids = _known_items(lib, item_ids, model)
    new_id = lib.store.people.create(lib.vector_set(model).id, valid_name(name) if name else None, ids)
    return resolve(lib, new_id, model)


def confirm_items(lib: "Library", ref: str | int, item_ids: Iterable[int],
                  model: Optional[str] = None) -> Person:
    """These items are this person: they join it (from wherever they were) and stay."""
    p = resolve(lib, ref, model)
    ids = _known_items(lib, item_ids, model)
    lib.store.people.confirm(lib.vector_set(model).id, p.id, ids)
    return resolve(lib, p.id, model)


def reject_items(lib: "Library", ref: str | int, item_ids: Iterable[int],
                 model: Optional[str] = None) -> Optional[Person]:
    """"Not this person": the items leave the person and no clustering, placement or search puts
    them back. Returns the person, or None if no item is left to it."""
    p = resolve(lib, ref, model)
    ids = _known_items(lib, item_ids, model)
    lib.store.people.reject(lib.vector_set(model).id, p.id, ids)
    left = [q for q in list_people(lib, model, include_hidden=True) if q.id == p.id]
    return left[0] if left else None


def mark_different(lib: "Library", a: str | int, b: str | int, model: Optional[str] = None) -> None:
    """Two people the user says are different (never suggested or merged together again)."""
    pa, pb = resolve(lib, a, model), resolve(lib, b, model)
    if pa.id == pb.id:
        raise InputError(f"{pa.label} cannot be different from itself")
    lib.store.people.mark_different(pa.id, pb.id)


def set_cover(lib: "Library", ref: str | int, item_id: Optional[int], model: Optional[str] = None) -> Person:
    """Show the person by this face (one of its own); None lets peoplemap pick again."""
    p = resolve(lib, ref, model)
    if item_id is not None and int(item_id) not in set(p.item_ids):
        raise InputError(f"face {item_id} is not one of {p.label}'s faces")
    lib.store.people.set_cover(p.id, None if item_id is None else int(item_id))
    return resolve(lib, p.id, model)


def not_a_face(lib: "Library", item_ids: Iterable[int], model: Optional[str] = None) -> int:
    """Remove false detections for good: they go with their vectors, and the same boxes are never
    taken as faces again when the photo is processed again. Returns how many were removed."""
    ids = _known_items(lib, item_ids, model)
    lib.store.people.not_a_face(lib.vector_set(model).id, ids)
    return len(ids)


def forget_person(lib: "Library", ref: str | int, model: Optional[str] = None) -> int:
    """Delete a person's items and vectors for good; returns the number of items removed.

    SQLite's secure_delete overwrites the freed pages and the WAL is checkpointed, so the vectors
    are not left behind in the file. The fitted clustering state (which holds reference vectors)
    is deleted too: search assigns no cluster until the next `cluster` run.
    """
    p = resolve(lib, ref, model)
    lib.store.people.forget(lib.vector_set(model).id, p.id, p.item_ids)
    lib.forget_derived(model)
    log.info("forgot %s: %d items", p.label, p.size)
    return p.size
