"""People: the clusters of a vector set as persons a user can name, merge, split, hide and forget.

Who an item belongs to is decided by peoplemap.membership (after a clustering, for new items, and
for a search query); the catalog is written through the storage layer (Library.store.people).
This module resolves what the user asks for ("Ada", "12"), checks it, and applies it. A user's
decisions (merge, split, confirm) make items confirmed members, which no clustering moves; a
rejection ("not this person") keeps an item out of that person for good.
"""
from __future__ import annotations

import logging
import re
from typing import TYPE_CHECKING, Callable, Iterable, Optional, Sequence

import numpy as np

from . import membership
from .errors import InputError, NameTakenError
from .responses import Person

if TYPE_CHECKING:
    from .library import Library
    from .types import Item

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


_NUMBER = re.compile(r"(?:person\s*|#)?(\d+)", re.IGNORECASE)
"""A person referred to by number: "12", "#12", or its label "Person 12"."""


def people_of_clusters(lib: "Library", clustering_id: int,
                       labels: Sequence[int]) -> dict[int, tuple[int, Optional[str]]]:
    """cluster label -> (person id, name) of the person it belongs to (person_of_cluster's rule),
    for many clusters in one pass; clusters without a person are left out."""
    votes = lib.store.clusterings.votes(clustering_id, [int(x) for x in labels])
    owners = {label: membership.person_of_cluster(v) for label, v in votes.items()}
    names = lib.store.people.names([p for p in owners.values() if p is not None])
    return {label: (pid, names.get(pid)) for label, pid in owners.items() if pid is not None}


def resolve(lib: "Library", ref: str | int, model: Optional[str] = None) -> Person:
    """A person by number ("12", "Person 12") or by exact name (case-insensitive); clear error
    otherwise."""
    people = list_people(lib, model, include_hidden=True)
    text = str(ref).strip()
    number = _NUMBER.fullmatch(text)
    if number:
        for p in people:
            if p.id == int(number.group(1)):
                return p
    matches = [p for p in people if p.name and p.name.casefold() == text.casefold()]
    if len(matches) == 1:
        return matches[0]
    if len(matches) > 1:
        raise InputError(f"{len(matches)} people are named {text!r}; use their number: "
                         + ", ".join(f"Person {p.id}" for p in matches))
    raise InputError(f"no person {text!r} in this library; `peoplemap people list` shows them")


def valid_name(name: str) -> str:
    """A person's name with runs of whitespace made one space; InputError if empty or too long."""
    name = " ".join(str(name).split())
    if not name:
        raise InputError("a person's name cannot be empty")
    if len(name) > MAX_NAME:
        raise InputError(f"a person's name can have at most {MAX_NAME} characters")
    return name


ON_DUPLICATE = ("error", "merge", "keep_apart")
"""What name_person does when another person already has the name: raise NameTakenError (so the
user can be asked), merge the two (they are one person), or keep them apart under distinct names."""


def named(lib: "Library", name: str, model: Optional[str] = None, *,
          besides: Optional[int] = None) -> list[Person]:
    """People (hidden ones too) whose name is `name`, compared as resolve() does; `besides`: a
    person id left out."""
    key = valid_name(name).casefold()
    return [p for p in list_people(lib, model, include_hidden=True)
            if p.name and p.name.casefold() == key and p.id != besides]


def distinct_name(lib: "Library", name: str, model: Optional[str] = None) -> str:
    """`name` with the first free " (2)", " (3)", ... after it: the name a person kept apart from
    another of the same name gets."""
    base = valid_name(name)
    taken = {p.name.casefold() for p in list_people(lib, model, include_hidden=True) if p.name}
    n = 2
    while f"{base} ({n})".casefold() in taken:
        n += 1
    return f"{base} ({n})"


def _name_taken(name: str, others: list[Person], what: str) -> NameTakenError:
    who = " and ".join(f"Person {o.id}" for o in others)
    return NameTakenError(
        f"{name!r} is already the name of {who}. If {what} the same person, merge them "
        "(on_duplicate='merge'); if not, keep them apart (on_duplicate='keep_apart': this one "
        f"is named {name!r} with a number after it)", name, others)


def name_person(lib: "Library", ref: str | int, name: str, model: Optional[str] = None, *,
                on_duplicate: str = "error") -> Person:
    """Give a person a name. When another person already has it (ignoring case), on_duplicate
    says what to do: "error" raises NameTakenError, so the user can be asked; "merge" makes the
    two one person (the one already named keeps the name and takes every face); "keep_apart"
    names this one "NAME (2)" (the first free number) and marks the two as different people.
    Never are two people silently given one name."""
    if on_duplicate not in ON_DUPLICATE:
        raise InputError(f"on_duplicate must be one of {list(ON_DUPLICATE)}, got {on_duplicate!r}")
    p = resolve(lib, ref, model)
    name = valid_name(name)
    others = named(lib, name, model, besides=p.id)
    if others and on_duplicate == "error":
        raise _name_taken(name, others, "this is")
    if others and on_duplicate == "merge":
        if len(others) > 1:
            raise InputError(f"{len(others)} people are already named {name!r}: "
                             + ", ".join(f"Person {o.id}" for o in others)
                             + "; merge them one at a time by number")
        return merge_people(lib, others[0].id, [p.id], model)
    if others:  # keep apart
        name = distinct_name(lib, name, model)
        for o in others:
            lib.store.people.mark_different(p.id, o.id)
    lib.store.people.rename(p.id, name)
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
        raise InputError(f"tick at least one {_noun(lib, model)} to split off")
    foreign = [i for i in ids if i not in set(p.item_ids)]
    if foreign:
        raise InputError(f"{_noun(lib, model, len(foreign))} {foreign} do not belong to {p.label}")
    if len(ids) == p.size:
        raise InputError(f"that is every {_noun(lib, model)} of {p.label}; nothing would be left "
                         "to split from")
    if name:
        _check_new_name(lib, name, model)
    s = lib.vector_set(model)
    new_id = lib.store.people.split(s.id, p.id, ids, valid_name(name) if name else None)
    return resolve(lib, new_id, model)


def _check_new_name(lib: "Library", name: str, model: Optional[str]) -> None:
    """A new person may not take a name someone has: NameTakenError names who has it."""
    others = named(lib, name, model)
    if others:
        raise _name_taken(valid_name(name), others, "these faces are")


def _noun(lib: "Library", model: Optional[str], n: int = 1) -> str:
    """"face" / "faces" (or "photo", ...) for the items of this vector set."""
    from .wording import noun

    return noun(lib.vector_set(model).item_kind, n)


def _known_items(lib: "Library", item_ids: Iterable[int], model: Optional[str]) -> list[int]:
    ids = sorted({int(i) for i in item_ids})
    if not ids:
        raise InputError(f"name at least one {_noun(lib, model)} (by its number)")
    have = {it.id for it in lib.items(model, ids=ids)}
    missing = [i for i in ids if i not in have]
    if missing:
        raise InputError(f"no {_noun(lib, model, len(missing))} {missing} in this library "
                         f"({lib.vector_set(model).model})")
    return ids


def create_person(lib: "Library", item_ids: Iterable[int], name: Optional[str] = None,
                  model: Optional[str] = None) -> Person:
    """A new person of these faces (named at once when a name is given), confirmed."""
    ids = _known_items(lib, item_ids, model)
    if name:
        _check_new_name(lib, name, model)
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


COVER_SAMPLE = 256
"""Faces of a person weighed for its cover; a bigger person is sampled evenly."""
COVER_FINALISTS = 3
"""Best-ranked faces whose sharpness is measured (it needs their pixels)."""


def covers(lib: "Library", people: Sequence[Person], model: Optional[str] = None, *,
           sharpness: Optional[Callable[[list["Item"]], list[float]]] = None) -> dict[int, int]:
    """person id -> the item to show the person by: the user's pick (Person.cover_item_id, while
    it is still one of the person's), else its best face: the most central to the person (cosine
    to the mean of its vectors), then the largest, then, among the COVER_FINALISTS best of those,
    the sharpest when a `sharpness(items) -> scores` is given (the app measures the tiles it
    draws). Not the first item, which may be any detection at all (a necklace, a digit)."""
    out: dict[int, int] = {}
    todo: list[Person] = []
    for p in people:
        if not p.item_ids:
            continue
        if p.cover_item_id is not None and p.cover_item_id in set(p.item_ids):
            out[p.id] = p.cover_item_id
        elif p.size == 1:
            out[p.id] = p.item_ids[0]
        else:
            todo.append(p)
    if not todo:
        return out
    sample = {p.id: p.item_ids[::max(1, -(-p.size // COVER_SAMPLE))] for p in todo}
    wanted = sorted({i for ids in sample.values() for i in ids})
    ids, X = lib.vectors(model, ids=wanted)
    row = {int(i): n for n, i in enumerate(ids.tolist())}
    items = {it.id: it for it in lib.items(model, ids=wanted)}
    finalists: dict[int, list[tuple[float, int]]] = {}
    for p in todo:
        mine = [i for i in sample[p.id] if i in row and i in items]
        if not mine:
            out[p.id] = p.item_ids[0]
            continue
        V = X[[row[i] for i in mine]].astype(np.float64)
        V /= np.maximum(np.linalg.norm(V, axis=1, keepdims=True), 1e-12)
        centre = V.mean(axis=0)
        centre /= max(float(np.linalg.norm(centre)), 1e-12)
        central = V @ centre
        side = np.asarray([float(np.sqrt(items[i].box[2] * items[i].box[3])) if items[i].box else 1.0
                           for i in mine])
        score = central + 0.25 * side / max(float(side.max()), 1e-12)
        best = np.argsort(-score, kind="stable")[:COVER_FINALISTS]
        finalists[p.id] = [(float(score[b]), mine[int(b)]) for b in best]
    if sharpness is not None and finalists:
        flat = [i for f in finalists.values() for _s, i in f]
        sharp = dict(zip(flat, sharpness([items[i] for i in flat])))
        for pid, f in finalists.items():
            top = max(max(sharp[i] for _s, i in f), 1e-12)
            finalists[pid] = [(s + 0.25 * sharp[i] / top, i) for s, i in f]
    for pid, f in finalists.items():
        out[pid] = max(f, key=lambda si: si[0])[1]
    return out


def not_a_face(lib: "Library", item_ids: Iterable[int], model: Optional[str] = None) -> int:
    """Remove false detections for good: they go with their vectors, and the same boxes are never
    taken as faces again when the photo is processed again. Returns how many were removed."""
    ids = _known_items(lib, item_ids, model)
    lib.store.people.not_a_face(lib.vector_set(model).id, ids)
    return len(ids)


def carry_over(lib: "Library", model: str, snapshot: dict) -> int:
    """After a re-extraction (`index --rebuild`), give the new items the people and decisions the
    old ones had: a new face takes over an old one in the same photo whose box it overlaps most
    (intersection over union >= 0.5; whole-image items match each other). Returns how many
    memberships were carried over; a clustering later places the faces that matched nothing."""
    by_path: dict[str, list] = {}
    for it in lib.items(model):
        by_path.setdefault(it.path, []).append(it)

    def match(path: str, box) -> Optional[int]:
        best, best_iou = None, 0.5
        for it in by_path.get(path, []):
            if box is None or it.box is None:
                if box is None and it.box is None:
                    return it.id
                continue
            iou = _iou(box, it.box)
            if iou >= best_iou:
                best, best_iou = it.id, iou
        return best

    snapshot = {k: [[tuple(x) if isinstance(x, list) else x for x in row] for row in v]
                for k, v in snapshot.items()}
    members = [(i, p, conf) for p, conf, path, box in snapshot["members"]
               if (i := match(path, box)) is not None]
    rejections = [(i, p) for p, path, box in snapshot["rejections"] if (i := match(path, box)) is not None]
    covers = {p: i for p, path, box in snapshot["covers"] if (i := match(path, box)) is not None}
    lib.store.people.restore(lib.vector_set(model).id, [tuple(p) for p in snapshot["people"]], members,
                             rejections, [tuple(d) for d in snapshot["different"]], covers)
    log.info("carried %d of %d memberships over to the re-extracted faces", len(members),
             len(snapshot["members"]))
    return len(members)


def _iou(a, b) -> float:
    ax, ay, aw, ah = a
    bx, by, bw, bh = b
    iw = max(0, min(ax + aw, bx + bw) - max(ax, bx))
    ih = max(0, min(ay + ah, by + bh) - max(ay, by))
    inter = iw * ih
    return inter / float(aw * ah + bw * bh - inter) if inter else 0.0


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
