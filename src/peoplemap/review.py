"""Finishing the people page: merge suggestions and review groups, for a user to answer.

- `merge_suggestions`: pairs of people likely to be one person, ranked by the average distance
  between their faces (root mean square over all cross pairs, the measure the default clustering
  joins groups by, `cluster.merge_groups`), shortlisted through person centroids. Ranked by the
  closest few pairs instead, look-alikes came first: on celeba_wild_dev the simulated user needed
  328 answers to reach BCubed F 0.99, 226 with the average.
  People the user marked as different are never suggested.
- `review_groups`: unsorted faces (and members the clustering was unsure of), grouped so that
  similar faces sit together, each group with its best candidate person: "Are these <name>?".

Speed (100k faces): the set's vectors and two neighbour tables (people's centroids; unsorted
faces) stay in memory between calls (`Library.derived.review`, peoplemap.derived.ReviewState).
People and memberships are read on every call, and `KeptNeighbours` searches again only the rows
that an answer, new faces or a re-clustering can have changed, so its answers are always those of
a search from scratch. The first call makes the tables (a search of every centroid and unsorted
face: seconds at 100k); later ones take a few hundred milliseconds.

The answers are the Library's decisions (merge, mark_different, confirm_items, reject_items),
which peoplemap.membership keeps through every later clustering.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Optional

import numpy as np

from .cluster import average_distance
from .responses import Response

if TYPE_CHECKING:
    from .library import Library

log = logging.getLogger(__name__)

CENTROID_CANDIDATES = 8
"""Per person, the people with the nearest centroids whose average distance is computed."""
GROUP_DISTANCE = 0.40
"""Unsorted faces closer than this (Euclidean, unit vectors) that are each among the other's
GROUP_K nearest go in one review group (mutual neighbours: no chains through crowds of strangers).
Models with a match distance use the largest of the two."""
ASK_DISTANCE = 0.5
"""Unsorted faces whose nearest person is within this are asked about together: "Are these <name>?"
(beyond it, a group is a "Who is this?" question with its best guess)."""
GROUP_K = 5
SUGGEST_DISTANCE = 0.6
"""Two people are suggested as one only when their faces are on average this close (dlib units):
beyond dlib's same-person 0.41 by half, so that a person photographed widely is still offered."""
GROUP_MAX = 40
"""A group larger than this is split again at a stricter distance: a question must fit a screen."""
CANDIDATE_K = 12
"""Neighbours looked up per face of a review group to find its candidate person."""
FACES_SHOWN = 4


@dataclass(frozen=True)
class MergeSuggestion(Response):
    """Two people who may be one: the smaller their average distance, the likelier."""

    person_id: int
    other_id: int
    distance: float
    """Root mean square Euclidean distance over all pairs of their faces (unit vectors; 0 = identical)."""
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


@dataclass(frozen=True)
class _View:
    """One call's view of a vector set: its vectors (cached while the set's stamp holds) and the
    people and memberships read now. People are in list_people's order (largest first, then id)."""

    ids: np.ndarray
    """Item ids with a vector, ascending; X's rows."""
    X: np.ndarray
    person_ids: np.ndarray
    names: dict[int, Optional[str]]
    hidden: np.ndarray
    starts: np.ndarray
    """Person p's faces are rows[starts[p]:starts[p + 1]] (ascending item id)."""
    rows: np.ndarray
    confirmed: np.ndarray
    """Per entry of rows: the user confirmed that face."""
    C: np.ndarray
    """Unit centroids of the people."""

    def rows_of(self, p: int) -> np.ndarray:
        return self.rows[self.starts[p]:self.starts[p + 1]]


def _view(lib: "Library", model: Optional[str]) -> _View:
    """The set's vectors come from the ReviewState cache (stamped with the set's generation, which
    every write of items or vectors bumps, its size, version and whitening); people and
    memberships are read on every call (a few tens of ms at 100k faces), so every decision counts
    at once. Call with lib.derived.review.lock held."""
    import scipy.sparse as sp

    s = lib.vector_set(model)
    stamp = (s.generation, s.n_items, s.version, lib.derived.whitenings.stamp(s.id))
    ids, X = lib.derived.review.vectors(s.id, stamp, lambda: lib.vectors(s.model))
    item, person, confirmed = lib.store.people.membership_arrays(s.id)
    at = np.minimum(np.searchsorted(ids, item), max(len(ids) - 1, 0))
    ok = (ids[at] == item) if len(ids) else np.zeros(len(item), bool)
    row, person, confirmed = at[ok], person[ok], confirmed[ok]
    pids, inv, sizes = np.unique(person, return_inverse=True, return_counts=True)
    order = np.lexsort((pids, -sizes))                  # largest first, then by id
    rank = np.empty(len(pids), np.int64)
    rank[order] = np.arange(len(pids))
    by = np.lexsort((row, rank[inv]))
    rows, prank = row[by], rank[inv][by]
    starts = np.concatenate([[0], np.cumsum(sizes[order])]).astype(np.int64)
    listing = {p: (n, h) for p, n, h in lib.store.people.listing(s.id)}
    person_ids = pids[order]
    # One sparse product sums every person's vectors (np.add.reduceat was 6x slower here).
    M = sp.csr_matrix((np.ones(len(rows), np.float32), (prank, rows)), shape=(len(pids), len(ids)))
    C = np.ascontiguousarray(M @ X, dtype=np.float32).reshape(len(pids), X.shape[1])
    C /= np.maximum(np.linalg.norm(C, axis=1, keepdims=True), 1e-12)
    return _View(ids, X, person_ids, {int(p): listing.get(int(p), (None, False))[0] for p in person_ids},
                 np.asarray([listing.get(int(p), (None, False))[1] for p in person_ids], dtype=bool),
                 starts, rows, confirmed[by], C)


KEEP_AFTER = 2_000
"""A table update that searched this many rows is written to disk (derived.ReviewState.keep), so
that the next opening of the library starts from it instead of searching everything again; so is
one that dropped rows (a kept file never holds the vectors of faces that are gone)."""


class KeptNeighbours:
    """The k nearest rows (inner product, itself included) of every row of a keyed set of unit
    vectors, kept exact from call to call: only rows that are new or moved, lost a neighbour, or
    may have gained one are searched again. A merge, a rejection or a confirmed face touches a
    few rows of thousands; the first call (or a re-clustering) searches all of them."""

    REBUILD = 0.25
    """Above this fraction of new or moved rows, everything is searched again."""

    def __init__(self, k: int):
        self.k = k
        self.keys = np.zeros(0, np.int64)
        self.V: Optional[np.ndarray] = None
        self.nbr = np.zeros((0, k), np.int64)
        """Neighbours as keys (-1: none), nearest first."""
        self.sim = np.zeros((0, k), np.float32)
        self.searched = 0
        """Rows searched by the last update (for tests and benchmarks)."""
        self.removed = 0
        """Keys the last update dropped (a kept file must not hold their vectors any longer)."""

    def arrays(self) -> dict[str, np.ndarray]:
        """The table as plain arrays (ReviewState keeps them in a file)."""
        V = np.zeros((0, 0), np.float32) if self.V is None else self.V
        return {"k": np.asarray(self.k), "keys": self.keys, "V": V, "nbr": self.nbr, "sim": self.sim}

    def load_arrays(self, a: dict[str, np.ndarray]) -> None:
        """Start from a kept table (of the same k); update() then brings it up to date."""
        n = len(a["keys"])
        if int(a["k"]) != self.k or a["nbr"].shape != (n, self.k) or a["sim"].shape != (n, self.k) \
                or len(a["V"]) != n:
            raise ValueError("a kept table of another shape")
        self.keys, self.nbr, self.sim = a["keys"].astype(np.int64), a["nbr"].astype(np.int64), a["sim"]
        self.V = np.ascontiguousarray(a["V"], dtype=np.float32) if n else None

    def update(self, keys: np.ndarray, V: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(similarities, neighbour rows) of `keys` (rows of V), -1 / -inf where there are fewer
        than k rows."""
        import faiss

        n = len(keys)
        V = np.ascontiguousarray(V, dtype=np.float32)
        nbr = np.full((n, self.k), -1, np.int64)
        sim = np.full((n, self.k), -np.inf, np.float32)
        redo = np.ones(n, bool)
        if self.V is not None and len(self.keys) and n and V.shape[1] == self.V.shape[1]:
            order = np.argsort(self.keys)
            at = np.minimum(np.searchsorted(self.keys[order], keys), len(order) - 1)
            src = order[at]
            same = self.keys[src] == keys
            same[same] = (self.V[src[same]] == V[same]).all(axis=1)
            fresh = ~same
            if fresh.sum() <= self.REBUILD * n:
                nbr[same], sim[same] = self.nbr[src[same]], self.sim[src[same]]
                kept = np.zeros(len(self.keys), bool)
                kept[src[same]] = True
                gone = self.keys[~kept]  # removed or moved: their old places are void
                redo = fresh | np.isin(nbr, gone).any(axis=1)
                new = V[fresh]
                for a in range(0, len(new), 1024):  # may a new or moved row be nearer than a k-th?
                    redo |= (new[a:a + 1024] @ V.T).max(axis=0) >= sim[:, -1] - 1e-6
        if n and redo.any():
            index = faiss.IndexFlatIP(V.shape[1])
            index.add(V)
            k = min(self.k, n)
            s, pos = index.search(V[redo], k)
            nbr[redo, :k] = np.where(pos >= 0, keys[np.maximum(pos, 0)], -1)
            nbr[redo, k:] = -1
            sim[redo, :k] = np.where(pos >= 0, s, -np.inf)
            sim[redo, k:] = -np.inf
        self.removed = int((~np.isin(self.keys, keys)).sum()) if len(self.keys) else 0
        self.keys, self.V, self.nbr, self.sim = keys.copy(), V, nbr, sim
        self.searched = int(redo.sum())
        korder = np.argsort(keys)
        at = np.minimum(np.searchsorted(keys[korder], nbr), max(n - 1, 0))
        rows = np.where(nbr >= 0, korder[at] if n else -1, -1)
        return sim, rows


def _neighbours(lib: "Library", set_id: int, name: str, k: int, keys: np.ndarray,
                V: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """KeptNeighbours.update of the set's table `name`, kept on disk after a large search or a
    removal (KEEP_AFTER)."""
    table = lib.derived.review.table(set_id, name, lambda: KeptNeighbours(k))
    out = table.update(keys, V)
    if table.searched >= KEEP_AFTER or table.removed:
        lib.derived.review.keep(set_id, name)
    return out


def _link(XA: np.ndarray, XB: np.ndarray) -> tuple[float, int, int]:
    """(root mean square distance over all cross pairs, `cluster.average_distance`, row in A, row
    in B of the closest pair)."""
    dots = XA @ XB.T
    best = int(np.argmax(dots))
    return (float(average_distance(XA.mean(axis=0), XB.mean(axis=0))), best // dots.shape[1],
            best % dots.shape[1])


def merge_suggestions(lib: "Library", model: Optional[str] = None, *, person: Optional[int] = None,
                      limit: int = 20, max_distance: Optional[float] = None) -> list[MergeSuggestion]:
    """The likeliest same-person pairs of people, best first (only pairs with `person` when given),
    no farther apart than max_distance (default SUGGEST_DISTANCE times the model's distance_scale).
    Pairs the user marked as different, and hidden people, are left out. Candidate pairs come from
    each person's CENTROID_CANDIDATES nearest centroids (kept between calls, updated for the
    people that changed); the average distance is computed for the best-placed ones only (at most
    10 x limit + 100), so 100k faces answer in well under a second once the table is made."""
    with lib.derived.review.lock:
        v = _view(lib, model)
        s = lib.vector_set(model)
        sid = s.id
        if max_distance is None:
            max_distance = SUGGEST_DISTANCE * lib.distance_scale(s.model)
        keep = np.flatnonzero(~v.hidden & (np.diff(v.starts) > 0))
        if len(keep) < 2:
            return []
        C, pids = v.C[keep], v.person_ids[keep]
        k = min(len(keep), CENTROID_CANDIDATES + 1)
        if person is not None:
            q = np.flatnonzero(pids == int(person))
            if not len(q):
                return []
            sims = C @ C[q[0]]
            top = np.argpartition(-sims, k - 1)[:k]
            top = top[np.argsort(-sims[top], kind="stable")]
            qi, oi, sim = np.full(k, q[0]), top, sims[top]
        else:
            sims, nbrs = _neighbours(lib, sid, "centroids", CENTROID_CANDIDATES + 1, pids, C)
            qi, oi, sim = np.repeat(np.arange(len(keep)), nbrs.shape[1]), nbrs.ravel(), sims.ravel()
        ok = (oi >= 0) & (oi != qi)
        a, b, sim = np.minimum(qi, oi)[ok], np.maximum(qi, oi)[ok], sim[ok]
        ida, idb = np.minimum(pids[a], pids[b]), np.maximum(pids[a], pids[b])
        different = lib.store.people.different(sid)
        if different:
            apart = np.asarray([x * (1 << 32) + y for x, y in different], np.int64)
            ok = ~np.isin(ida * (1 << 32) + idb, apart)
            a, b, sim = a[ok], b[ok], sim[ok]
        # each pair once, at its best similarity; then the best-placed 10 x limit + 100
        order = np.lexsort((b, a, -sim))
        a, b, sim = a[order], b[order], sim[order]
        _, first = np.unique(a * len(keep) + b, return_index=True)
        first = np.sort(first)[:10 * limit + 100]
        out: list[MergeSuggestion] = []
        for qa, qb in zip(a[first].tolist(), b[first].tolist()):
            ra, rb = v.rows_of(keep[qa]), v.rows_of(keep[qb])
            dist, ia, ib = _link(v.X[ra], v.X[rb])
            if dist > max_distance:
                continue
            fa, fb = [int(v.ids[ra[ia]])], [int(v.ids[rb[ib]])]
            fa += [i for i in v.ids[ra[:FACES_SHOWN]].tolist() if i not in fa][:FACES_SHOWN - 1]
            fb += [i for i in v.ids[rb[:FACES_SHOWN]].tolist() if i not in fb][:FACES_SHOWN - 1]
            pa, pb = int(pids[qa]), int(pids[qb])
            if person is not None and pb == int(person):
                pa, pb, fa, fb = pb, pa, fb, fa
            out.append(MergeSuggestion(pa, pb, round(dist, 4), fa, fb))
    out.sort(key=lambda s: (s.distance, s.person_id, s.other_id))
    return out[:limit]


def review_groups(lib: "Library", model: Optional[str] = None, *, limit: int = 50,
                  include_uncertain: bool = True) -> list[ReviewGroup]:
    """Unsorted faces grouped by similarity, each group with its candidate person, likeliest
    answers first; then (include_uncertain) the least certain members of the largest people, a
    group per person. The unsorted faces' neighbours are kept between calls (updated for the faces
    that came or went); candidates are found for the largest 3 x limit groups only (through the
    people's centroids, then exact distances), so a large library answers quickly."""
    with lib.derived.review.lock:
        v = _view(lib, model)
        s = lib.vector_set(model)
        rejected: dict[int, set[int]] = {}
        for i, p in lib.store.people.rejected(s.id):
            rejected.setdefault(i, set()).add(p)
        owned = np.zeros(len(v.ids), bool)
        owned[v.rows] = True
        loose = np.flatnonzero(~owned)
        groups: list[ReviewGroup] = []
        scale = lib.distance_scale(s.model)  # GROUP_DISTANCE and ASK_DISTANCE are in dlib's units
        if len(loose):
            match = lib.match_distance(s.model)
            threshold = max(GROUP_DISTANCE * scale, match or 0.0)
            sims, nbrs = _neighbours(lib, s.id, "unsorted", GROUP_K + 1, v.ids[loose], v.X[loose])
            comps = _split(v.X[loose], _mutual_components(sims, nbrs, threshold), threshold)
            comps = comps[:max(3 * limit, 100)]
            cands = _candidates(v, [loose[c] for c in comps], rejected)
            for comp, (cand, dist) in zip(comps, cands):
                groups.append(ReviewGroup(v.ids[loose[comp]].tolist(), cand,
                                          v.names.get(cand) if cand else None, dist))
            # Faces the user already said "none of them" to are offered again only to a person within
            # the match distance; otherwise they come as "Who is this?" (no candidate): strangers and
            # junk are not offered to everyone in turn.
            strict = match if match is not None else GROUP_DISTANCE * scale
            groups = [g if not all(i in rejected for i in g.item_ids) or
                      (g.distance is not None and g.distance <= strict) else
                      ReviewGroup(g.item_ids, None, None, None) for g in groups]
            groups = _by_candidate(groups, ASK_DISTANCE * scale)
            # likeliest answers first: a group whose candidate is close is one "yes" for all its faces;
            # then "Who is this?" questions, the faces that are their photo's subject first
            # (large in the frame: the people the user photographed, not passers-by)
            who = [i for g in groups if g.distance is None for i in g.item_ids]
            size = lib.store.items.prominence(who) if who else {}
            groups.sort(key=lambda g: (g.distance is None,
                                       (g.distance if g.distance is not None else
                                        -max(size.get(i, 0.0) for i in g.item_ids)) / len(g.item_ids) ** 0.25,
                                       -len(g.item_ids)))
            groups = groups[:limit]
        if include_uncertain and len(groups) < limit:
            groups.extend(_uncertain(v, limit - len(groups), scale))
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
    import faiss

    n = len(X)
    sims = np.zeros((n, 0), np.float32)
    nbrs = np.zeros((n, 0), np.int64)
    if n > 1:
        index = faiss.IndexFlatIP(X.shape[1])
        index.add(np.ascontiguousarray(X))
        sims, nbrs = index.search(np.ascontiguousarray(X), min(n, GROUP_K + 1))
    return _split(X, _mutual_components(sims, nbrs, threshold), threshold)


def _split(X: np.ndarray, groups: list[np.ndarray], threshold: float) -> list[np.ndarray]:
    """Groups over GROUP_MAX rows split again at 90% of the threshold; largest first."""
    out: list[np.ndarray] = []
    for g in groups:
        if len(g) > GROUP_MAX and threshold > 0.05:
            out.extend(g[np.asarray(sub, np.int64)] for sub in _groups(X[g], 0.9 * threshold))
        else:
            out.append(g)
    return sorted(out, key=len, reverse=True)


def _mutual_components(sims: np.ndarray, nbrs: np.ndarray, threshold: float) -> list[np.ndarray]:
    """Connected components of the graph joining rows that are each among the other's nearest
    (nbrs, -1 for none) and closer than threshold; largest first, then by first row, rows
    ascending."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    n = len(nbrs)
    if n == 0:
        return []
    a = np.repeat(np.arange(n, dtype=np.int64), nbrs.shape[1])
    b = nbrs.ravel().astype(np.int64)
    d = np.sqrt(np.maximum(2.0 - 2.0 * sims.ravel(), 0.0))
    listed = b >= 0
    a, b, d = a[listed], b[listed], d[listed]
    mutual = np.isin(b * n + a, a * n + b)
    edge = mutual & (a != b) & (d < threshold)
    graph = coo_matrix((np.ones(int(edge.sum()), np.int8), (a[edge], b[edge])), shape=(n, n))
    _, label = connected_components(graph, directed=False)
    members = np.argsort(label, kind="stable")
    cuts = np.flatnonzero(np.diff(label[members])) + 1
    comps = np.split(members, cuts)
    return sorted(comps, key=lambda c: (-len(c), int(c[0])))


def _candidates(v: _View, groups: list[np.ndarray], rejected: dict[int, set[int]]
                ) -> list[tuple[Optional[int], Optional[float]]]:
    """(candidate person id, distance) per group of vector rows: the people whose centroids are
    nearest the group's faces are shortlisted, and for the three most frequent the median over the
    group of each face's distance to that person's nearest face decides. People the user rejected
    any of these faces from are left out. One search for every group's faces."""
    import faiss

    if not groups or not len(v.person_ids):
        return [(None, None)] * len(groups)
    index = faiss.IndexFlatIP(v.C.shape[1])
    index.add(v.C)
    k = min(CANDIDATE_K, len(v.person_ids))
    all_sims, all_nbrs = index.search(np.ascontiguousarray(v.X[np.concatenate(groups)]), k)
    out: list[tuple[Optional[int], Optional[float]]] = []
    at = 0
    for g in groups:
        sims, nbrs = all_sims[at:at + len(g)], all_nbrs[at:at + len(g)]
        at += len(g)
        banned = set().union(*(rejected.get(int(i), set()) for i in v.ids[g]))
        votes: dict[int, int] = {}
        closeness: dict[int, float] = {}
        for srow, row in zip(sims.tolist(), nbrs.tolist()):
            for sim, n in zip(srow, row):
                if n >= 0 and int(v.person_ids[n]) not in banned:
                    votes[n] = votes.get(n, 0) + 1
                    closeness[n] = closeness.get(n, 0.0) + sim
        if not votes:
            out.append((None, None))
            continue
        Q = v.X[g]
        best: tuple[float, int] = (np.inf, -1)
        # most votes first; ties (a library with few people: every face votes for every person) go
        # to the people whose centroids are closest
        for n in sorted(votes, key=lambda q: (-votes[q], -closeness[q], q))[:3]:
            d = np.sqrt(np.maximum(2.0 - 2.0 * (Q @ v.X[v.rows_of(n)].T), 0.0)).min(axis=1)
            best = min(best, (float(np.median(d)), int(v.person_ids[n])))
        out.append((best[1], round(best[0], 4)))
    return out


def _uncertain(v: _View, limit: int, scale: float = 1.0) -> list[ReviewGroup]:
    """For the largest people (at most 500 looked at), the unconfirmed members whose nearest other
    member is farther than GROUP_DISTANCE (times the model's distance_scale), as one group each:
    "Are these <name>?"."""
    out = []
    far_distance = GROUP_DISTANCE * scale
    for p in range(min(500, len(v.person_ids))):
        if len(out) >= limit:
            break
        rows = v.rows_of(p)
        if len(rows) < 3:
            continue
        Xp = v.X[rows]
        d2 = np.maximum(2.0 - 2.0 * (Xp @ Xp.T), 0.0)
        np.fill_diagonal(d2, np.inf)
        nn = np.sqrt(d2.min(axis=1))
        far = (nn > far_distance) & ~v.confirmed[v.starts[p]:v.starts[p + 1]]
        if far.any():
            pid = int(v.person_ids[p])
            out.append(ReviewGroup(v.ids[rows[far]].tolist(), pid, v.names.get(pid),
                                   round(float(np.median(nn[nn > far_distance])), 4), kind="uncertain"))
    out.sort(key=lambda g: -(g.distance or 0.0))
    return out


__all__ = ["KeptNeighbours", "MergeSuggestion", "ReviewGroup", "merge_suggestions", "review_groups"]
