"""Metrics for labeled folders: clustering quality (pairwise and BCubed P/R/F, ARI, NMI) and
retrieval quality (CMC rank-k and mAP, leave-one-out and cross-camera).

Conventions, used by every function here:
- `labels_true` may hold any hashable labels (folder names, ints); NOISE in it is an ordinary label.
- In `labels_pred` each NOISE item is its own singleton cluster: noise never puts two items together,
  so it never creates a positive pair, and it is not counted in `n_clusters`.
- Retrieval ranks the gallery by Euclidean distance; equal distances keep gallery order (a stable
  sort), so results do not depend on the sorting algorithm. A query with no correct match in its
  gallery is skipped and counted (n_skipped); with no valid query at all the metrics are NaN.
"""
from __future__ import annotations

from typing import Iterable, Sequence

import numpy as np

from peoplemap.errors import InputError
from peoplemap.types import NOISE

_CHUNK_ELEMS = 1 << 23
"""Query rows per distance block are chosen so one block holds about this many distances."""


# ----------------------------------------------------------------------------------------------
# clustering


def _labels(name: str, values) -> np.ndarray:
    arr = np.asarray(values)
    if arr.ndim != 1:
        raise InputError(f"{name} must be a 1-D sequence of labels, got shape {arr.shape}")
    return arr


def _codes(labels_true, labels_pred) -> tuple[np.ndarray, np.ndarray]:
    """Both labelings as dense int codes 0..k-1, with each NOISE prediction given a fresh code."""
    t = _labels("labels_true", labels_true)
    p = _labels("labels_pred", labels_pred)
    if t.shape != p.shape:
        raise InputError(f"labels_true has {t.size} items but labels_pred has {p.size}")
    if t.size == 0:
        raise InputError("labels_true and labels_pred are empty; need at least one item")
    t_codes = np.unique(t, return_inverse=True)[1].ravel()
    noise = p == NOISE
    p_codes = np.empty(p.size, dtype=np.int64)
    n_real = 0
    if (~noise).any():
        p_codes[~noise] = np.unique(p[~noise], return_inverse=True)[1].ravel()
        n_real = int(p_codes[~noise].max()) + 1
    p_codes[noise] = n_real + np.arange(int(noise.sum()))
    return t_codes.astype(np.int64), p_codes


def _contingency(t: np.ndarray, p: np.ndarray):
    """Nonzero cells of the true x pred contingency table: (cell counts, row of cell, col of cell)."""
    n_p = int(p.max()) + 1
    cells, counts = np.unique(t * n_p + p, return_counts=True)
    return counts.astype(np.int64), cells // n_p, cells % n_p


def _f(p: float, r: float) -> float:
    return 0.0 if p + r == 0 else 2 * p * r / (p + r)


def pairwise_prf(labels_true, labels_pred) -> tuple[float, float, float]:
    """Pairwise precision, recall and F over unordered item pairs (as in learn-to-cluster).

    precision = |pairs together in both| / |pairs together in pred|,
    recall = |pairs together in both| / |pairs together in truth|, F = harmonic mean.
    Each NOISE prediction is a singleton, so noise adds no predicted pair. A ratio with no pairs
    below it (0/0) is 0.0, except that when neither labeling has any pair (all singletons in both)
    the clustering is perfect and all three are 1.0.
    """
    t, p = _codes(labels_true, labels_pred)
    cells, _, _ = _contingency(t, p)

    def pairs(c: np.ndarray) -> int:
        return int((c * (c - 1) // 2).sum())

    tp = pairs(cells)
    pred_pairs = pairs(np.bincount(p))
    true_pairs = pairs(np.bincount(t))
    if pred_pairs == 0 and true_pairs == 0:
        return 1.0, 1.0, 1.0
    prec = tp / pred_pairs if pred_pairs else 0.0
    rec = tp / true_pairs if true_pairs else 0.0
    return prec, rec, _f(prec, rec)


def bcubed_prf(labels_true, labels_pred) -> tuple[float, float, float]:
    """BCubed precision, recall and F (as in learn-to-cluster).

    For item i with predicted cluster P(i) and true cluster T(i):
    precision_i = |P(i) & T(i)| / |P(i)|, recall_i = |P(i) & T(i)| / |T(i)|; both averaged over
    all items, F = harmonic mean of the averages. Each NOISE prediction is a singleton
    (precision 1, recall 1/|T(i)|).
    """
    t, p = _codes(labels_true, labels_pred)
    cells, rows, cols = _contingency(t, p)
    n = t.size
    # an item in cell (r, c) has |P & T| = cells; the cell's items contribute cells * cells / size
    prec = float((cells * cells / np.bincount(p)[cols]).sum() / n)
    rec = float((cells * cells / np.bincount(t)[rows]).sum() / n)
    return prec, rec, _f(prec, rec)


def clustering_report(labels_true, labels_pred) -> dict:
    """Pairwise and BCubed P/R/F, ARI and NMI (sklearn, NOISE items as singletons for both),
    noise_fraction, n_clusters (predicted, NOISE excluded), n_identities (true labels), n_items."""
    from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

    t, p = _codes(labels_true, labels_pred)
    noise = _labels("labels_pred", labels_pred) == NOISE
    pp, pr, pf = pairwise_prf(t, p)
    bp, br, bf = bcubed_prf(t, p)
    return {
        "pairwise_precision": pp,
        "pairwise_recall": pr,
        "pairwise_f": pf,
        "bcubed_precision": bp,
        "bcubed_recall": br,
        "bcubed_f": bf,
        "ari": float(adjusted_rand_score(t, p)),
        "nmi": float(normalized_mutual_info_score(t, p)),
        "noise_fraction": float(noise.mean()),
        "n_clusters": int(np.unique(p[~noise]).size),
        "n_identities": int(np.unique(t).size),
        "n_items": int(t.size),
    }


# ----------------------------------------------------------------------------------------------
# retrieval


def _match_ranks(row: np.ndarray, sorted_row: np.ndarray, match: np.ndarray) -> np.ndarray:
    """Ascending 1-based ranks of the correct matches in `row` under a stable sort by distance
    (ties: lower gallery index first), looked up in the already sorted row."""
    pos = np.flatnonzero(match)
    pd = row[pos]
    ahead = np.searchsorted(sorted_row, pd, side="left")  # items strictly closer
    tied = np.searchsorted(sorted_row, pd, side="right") - ahead > 1
    for k in np.flatnonzero(tied):  # rare: equal distances, earlier gallery items come first
        ahead[k] += np.count_nonzero(row[: pos[k]] == pd[k])
    return np.sort(ahead + 1)


class _Tally:
    """Accumulates per-query first-match rank and AP; CMC and mAP are computed at the end."""

    def __init__(self, ranks: Iterable[int]):
        ranks = tuple(ranks)
        if not ranks or any(not isinstance(k, (int, np.integer)) or k < 1 for k in ranks):
            raise InputError(f"ranks must be positive integers, got {ranks!r}")
        self.ranks = ranks
        self.first: list[int] = []
        self.ap: list[float] = []
        self.skipped = 0

    def add_block(self, D: np.ndarray, match: np.ndarray) -> None:
        """D: (queries, gallery) finite distances with removed gallery items set to +inf;
        match: same shape, True where the gallery item is a correct (and not removed) match."""
        has = match.any(axis=1)
        self.skipped += int(has.size - has.sum())
        D, match = D[has], match[has]
        S = np.sort(D, axis=1)  # removed items (+inf) sort last and never count as closer
        for r in range(D.shape[0]):
            rk = _match_ranks(D[r], S[r], match[r])
            self.first.append(int(rk[0]))
            # AP: mean over correct matches of precision at their rank (k-th match at r_k: k / r_k)
            self.ap.append(float(np.mean(np.arange(1, rk.size + 1) / rk)))

    def result(self) -> dict:
        first = np.asarray(self.first)
        nan = float("nan")  # no valid query: the metrics are undefined, not zero
        out = {f"rank{k}": float((first <= k).mean()) if first.size else nan for k in self.ranks}
        out["mAP"] = float(np.mean(self.ap)) if self.ap else nan
        out["n_queries"] = len(self.first)
        out["n_skipped"] = self.skipped
        return out


def _ids(name: str, values, n: int) -> np.ndarray:
    arr = np.asarray(values)
    if arr.shape != (n,):
        raise InputError(f"{name} must have one entry per row ({n}), got shape {arr.shape}")
    return arr


def _joint_codes(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Ids of two lists as ints, equal where the ids are equal."""
    codes = np.unique(np.concatenate([a, b]), return_inverse=True)[1].ravel()
    return codes[: a.size], codes[a.size :]


def _block_rows(n_rows: int, n_cols: int):
    step = max(1, _CHUNK_ELEMS // max(1, n_cols))
    for s in range(0, n_rows, step):
        yield s, min(n_rows, s + step)


def rank_k_and_map(
    distmat: np.ndarray,
    q_ids,
    g_ids,
    *,
    q_cams=None,
    g_cams=None,
    ranks: Sequence[int] = (1, 5, 10),
) -> dict:
    """CMC rank-k and mAP of a (n_query, n_gallery) distance matrix, market1501 style (torchreid).

    With cameras, gallery items with the query's id AND camera are removed for that query. A query
    with no correct match left is skipped and counted in n_skipped. rank{k} = fraction of valid
    queries with a correct match in the top k; AP = mean over correct matches of precision at
    their rank; mAP = mean AP over valid queries. Metrics are NaN when no query is valid.
    """
    distmat = np.asarray(distmat)
    if distmat.ndim != 2:
        raise InputError(f"distmat must be 2-D (n_query, n_gallery), got shape {distmat.shape}")
    nq, ng = distmat.shape
    q, g = _joint_codes(_ids("q_ids", q_ids, nq), _ids("g_ids", g_ids, ng))
    if (q_cams is None) != (g_cams is None):
        raise InputError("give both q_cams and g_cams, or neither")
    qc = gc = None
    if q_cams is not None:
        qc, gc = _joint_codes(_ids("q_cams", q_cams, nq), _ids("g_cams", g_cams, ng))
    tally = _Tally(ranks)
    for s, e in _block_rows(nq, ng):
        D = np.array(distmat[s:e], dtype=np.float64)  # a copy: removed entries are overwritten
        if not np.isfinite(D).all():
            raise InputError("distmat holds NaN or infinite distances; all must be finite")
        match = q[s:e, None] == g[None, :]
        if qc is not None:
            removed = match & (qc[s:e, None] == gc[None, :])
            D[removed] = np.inf
            match &= ~removed
        tally.add_block(D, match)
    return tally.result()


def _unit_rows(X: np.ndarray, n: int) -> np.ndarray:
    X = np.asarray(X, dtype=np.float32)
    if X.ndim != 2 or X.shape[0] != n:
        raise InputError(f"X must be (n_items, dim) with n_items={n}, got shape {X.shape}")
    return X


def _distances(Q: np.ndarray, G: np.ndarray) -> np.ndarray:
    """A stand-in for Euclidean distance between L2-normalised rows that ranks identically:
    d^2 = 2 - 2 <q, g> is increasing in -<q, g>, and skipping the arithmetic halves the time."""
    D = Q @ G.T
    return np.negative(D, out=D)


def leave_one_out_retrieval(X: np.ndarray, ids, *, ranks: Sequence[int] = (1, 5, 10)) -> dict:
    """Every item queries all the others (itself excluded), ranked by Euclidean distance on
    L2-normalised X (computed as the same order of decreasing inner product).

    Items whose identity has a single image have no correct match: they are skipped as queries
    (counted in n_skipped) but stay in the gallery as distractors.
    """
    ids = _labels("ids", ids)
    X = _unit_rows(X, ids.size)
    codes = np.unique(ids, return_inverse=True)[1].ravel()
    tally = _Tally(ranks)
    for s, e in _block_rows(codes.size, codes.size):
        D = _distances(X[s:e], X)
        match = codes[s:e, None] == codes[None, :]
        rows, self_cols = np.arange(e - s), np.arange(s, e)
        D[rows, self_cols] = np.inf
        match[rows, self_cols] = False
        tally.add_block(D, match)
    return tally.result()


def cross_camera_retrieval(X: np.ndarray, ids, cams, *, ranks: Sequence[int] = (1, 5, 10)) -> dict:
    """For each camera c, items seen by c query the items of all other cameras; the results of all
    queries of all cameras are pooled (each query counts once, so busy cameras weigh more).

    A query whose identity appears in no other camera is skipped and counted in n_skipped.
    """
    ids = _labels("ids", ids)
    X = _unit_rows(X, ids.size)
    cams = _ids("cams", cams, ids.size)
    codes = np.unique(ids, return_inverse=True)[1].ravel()
    tally = _Tally(ranks)
    for c in np.unique(cams):
        q_idx = np.flatnonzero(cams == c)
        g_idx = np.flatnonzero(cams != c)
        for s, e in _block_rows(q_idx.size, g_idx.size):
            qi = q_idx[s:e]
            tally.add_block(_distances(X[qi], X[g_idx]), codes[qi, None] == codes[None, g_idx])
    return tally.result()


def dedupe_by_hash(paths: Sequence[str], hashes: Sequence[str]) -> list[int]:
    """Indices to keep so that each content hash is evaluated once: the first occurrence in input
    order (byte-identical copies would otherwise count as free perfect matches)."""
    if len(paths) != len(hashes):
        raise InputError(f"paths has {len(paths)} entries but hashes has {len(hashes)}")
    seen: set[str] = set()
    kept = []
    for i, h in enumerate(hashes):
        if h not in seen:
            seen.add(h)
            kept.append(i)
    return kept


def subject_key(box: Sequence[float] | None, score: float, width: float, height: float,
                confident: float | None = None) -> tuple[bool, float, float]:
    """Sort key (largest first) for the face a labeled photo is of, among the photo's faces.

    A labeled in-the-wild photo is of its largest or its centred person (a news photo, a
    celebrity photo with a bystander): the subject is the confident face (detector score above
    `confident`, where given) whose centre lies fewest of its own widths from the photo's centre,
    so a large face a little off-centre beats a small one in the middle. A face without a box is
    the whole image: centred. Ties: the higher detector score.
    Measured on the dev sets against "the highest detector score" (benchmarks/RESULTS.md):
    LFW DevTest pairs 97.8% -> 98.5% at dlib's threshold, celeba_wild_dev rank-1 unchanged."""
    sure = confident is None or score > confident
    if box is None:
        return (sure, 1.0, float(score))
    x, y, w, h = (float(v) for v in box)
    off = float(np.hypot(x + w / 2 - width / 2, y + h / 2 - height / 2))
    side = max(w, 1.0)
    return (sure, side / (off + side), float(score))
