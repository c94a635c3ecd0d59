"""Finishing the people page: merge suggestions and review groups, for a user to answer.

- `merge_suggestions`: pairs of people likely to be one person, ranked by a link score: the mean
  distance of the closest cross pairs of their faces (single people photographed in different
  conditions are split by clustering along such bridges), shortlisted through person centroids
  so that a library of 100k faces answers in well under a second. People the user marked as
  different are never suggested.
- `review_groups`: unsorted faces (and members the clustering was unsure of), grouped so that
  similar faces sit together, each group with its best candidate person: "Are these <name>?".

The answers are the Library's decisions (merge, mark_different, confirm_items, reject_items),
which peoplemap.membership keeps through every later clustering.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Optional

import numpy as np

from .responses import Response

if TYPE_CHECKING:
    from .library import Library

log = logging.getLogger(__name__)

LINK_PAIRS = 3
"""The link score of two people is the mean distance of their LINK_PAIRS closest cross pairs."""
CENTROID_CANDIDATES = 8
"""Per person, the people with the nearest centroids whose link score is computed."""
GROUP_DISTANCE = 0.40
"""Unsorted faces closer than this (Euclidean, unit vectors) that are each among the other's
GROUP_K nearest go in one review group (mutual neighbours: no chains through crowds of strangers).
Models with a match distance use the largest of the two."""
ASK_DISTANCE = 0.5
"""Unsorted faces whose nearest person is within this are asked about together: "Are these <name>?"
(beyond it, a group is a "Who is this?" question with its best guess)."""
GROUP_K = 5
GROUP_MAX = 40
"""A group larger than this is split again at a stricter distance: a question must fit a screen."""
CANDIDATE_K = 12
"""Neighbours looked up per face of a review group to find its candidate person."""
FACES_SHOWN = 4


@dataclass(frozen=True)
class MergeSuggestion(Response):
    """Two people who may be one: the smaller link distance, the likelier."""

    person_id: int
    other_id: int
    distance: float
    """Mean Euclidean distance of the closest cross pairs of faces (unit vectors; 0 = identical)."""
    person_faces: list[int] = field(default_factory=list)
    other_faces: list[int] = field(default_factory=list)
    """A few item ids of each, closest pair first: shown side by side."""


@dataclass(frozen=True)
class ReviewGroup(Response):
    """Similar faces that no person holds (or holds unsurely), with the person they most look like."""

    item_ids: list[int]
    candidate_id: Optional[int]
    candidate_name: Optional[str]
    distance: Optional[float]
    """Median over the group's faces of the distance to the candidate's nearest face."""
    kind: str = "unsorted"
    """"unsorted" (no person) or "uncertain" (members the clustering was least sure of)."""


def _people_vectors(lib: "Library", model: Optional[str]):
    """(people, item ids, vectors, row of each item id), read once."""
    people = lib.people(model, include_hidden=True)
    ids, X = lib.vectors(model)
    pos = dict(zip(ids.tolist(), range(len(ids))))
    return people, ids, X, pos


def _rows_and_centroids(people, X: np.ndarray, pos: dict[int, int]):
    """Each person's vector rows, and the unit centroids of all people in one pass."""
    rows = [np.fromiter((pos[i] for i in p.item_ids if i in pos), dtype=np.int64) for p in people]
    flat = np.concatenate(rows) if rows else np.zeros(0, np.int64)
    sizes = np.asarray([len(r) for r in rows])
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]]) if len(sizes) else sizes
    C = np.add.reduceat(X[flat], starts, axis=0) if len(flat) else np.zeros((0, X.shape[1]), np.float32)
    C = np.ascontiguousarray(C, dtype=np.float32)
    C /= np.maximum(np.linalg.norm(C, axis=1, keepdims=True), 1e-12)
    return rows, C


def _link(XA: np.ndarray, XB: np.ndarray) -> tuple[float, int, int]:
    """(mean distance of the LINK_PAIRS closest cross pairs, row in A, row in B of the closest)."""
    d2 = np.maximum(2.0 - 2.0 * (XA @ XB.T), 0.0)
    flat = d2.ravel()
    k = min(LINK_PAIRS, flat.size)
    part = np.argpartition(flat, k - 1)[:k]
    best = int(part[np.argmin(flat[part])])
    return float(np.sqrt(flat[part]).mean()), best // d2.shape[1], best % d2.shape[1]


def merge_suggestions(lib: "Library", model: Optional[str] = None, *, person: Optional[int] = None,
                      limit: int = 20, max_distance: float = 0.6) -> list[MergeSuggestion]:
    """The likeliest same-person pairs of people, best first (only pairs with `person` when given).
    Pairs the user marked as different, and hidden people, are left out. Candidate pairs come from
    each person's CENTROID_CANDIDATES nearest centroids; the link score is computed for the
    best-placed ones only (at most 10 x limit + 100), so 100k faces answer in well under a second."""
    import faiss

    people, ids, X, pos = _people_vectors(lib, model)
    people = [p for p in people if not p.hidden and p.item_ids]
    if len(people) < 2:
        return []
    different = lib.store.people.different(lib.vector_set(model).id)
    rows, C = _rows_and_centroids(people, X, pos)
    index = faiss.IndexFlatIP(C.shape[1])
    index.add(C)
    k = min(len(people), CENTROID_CANDIDATES + 1)
    if person is not None:
        queries = [n for n, p in enumerate(people) if p.id == int(person)]
        if not queries:
            return []
    else:
        queries = list(range(len(people)))
    sims, nbrs = index.search(C[queries], k)
    pairs: dict[tuple[int, int], float] = {}
    for qi, srow, nrow in zip(queries, sims, nbrs):
        for sim, oi in zip(srow, nrow):
            oi = int(oi)
            if oi < 0 or oi == qi:
                continue
            key = (min(qi, oi), max(qi, oi))
            if (min(people[qi].id, people[oi].id), max(people[qi].id, people[oi].id)) in different:
                continue
            pairs[key] = max(pairs.get(key, -1.0), float(sim))
    shortlist = sorted(pairs, key=lambda kv: -pairs[kv])[:10 * limit + 100]
    out: list[MergeSuggestion] = []
    for qa, qb in shortlist:
        dist, ra, rb = _link(X[rows[qa]], X[rows[qb]])
        if dist > max_distance:
            continue
        a, b = people[qa], people[qb]
        fa = [int(ids[rows[qa][ra]])]
        fb = [int(ids[rows[qb][rb]])]
        fa += [i for i in a.item_ids if i not in fa][:FACES_SHOWN - 1]
        fb += [i for i in b.item_ids if i not in fb][:FACES_SHOWN - 1]
        if person is not None and b.id == int(person):
            a, b, fa, fb = b, a, fb, fa
        out.append(MergeSuggestion(a.id, b.id, round(dist, 4), fa, fb))
    out.sort(key=lambda s: (s.distance, s.person_id, s.other_id))
    return out[:limit]


def review_groups(lib: "Library", model: Optional[str] = None, *, limit: int = 50,
                  include_uncertain: bool = True) -> list[ReviewGroup]:
    """Unsorted faces grouped by similarity, each group with its candidate person, likeliest
    answers first; then (include_uncertain) the least certain members of the largest people, a
    group per person. Candidates are found for the largest 3 x limit groups only (through the
    people's centroids, then exact distances), so a large library answers quickly."""
    import faiss

    people, ids, X, pos = _people_vectors(lib, model)
    people = [p for p in people if p.item_ids]
    owner = {i: p.id for p in people for i in p.item_ids}
    names = {p.id: p.name for p in people}
    s = lib.vector_set(model)
    rejected: dict[int, set[int]] = {}
    for i, p in lib.store.people.rejected(s.id):
        rejected.setdefault(i, set()).add(p)
    loose = np.asarray([k for k, i in enumerate(ids.tolist()) if i not in owner], dtype=np.int64)
    groups: list[ReviewGroup] = []
    if len(loose):
        match = lib.match_distance(s.model)
        comps = _groups(X[loose], max(GROUP_DISTANCE, match or 0.0))[:max(3 * limit, 100)]
        rows, C = _rows_and_centroids(people, X, pos) if people else ([], None)
        index = None
        if people:
            index = faiss.IndexFlatIP(C.shape[1])
            index.add(C)
        for comp in comps:
            item_ids = [int(ids[loose[c]]) for c in comp]
            cand, dist = (None, None)
            if index is not None:
                cand, dist = _candidate(index, X[loose[comp]], item_ids, people, rows, X, rejected)
            groups.append(ReviewGroup(item_ids, cand, names.get(cand) if cand else None, dist))
        # Faces the user already said "none of them" to are offered again only to a person within
        # the match distance; otherwise they come as "Who is this?" (no candidate): strangers and
        # junk are not offered to everyone in turn.
        strict = match if match is not None else GROUP_DISTANCE
        groups = [g if not all(i in rejected for i in g.item_ids) or
                  (g.distance is not None and g.distance <= strict) else
                  ReviewGroup(g.item_ids, None, None, None) for g in groups]
        groups = _by_candidate(groups, ASK_DISTANCE)
        # likeliest answers first: a group whose candidate is close is one "yes" for all its faces
        groups.sort(key=lambda g: ((g.distance if g.distance is not None else 9.0) / len(g.item_ids) ** 0.25,
                                   -len(g.item_ids)))
        groups = groups[:limit]
    if include_uncertain and len(groups) < limit:
        groups.extend(_uncertain(lib, model, people, X, pos, limit - len(groups)))
    return groups[:limit]


def _by_candidate(groups: list[ReviewGroup], ask: float) -> list[ReviewGroup]:
    """Groups whose candidate is the same person, within `ask` of it, asked as one question
    ("Are these Ada?"), nearest first, at most GROUP_MAX faces a question."""
    near: dict[int, list[ReviewGroup]] = {}
    out: list[ReviewGroup] = []
    for g in groups:
        if g.candidate_id is not None and g.distance is not None and g.distance <= ask:
            near.setdefault(g.candidate_id, []).append(g)
        else:
            out.append(g)
    for parts in near.values():
        parts.sort(key=lambda g: g.distance)
        faces = [i for g in parts for i in g.item_ids]
        dists = [g.distance for g in parts for _i in g.item_ids]
        for a in range(0, len(faces), GROUP_MAX):
            chunk = dists[a:a + GROUP_MAX]
            out.append(ReviewGroup(faces[a:a + GROUP_MAX], parts[0].candidate_id, parts[0].candidate_name,
                                   round(float(np.median(chunk)), 4)))
    return out


def _groups(X: np.ndarray, threshold: float) -> list[list[int]]:
    """Rows joined through mutual near neighbours closer than threshold, largest first; a group
    over GROUP_MAX rows is split again at 90% of the threshold."""
    groups = _components(X, threshold)
    out: list[list[int]] = []
    for g in groups:
        if len(g) > GROUP_MAX and threshold > 0.05:
            out.extend([g[i] for i in sub] for sub in _groups(X[g], 0.9 * threshold))
        else:
            out.append(g)
    return sorted(out, key=len, reverse=True)


def _components(X: np.ndarray, threshold: float) -> list[list[int]]:
    """Connected components of the graph joining rows that are mutual GROUP_K-nearest neighbours
    and closer than threshold."""
    import faiss

    n = len(X)
    parent = list(range(n))

    def find(a: int) -> int:
        while parent[a] != a:
            parent[a] = parent[parent[a]]
            a = parent[a]
        return a

    if n > 1:
        index = faiss.IndexFlatIP(X.shape[1])
        index.add(np.ascontiguousarray(X))
        sims, nbrs = index.search(np.ascontiguousarray(X), min(n, GROUP_K + 1))
        d = np.sqrt(np.maximum(2.0 - 2.0 * sims, 0.0))
        near = [set(int(b) for b in row if b >= 0) for row in nbrs]
        for a in range(n):
            for b, dist in zip(nbrs[a], d[a]):
                b = int(b)
                if b >= 0 and b != a and dist < threshold and a in near[b]:
                    ra, rb = find(a), find(b)
                    if ra != rb:
                        parent[ra] = rb
    comps: dict[int, list[int]] = {}
    for a in range(n):
        comps.setdefault(find(a), []).append(a)
    return sorted(comps.values(), key=len, reverse=True)


def _candidate(index, Q: np.ndarray, item_ids: list[int], people, rows: list[np.ndarray],
               X: np.ndarray, rejected: dict[int, set[int]]) -> tuple[Optional[int], Optional[float]]:
    """The person whose faces are nearest the group's: the people whose centroids are nearest the
    group's faces are shortlisted, and for the three most frequent the median over the group of
    each face's distance to that person's nearest face decides. People the user rejected any of
    these faces from are left out."""
    k = min(CANDIDATE_K, index.ntotal)
    sims, nbrs = index.search(np.ascontiguousarray(Q), k)
    banned = set().union(*(rejected.get(i, set()) for i in item_ids))
    votes: dict[int, int] = {}
    closeness: dict[int, float] = {}
    for srow, row in zip(sims, nbrs):
        for sim, n in zip(srow, row):
            if n >= 0 and people[n].id not in banned:
                votes[int(n)] = votes.get(int(n), 0) + 1
                closeness[int(n)] = closeness.get(int(n), 0.0) + float(sim)
    if not votes:
        return None, None
    best: tuple[float, int] = (np.inf, -1)
    # most votes first; ties (a library with few people: every face votes for every person) go to
    # the people whose centroids are closest
    for n in sorted(votes, key=lambda q: (-votes[q], -closeness[q], q))[:3]:
        d = np.sqrt(np.maximum(2.0 - 2.0 * (Q @ X[rows[n]].T), 0.0)).min(axis=1)
        best = min(best, (float(np.median(d)), people[n].id))
    return best[1], round(best[0], 4)


def _uncertain(lib: "Library", model: Optional[str], people, X: np.ndarray,
               pos: dict[int, int], limit: int) -> list[ReviewGroup]:
    """For the largest people (at most 500 looked at), the unconfirmed members whose nearest other
    member is farther than GROUP_DISTANCE, as one group each: "Are these <name>?"."""
    s = lib.vector_set(model)
    members = lib.store.people.members(s.id)
    out = []
    for p in people[:500]:
        if len(out) >= limit:
            break
        rows = [pos[i] for i in p.item_ids if i in pos]
        if len(rows) < 3:
            continue
        Xp = X[rows]
        d2 = np.maximum(2.0 - 2.0 * (Xp @ Xp.T), 0.0)
        np.fill_diagonal(d2, np.inf)
        nn = np.sqrt(d2.min(axis=1))
        far = [i for i, dist in zip(p.item_ids, nn)
               if dist > GROUP_DISTANCE and i in members and not members[i].confirmed]
        if far:
            out.append(ReviewGroup(far, p.id, p.name, round(float(np.median(nn[nn > GROUP_DISTANCE])), 4),
                                   kind="uncertain"))
    out.sort(key=lambda g: -(g.distance or 0.0))
    return out


__all__ = ["MergeSuggestion", "ReviewGroup", "merge_suggestions", "review_groups"]
