"""Metric tests on tiny cases worked out by hand (the arithmetic sits next to each expected value),
plus brute-force cross-checks and invariance properties on small random data."""
from __future__ import annotations

import math
from itertools import combinations

import numpy as np
import pytest
from sklearn.metrics import adjusted_rand_score

from peoplemap import evaluate
from peoplemap.errors import InputError
from peoplemap.evaluate import (
    bcubed_prf,
    clustering_report,
    cross_camera_retrieval,
    dedupe_by_hash,
    leave_one_out_retrieval,
    pairwise_prf,
    rank_k_and_map,
)
from peoplemap.types import NOISE

N = NOISE
TRUE = [0, 0, 0, 1, 1]


def approx(*values):
    return pytest.approx(values if len(values) > 1 else values[0], abs=1e-12)


# ---------------------------------------------------------------------------------------------
# clustering


def test_one_item_moved():
    pred = [0, 0, 1, 1, 1]
    # true clusters {0,1,2} {3,4}; pred clusters {0,1} {2,3,4}
    # pairs together in both: (0,1), (3,4) -> TP = 2
    # pred pairs: C(2,2) + C(3,2) = 1 + 3 = 4 ; true pairs: C(3,2) + C(2,2) = 3 + 1 = 4
    # P = 2/4 = 0.5, R = 2/4 = 0.5, F = 0.5
    assert pairwise_prf(TRUE, pred) == approx(0.5, 0.5, 0.5)
    # BCubed per item (|P&T|/|P|, |P&T|/|T|):
    #   items 0,1: P={0,1},  T={0,1,2}: (2/2, 2/3)
    #   item 2:    P={2,3,4},T={0,1,2}: (1/3, 1/3)
    #   items 3,4: P={2,3,4},T={3,4}:   (2/3, 2/2)
    # precision = (1 + 1 + 1/3 + 2/3 + 2/3)/5 = (11/3)/5 = 11/15
    # recall    = (2/3 + 2/3 + 1/3 + 1 + 1)/5 = (11/3)/5 = 11/15 ; F = 11/15
    assert bcubed_prf(TRUE, pred) == approx(11 / 15, 11 / 15, 11 / 15)


def test_noise_items_are_singletons():
    pred = [3, 3, N, N, N]
    # pred clusters {0,1} {2} {3} {4} (noise is never grouped, so (3,4) is NOT a predicted pair)
    # TP = 1 (0,1); pred pairs = 1; true pairs = 3 + 1 = 4
    # P = 1/1 = 1, R = 1/4, F = 2*1*(1/4)/(1 + 1/4) = 0.5/1.25 = 0.4
    assert pairwise_prf(TRUE, pred) == approx(1.0, 0.25, 0.4)
    # BCubed: items 0,1: (2/2, 2/3); item 2: (1/1, 1/3); items 3,4: (1/1, 1/2)
    # precision = 1 ; recall = (2/3 + 2/3 + 1/3 + 1/2 + 1/2)/5 = (8/3)/5 = 8/15
    # F = 2*1*(8/15)/(1 + 8/15) = (16/15)/(23/15) = 16/23
    assert bcubed_prf(TRUE, pred) == approx(1.0, 8 / 15, 16 / 23)


def test_all_noise_prediction():
    pred = [N] * 5
    # no predicted pair: precision is 0/0 -> 0.0 by convention; TP = 0 so recall = 0/4 = 0; F = 0
    assert pairwise_prf(TRUE, pred) == approx(0.0, 0.0, 0.0)
    # BCubed all singletons: precision 1 each; recall 1/3 for items 0-2, 1/2 for items 3,4
    # recall = (3*(1/3) + 2*(1/2))/5 = 2/5 ; F = 2*1*0.4/1.4 = 4/7
    assert bcubed_prf(TRUE, pred) == approx(1.0, 0.4, 4 / 7)


def test_all_singletons_in_both_is_perfect():
    # neither labeling has a pair: nothing to get wrong -> 1.0 (documented special case)
    assert pairwise_prf([0, 1, 2], [N, N, N]) == approx(1.0, 1.0, 1.0)
    # BCubed: each item (1/1, 1/1)
    assert bcubed_prf([0, 1, 2], [N, N, N]) == approx(1.0, 1.0, 1.0)


def test_everything_in_one_cluster():
    pred = [7] * 5
    # pred pairs = C(5,2) = 10, TP = 3 + 1 = 4 = true pairs -> P = 4/10, R = 1, F = 0.8/1.4 = 4/7
    assert pairwise_prf(TRUE, pred) == approx(0.4, 1.0, 4 / 7)
    # BCubed: items 0-2 precision 3/5, items 3,4 precision 2/5 -> (9/5 + 4/5)/5 = 13/25; recall 1
    # F = 2*(13/25)/(1 + 13/25) = (26/25)/(38/25) = 13/19
    assert bcubed_prf(TRUE, pred) == approx(13 / 25, 1.0, 13 / 19)


def test_perfect_clustering_is_all_ones():
    true = ["ann", "ann", "bob", "bob", "bob", "cy"]
    pred = [4, 4, 9, 9, 9, N]  # "cy" is a true singleton; predicting it as noise is correct
    rep = clustering_report(true, pred)
    for key in ("pairwise_precision", "pairwise_recall", "pairwise_f",
                "bcubed_precision", "bcubed_recall", "bcubed_f", "ari", "nmi"):
        assert rep[key] == approx(1.0), key
    assert rep["n_clusters"] == 2  # {4, 9}; noise is not a cluster
    assert rep["n_identities"] == 3
    assert rep["noise_fraction"] == approx(1 / 6)


def test_report_ari_nmi_by_hand():
    rep = clustering_report(TRUE, [0, 0, 1, 1, 1])
    # contingency [[2,1],[0,2]]: sum C(n_ij,2) = 1+0+0+1 = 2; rows (3,2): 3+1 = 4; cols (2,3): 1+3 = 4
    # expected = 4*4/C(5,2) = 16/10 = 1.6; max = (4+4)/2 = 4; ARI = (2-1.6)/(4-1.6) = 0.4/2.4 = 1/6
    assert rep["ari"] == approx(1 / 6)
    assert rep["noise_fraction"] == 0.0 and rep["n_clusters"] == 2 and rep["n_identities"] == 2

    rep = clustering_report(TRUE, [3, 3, N, N, N])
    # noise as singletons: cells (t0,p3)=2, (t0,s2)=1, (t1,s3)=1, (t1,s4)=1 -> sum C = 1
    # rows 3+1 = 4; cols (2,1,1,1) -> 1; expected = 4*1/10 = 0.4; max = (4+1)/2 = 2.5
    # ARI = (1-0.4)/(2.5-0.4) = 0.6/2.1 = 2/7   (one noise cluster {2,3,4} would give 1/6)
    assert rep["ari"] == approx(2 / 7)
    assert rep["ari"] == approx(adjusted_rand_score(TRUE, [3, 3, 10, 11, 12]))
    assert rep["noise_fraction"] == approx(3 / 5) and rep["n_clusters"] == 1

    rep = clustering_report(TRUE, [N] * 5)
    # pred all singletons: MI = H(T), H(P) = ln 5; arithmetic NMI = 2 H(T) / (H(T) + ln 5)
    h_t = -(0.6 * math.log(0.6) + 0.4 * math.log(0.4))
    assert rep["nmi"] == pytest.approx(2 * h_t / (h_t + math.log(5)))
    # sum C(n_ij,2) = 0, cols give 0 -> expected 0; ARI = (0-0)/((4+0)/2 - 0) = 0
    assert rep["ari"] == approx(0.0)
    assert rep["n_clusters"] == 0 and rep["noise_fraction"] == 1.0


def _brute_pairwise(true, pred):
    pred = [p if p != N else ("noise", i) for i, p in enumerate(pred)]
    pairs = list(combinations(range(len(true)), 2))
    same_t = {(i, j) for i, j in pairs if true[i] == true[j]}
    same_p = {(i, j) for i, j in pairs if pred[i] == pred[j]}
    tp = len(same_t & same_p)
    if not same_t and not same_p:
        return 1.0, 1.0, 1.0
    p = tp / len(same_p) if same_p else 0.0
    r = tp / len(same_t) if same_t else 0.0
    return p, r, (0.0 if p + r == 0 else 2 * p * r / (p + r))


def _brute_bcubed(true, pred):
    pred = [p if p != N else ("noise", i) for i, p in enumerate(pred)]
    n = len(true)
    ps, rs = [], []
    for i in range(n):
        P = {j for j in range(n) if pred[j] == pred[i]}
        T = {j for j in range(n) if true[j] == true[i]}
        ps.append(len(P & T) / len(P))
        rs.append(len(P & T) / len(T))
    p, r = sum(ps) / n, sum(rs) / n
    return p, r, 2 * p * r / (p + r)


def test_matches_brute_force_and_is_permutation_invariant():
    rng = np.random.default_rng(0)
    for _ in range(30):
        n = int(rng.integers(1, 25))
        true = rng.integers(0, 5, n).tolist()
        pred = rng.integers(-1, 4, n).tolist()  # -1 = NOISE
        pw, bc = pairwise_prf(true, pred), bcubed_prf(true, pred)
        assert pw == pytest.approx(_brute_pairwise(true, pred))
        assert bc == pytest.approx(_brute_bcubed(true, pred))
        # rename the labels (keeping NOISE as NOISE) and shuffle the items: nothing changes
        t_map = dict(zip(range(5), rng.permutation([10, 20, 30, 40, 50]).tolist()))
        p_map = dict(zip(range(4), rng.permutation([5, 6, 7, 8]).tolist()))
        t2 = [t_map[t] for t in true]
        p2 = [p_map[p] if p != N else N for p in pred]
        order = rng.permutation(n)
        t2, p2 = [t2[i] for i in order], [p2[i] for i in order]
        assert pairwise_prf(t2, p2) == pytest.approx(pw)
        assert bcubed_prf(t2, p2) == pytest.approx(bc)


def test_clustering_input_errors():
    with pytest.raises(InputError, match="labels_pred has 2"):
        pairwise_prf([0, 0, 1], [0, 0])
    with pytest.raises(InputError, match="empty"):
        bcubed_prf([], [])


# ---------------------------------------------------------------------------------------------
# retrieval

# 4 queries x 4 gallery items, worked by hand below
DIST = np.array(
    [
        [0.1, 0.2, 0.3, 0.4],
        [0.5, 0.1, 0.3, 0.2],
        [0.3, 0.6, 0.2, 0.9],
        [0.4, 0.1, 0.05, 0.3],
    ]
)
Q_IDS, G_IDS = [1, 2, 3, 1], [1, 2, 1, 3]
Q_CAMS, G_CAMS = [0, 0, 0, 1], [0, 1, 1, 0]


def test_rank_k_and_map_without_cameras():
    res = rank_k_and_map(DIST, Q_IDS, G_IDS, ranks=(1, 2, 3, 4))
    # q0 (id 1): order g0(1) g1(2) g2(1) g3(3) -> matches at ranks 1, 3: AP = (1/1 + 2/3)/2 = 5/6
    # q1 (id 2): order g1(2) g3 g2 g0           -> match at rank 1:      AP = 1
    # q2 (id 3): order g2 g0 g1 g3(3)           -> match at rank 4:      AP = 1/4
    # q3 (id 1): order g2(1) g1 g3 g0(1)        -> matches at ranks 1, 4: AP = (1/1 + 2/4)/2 = 3/4
    # first match ranks 1, 1, 4, 1 -> rank1 = rank2 = rank3 = 3/4, rank4 = 1
    # mAP = (5/6 + 1 + 1/4 + 3/4)/4 = (17/6)/4 = 17/24
    assert res == {"rank1": approx(0.75), "rank2": approx(0.75), "rank3": approx(0.75),
                   "rank4": approx(1.0), "mAP": approx(17 / 24), "n_queries": 4, "n_skipped": 0}


def test_rank_k_and_map_removes_same_id_same_camera():
    res = rank_k_and_map(DIST, Q_IDS, G_IDS, q_cams=Q_CAMS, g_cams=G_CAMS, ranks=(1, 2, 3))
    # q0 (id 1, cam 0): g0 is id 1 cam 0 -> removed; order g1(2) g2(1) g3 -> rank 2, AP = 1/2
    # q1 (id 2, cam 0): g1 is id 2 cam 1 -> kept; rank 1, AP = 1
    # q2 (id 3, cam 0): its only match g3 is id 3 cam 0 -> removed; no valid match -> skipped
    # q3 (id 1, cam 1): g2 (id 1 cam 1) removed; order g1 g3 g0(1) -> rank 3, AP = 1/3
    # valid queries 3: rank1 = 1/3, rank2 = 2/3, rank3 = 3/3
    # mAP = (1/2 + 1 + 1/3)/3 = (11/6)/3 = 11/18
    assert res == {"rank1": approx(1 / 3), "rank2": approx(2 / 3), "rank3": approx(1.0),
                   "mAP": approx(11 / 18), "n_queries": 3, "n_skipped": 1}


def test_rank_k_ties_keep_gallery_order():
    d = np.array([[0.5, 0.5, 0.5, 0.2]])
    # stable sort: g3 (0.2), then g0, g1, g2 in gallery order; match at g1 -> rank 3, AP = 1/3
    res = rank_k_and_map(d, ["a"], ["b", "a", "c", "d"], ranks=(1, 3))
    assert res == {"rank1": 0.0, "rank3": 1.0, "mAP": approx(1 / 3), "n_queries": 1, "n_skipped": 0}


def test_rank_k_no_valid_query_is_nan():
    res = rank_k_and_map(np.zeros((1, 2)), [1], [2, 3], ranks=(1,))
    assert math.isnan(res["rank1"]) and math.isnan(res["mAP"])
    assert res["n_queries"] == 0 and res["n_skipped"] == 1


def _reference_rank_k(distmat, q, g, qc, gc, ranks):
    """Straight torchreid-style loop with a full stable argsort per query."""
    q, g = np.asarray(q), np.asarray(g)
    firsts, aps, skipped = [], [], 0
    for i in range(len(q)):
        order = np.argsort(distmat[i], kind="stable")
        keep = ~((g[order] == q[i]) & (np.asarray(gc)[order] == qc[i])) if qc is not None else True
        m = (g[order] == q[i])[keep] if qc is not None else g[order] == q[i]
        if not m.any():
            skipped += 1
            continue
        firsts.append(np.flatnonzero(m)[0] + 1)
        hits = np.cumsum(m)
        aps.append(float(np.mean((hits / np.arange(1, m.size + 1))[m])))
    out = {f"rank{k}": float(np.mean(np.asarray(firsts) <= k)) for k in ranks}
    out.update(mAP=float(np.mean(aps)), n_queries=len(firsts), n_skipped=skipped)
    return out


def test_rank_k_matches_full_sort_reference_with_ties():
    rng = np.random.default_rng(1)
    dist = rng.integers(0, 4, (40, 60)).astype(float)  # few distinct values: many ties
    q, g = rng.integers(0, 8, 40), rng.integers(0, 8, 60)
    qc, gc = rng.integers(0, 3, 40), rng.integers(0, 3, 60)
    for cams in (False, True):
        kw = dict(q_cams=qc, g_cams=gc) if cams else {}
        got = rank_k_and_map(dist, q, g, ranks=(1, 5, 10), **kw)
        ref = _reference_rank_k(dist, q, g, qc if cams else None, gc, (1, 5, 10))
        assert got == pytest.approx(ref)


def _unit(degrees):
    a = np.radians(degrees)
    return np.stack([np.cos(a), np.sin(a)], axis=1).astype(np.float32)


def test_leave_one_out_by_hand():
    X = _unit([0, 10, 90, 100, 5])
    ids = ["a", "a", "b", "b", "c"]  # "c" has one image: never a query, still a distractor
    res = leave_one_out_retrieval(X, ids, ranks=(1, 5))
    # distance grows with the angle between the vectors
    # q0 (0 deg):   others at 5 (c), 10 (a), 90, 100 -> match at rank 2, AP = 1/2
    # q1 (10 deg):  5 (c, 5 away), 0 (a, 10 away)    -> rank 2, AP = 1/2
    # q2 (90 deg):  100 (b, 10 away) first           -> rank 1, AP = 1
    # q3 (100 deg): 90 (b, 10 away) first            -> rank 1, AP = 1
    # q4: identity "c" has no other image -> skipped
    # rank1 = 2/4, rank5 = 4/4, mAP = (1/2 + 1/2 + 1 + 1)/4 = 3/4
    assert res == {"rank1": approx(0.5), "rank5": approx(1.0), "mAP": approx(0.75),
                   "n_queries": 4, "n_skipped": 1}


def test_cross_camera_by_hand():
    X = _unit([0, 60, 90, 80, 200])
    ids = [0, 0, 1, 1, 2]
    cams = [0, 1, 0, 1, 0]
    res = cross_camera_retrieval(X, ids, cams, ranks=(1, 2))
    # cam 0 queries {0, 2, 4} vs gallery {1 (60, id0), 3 (80, id1)}
    #   q0 (0 deg, id0):  item1 60 away, item3 80 away     -> rank 1, AP 1
    #   q2 (90 deg, id1): item3 10 away, item1 30 away     -> rank 1, AP 1
    #   q4 (id2): no id2 in another camera                  -> skipped
    # cam 1 queries {1, 3} vs gallery {0 (0), 2 (90), 4 (200)}
    #   q1 (60 deg, id0): item2 30, item0 60, item4 140     -> rank 2, AP 1/2
    #   q3 (80 deg, id1): item2 10 away                     -> rank 1, AP 1
    # pooled: rank1 = 3/4, rank2 = 4/4, mAP = (1 + 1 + 1/2 + 1)/4 = 7/8
    assert res == {"rank1": approx(0.75), "rank2": approx(1.0), "mAP": approx(7 / 8),
                   "n_queries": 4, "n_skipped": 1}


def test_retrieval_chunking_gives_the_same_result(monkeypatch):
    rng = np.random.default_rng(2)
    X = rng.normal(size=(50, 8)).astype(np.float32)
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    ids, cams = rng.integers(0, 10, 50), rng.integers(0, 3, 50)
    whole_loo = leave_one_out_retrieval(X, ids)
    whole_cc = cross_camera_retrieval(X, ids, cams)
    # the same numbers through a plain distance matrix with the self-match given another camera
    d = np.sqrt(np.maximum(2 - 2 * X @ X.T, 0))
    ref = rank_k_and_map(d, ids, ids, q_cams=np.arange(50), g_cams=np.arange(50))
    assert whole_loo == pytest.approx(ref)
    monkeypatch.setattr(evaluate, "_CHUNK_ELEMS", 7)  # one query row per block
    assert leave_one_out_retrieval(X, ids) == whole_loo
    assert cross_camera_retrieval(X, ids, cams) == whole_cc


def test_retrieval_input_errors():
    with pytest.raises(InputError, match="q_ids"):
        rank_k_and_map(np.zeros((2, 3)), [1], [1, 2, 3])
    with pytest.raises(InputError, match="both q_cams and g_cams"):
        rank_k_and_map(np.zeros((1, 1)), [1], [1], q_cams=[0])
    with pytest.raises(InputError, match="ranks"):
        rank_k_and_map(np.zeros((1, 1)), [1], [1], ranks=(0,))
    with pytest.raises(InputError, match="X must be"):
        leave_one_out_retrieval(np.zeros((3, 2)), [1, 1])


# ---------------------------------------------------------------------------------------------
# dedupe


def test_dedupe_keeps_first_occurrence():
    paths = ["a.jpg", "b.jpg", "copy_of_a.jpg", "c.jpg", "b2.jpg"]
    hashes = ["h1", "h2", "h1", "h3", "h2"]
    # h1 first at 0, h2 first at 1, h3 at 3; 2 and 4 are later copies
    assert dedupe_by_hash(paths, hashes) == [0, 1, 3]
    assert dedupe_by_hash([], []) == []
    with pytest.raises(InputError):
        dedupe_by_hash(["a"], [])


def test_subject_is_the_confident_face_nearest_the_centre_in_face_widths():
    def subject(faces, floor=0.0):  # faces: (box, score) on a 400 x 300 photo
        return max(range(len(faces)), key=lambda i: evaluate.subject_key(*faces[i], 400, 300, floor))

    centred_small = ((180, 130, 40, 40), 1.0)     # centre (200, 150): 0 widths off -> 1.0
    big_off_centre = ((220, 60, 160, 160), 2.0)   # centre (300, 140): ~100 px = 0.63 widths -> 0.61
    small_off_centre = ((20, 20, 40, 40), 3.0)    # ~210 px = 5.3 widths -> 0.16
    assert subject([small_off_centre, big_off_centre]) == 1  # larger and nearer wins over score
    assert subject([big_off_centre, centred_small]) == 1     # the one in the middle
    unsure_centre = ((180, 130, 40, 40), -0.1)                # below the model's floor
    assert subject([unsure_centre, small_off_centre]) == 1
    assert subject([unsure_centre, small_off_centre], floor=None) == 0
    assert evaluate.subject_key(None, 0.5, 400, 300) == (True, 1.0, 0.5)  # whole image: centred
    # equally central: the higher detector score
    assert subject([((180, 130, 40, 40), 0.5), ((170, 120, 60, 60), 0.9)]) == 1
