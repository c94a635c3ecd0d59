"""Clusterer, assign and model persistence, on generated vectors."""
from __future__ import annotations

import numpy as np
import pytest

from peoplemap.cluster import PROFILES, Clusterer, assign, load_model, save_model
from peoplemap.errors import InputError
from peoplemap.types import NOISE


def blobs(n_clusters: int, per: int, d: int, spread: float, seed: int = 0, n_noise: int = 0):
    """L2-normalised points around random unit centres, plus uniformly random noise points."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(n_clusters, d))
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    truth = np.repeat(np.arange(n_clusters), per)
    X = centres[truth] + spread / np.sqrt(d) * rng.normal(size=(truth.size, d))
    if n_noise:
        X = np.vstack([X, rng.normal(size=(n_noise, d))])
        truth = np.concatenate([truth, np.full(n_noise, -1)])
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    return X.astype(np.float32), truth, centres.astype(np.float32)


# --- the design's literal code, adapted only for the min(50, ...) guard --------------------------
def perform_clustering(features):
    from hdbscan import HDBSCAN
    from sklearn.decomposition import PCA
    from sklearn.preprocessing import StandardScaler

    scaler = StandardScaler()
    features_scaled = scaler.fit_transform(features)

    pca = PCA(n_components=min(50, features.shape[0] - 1, features.shape[1]))
    features_reduced = pca.fit_transform(features_scaled)

    clusterer = HDBSCAN(min_cluster_size=3, metric="euclidean")
    labels = clusterer.fit_predict(features_reduced)
    return labels


@pytest.mark.parametrize(
    "n_clusters, per, d, n_noise",
    [(8, 15, 256, 10), (3, 8, 64, 4), (6, 40, 500, 20)],  # n, d <= 500: PCA's 'auto' is exact SVD
)
def test_seed_profile_reproduces_design_labels(n_clusters, per, d, n_noise):
    rng = np.random.default_rng(d)
    X, _, _ = blobs(n_clusters, per, d, spread=1.0, seed=d, n_noise=n_noise)
    # MobileNet-like features: non-negative, unnormalised, float32
    X = np.maximum(0, X * 5 + rng.normal(scale=0.3, size=X.shape)).astype(np.float32)
    expected = perform_clustering(X)
    model = Clusterer("seed").fit(X)
    np.testing.assert_array_equal(model.labels_, expected)
    assert model.n_clusters_ == expected.max() + 1
    assert model.n_clusters_ >= 2


def test_default_profile_finds_blobs():
    X, truth, _ = blobs(5, 12, 64, spread=0.3, seed=1)
    model = Clusterer().fit(X)
    assert model.n_clusters_ == 5
    from sklearn.metrics import adjusted_rand_score

    assert adjusted_rand_score(truth, model.labels_) == 1.0
    assert model.probabilities_.shape == (60,)
    assert model.transform(X).shape == X.shape


def test_profiles_documented_and_overridable():
    assert set(PROFILES) == {"seed", "default", "chinese-whispers"}
    X, _, _ = blobs(3, 10, 16, spread=0.3, seed=2)
    model = Clusterer("default", min_cluster_size=4, cluster_selection_method="leaf").fit(X)
    assert model.params_["min_cluster_size"] == 4
    assert model.params_["cluster_selection_method"] == "leaf"
    assert model.params_["preprocess"] == "l2-normalize"


@pytest.mark.parametrize("profile", ["seed", "default"])
@pytest.mark.parametrize("n", [0, 1, 2])
def test_tiny_inputs_are_all_noise(profile, n):
    X, _, _ = blobs(1, max(n, 1), 8, spread=0.1)
    X = X[:n]
    model = Clusterer(profile, min_cluster_size=3).fit(X)
    assert model.labels_.shape == (n,)
    assert (model.labels_ == NOISE).all()
    assert model.n_clusters_ == 0
    got = assign(model, blobs(1, 2, 8, spread=0.1)[0])
    assert [a.cluster for a in got] == [None, None]


def test_duplicate_vectors_do_not_break_fit():
    X, _, _ = blobs(2, 5, 16, spread=0.2, seed=3)
    X = np.vstack([X, X[:3], X[:3]])
    model = Clusterer().fit(X)
    assert model.n_clusters_ >= 1
    a = assign(model, X[:1])[0]
    assert a.cluster == model.labels_[0]


@pytest.mark.parametrize(
    "X, match",
    [
        (np.zeros((3, 0)), "0 features"),
        (np.array([[0.0, np.nan], [1.0, 0.0]]), "NaN or infinite"),
        (np.array([[0.0, 1.0], [np.inf, 0.0]]), "row 1"),
        (np.ones(4), "2-D"),
        (np.array([[0.0, 0.0], [1.0, 0.0]]), "all zeros"),
    ],
)
def test_bad_input_raises(X, match):
    with pytest.raises(InputError, match=match):
        Clusterer().fit(X)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"profile": "nope"}, "Must be one of"),
        ({"min_cluster_size": 1}, "min_cluster_size"),
        ({"min_samples": 0}, "min_samples"),
        ({"cluster_selection_method": "x"}, "cluster_selection_method"),
        ({"cluster_selection_epsilon": -1.0}, "cluster_selection_epsilon"),
        ({"metric": "cosine"}, "Unknown clustering parameter"),
    ],
)
def test_bad_params_raise_in_fit(kwargs, match):
    model = Clusterer(**kwargs)  # __init__ only stores
    with pytest.raises(InputError, match=match):
        model.fit(np.eye(4))


def test_cannot_link_splits_members_of_one_group():
    X, truth, _ = blobs(3, 8, 32, spread=0.3, seed=4)
    free = Clusterer().fit(X)
    a0, a1, a2 = np.flatnonzero(truth == 0)[:3]
    b0 = np.flatnonzero(truth == 1)[0]
    assert free.labels_[a0] == free.labels_[a1] == free.labels_[a2] != NOISE
    groups = [[a0, a1, a2], [a0, b0]]  # second group spans two clusters already: no change
    model = Clusterer().fit(X, cannot_link=groups)
    lab = model.labels_
    in_a = [i for i in (a0, a1, a2) if lab[i] != NOISE and lab[i] == free.labels_[a0]]
    assert len(in_a) == 1
    for g in groups:
        kept = lab[g][lab[g] != NOISE]
        assert len(set(kept.tolist())) == kept.size  # no cluster holds two members of a group
    others = np.setdiff1d(np.arange(len(X)), [a0, a1, a2])
    assert model.n_clusters_ == free.n_clusters_
    np.testing.assert_array_equal(lab[others], free.labels_[others])


def test_cannot_link_dissolves_cluster_that_gets_too_small():
    X, _, _ = blobs(2, 10, 16, spread=0.3, seed=5)
    pair = np.array([[1.0] + [0.0] * 15, [0.999, 0.04] + [0.0] * 14], dtype=np.float32)
    X = np.vstack([X, pair / np.linalg.norm(pair, axis=1, keepdims=True)])
    params = dict(min_samples=1, cluster_selection_epsilon=0.0)  # a tight pair forms its own cluster
    free = Clusterer(**params).fit(X)
    assert free.labels_[20] == free.labels_[21] != NOISE
    model = Clusterer(**params).fit(X, cannot_link=[[20, 21]])
    assert model.labels_[20] == model.labels_[21] == NOISE
    assert model.n_clusters_ == free.n_clusters_ - 1
    assert set(model.labels_.tolist()) == set(range(model.n_clusters_)) | {NOISE}


def test_cannot_link_rejects_bad_indices():
    with pytest.raises(InputError, match="out of range"):
        Clusterer().fit(np.eye(4), cannot_link=[[0, 9]])


def _centre_queries(model, X, centres, seed=6):
    rng = np.random.default_rng(seed)
    Q = centres + 0.02 * rng.normal(size=centres.shape)
    Q /= np.linalg.norm(Q, axis=1, keepdims=True)
    far = -centres.mean(axis=0, keepdims=True)
    return np.vstack([Q, far / np.linalg.norm(far)]).astype(np.float32)


@pytest.mark.parametrize("profile", ["default", "seed"])
def test_assign_centre_points_and_reject_far_point(profile):
    X, truth, centres = blobs(4, 15, 32, spread=0.4, seed=7)
    model = Clusterer(profile).fit(X)
    assert model.n_clusters_ == 4
    Q = _centre_queries(model, X, centres)
    got = assign(model, Q)
    for c, a in enumerate(got[:-1]):
        expected = np.bincount(model.labels_[truth == c][model.labels_[truth == c] >= 0]).argmax()
        assert a.cluster == expected
        assert 0.5 < a.confidence <= 1.0
    if profile == "default":  # after StandardScaler+PCA the 'far' point is not guaranteed far
        assert got[-1].cluster is None and got[-1].confidence == 0.0
    # X_ref gives the same answers as the stored reference
    assert [a.cluster for a in assign(model, Q, X_ref=X)] == [a.cluster for a in got]


def test_assign_far_random_points_get_none():
    X, _, _ = blobs(3, 10, 64, spread=0.2, seed=8)
    model = Clusterer().fit(X)
    far = np.random.default_rng(9).normal(size=(20, 64)).astype(np.float32)
    assert all(a.cluster is None for a in assign(model, far))


@pytest.mark.parametrize("profile", ["default", "seed"])
def test_save_load_round_trip(tmp_path, profile):
    X, _, centres = blobs(4, 12, 24, spread=0.4, seed=10, n_noise=5)
    model = Clusterer(profile, min_samples=2).fit(X, cannot_link=[[0, 1]])
    path = tmp_path / "model.npz"
    save_model(model, path)
    loaded = load_model(path)
    np.testing.assert_array_equal(loaded.labels_, model.labels_)
    np.testing.assert_array_equal(loaded.probabilities_, model.probabilities_)
    assert loaded.n_clusters_ == model.n_clusters_
    assert loaded.get_params() == model.get_params()
    np.testing.assert_array_equal(loaded.transform(X), model.transform(X))
    Q = np.vstack([_centre_queries(model, X, centres), X[:10]])
    assert assign(loaded, Q) == assign(model, Q)
    # the file holds no pickled objects
    with np.load(path, allow_pickle=False) as z:
        assert all(z[k].dtype != object for k in z.files)


def test_save_without_reference_needs_x_ref(tmp_path):
    X, _, _ = blobs(3, 10, 16, spread=0.3, seed=11)
    model = Clusterer().fit(X)
    save_model(model, tmp_path / "m.npz", include_reference=False)
    loaded = load_model(tmp_path / "m.npz")
    with pytest.raises(InputError, match="X_ref"):
        assign(loaded, X[:2])
    assert assign(loaded, X[:5], X_ref=X) == assign(model, X[:5])


def test_load_rejects_non_model(tmp_path):
    p = tmp_path / "x.npz"
    np.savez(p, a=np.arange(3))
    with pytest.raises(InputError, match="not a peoplemap clustering model"):
        load_model(p)
    with pytest.raises(InputError):
        load_model(tmp_path / "missing.npz")


def test_assign_dimension_mismatch():
    X, _, _ = blobs(2, 5, 8, spread=0.3)
    model = Clusterer().fit(X)
    with pytest.raises(InputError, match="8"):
        assign(model, np.ones((1, 9), dtype=np.float32))
    with pytest.raises(InputError, match="not fitted"):
        assign(Clusterer(), X)


def test_chinese_whispers_profile_matches_dlib_all_pairs():
    """The kNN-graph chinese whispers equals dlib's all-pairs chinese_whispers_clustering."""
    dlib = pytest.importorskip("dlib")
    X, truth, _ = blobs(6, 10, 32, spread=0.3, seed=3)
    Z = X / np.linalg.norm(X, axis=1, keepdims=True)
    model = Clusterer("chinese-whispers", threshold=0.6).fit(X)
    ref = np.asarray(dlib.chinese_whispers_clustering([dlib.vector(v.tolist()) for v in Z], 0.6))
    from sklearn.metrics import adjusted_rand_score

    single = np.flatnonzero(np.bincount(ref)[ref] == 1)
    assert set(np.flatnonzero(model.labels_ == NOISE)) == set(single)
    kept = model.labels_ != NOISE
    assert adjusted_rand_score(ref[kept], model.labels_[kept]) == 1.0
    assert ((model.probabilities_ > 0) == kept).all()
    with pytest.raises(InputError, match="threshold"):
        Clusterer("chinese-whispers", threshold=0).fit(X)


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


def test_link_distance_splits_a_crowd_of_strangers_and_keeps_people_whole() -> None:
    """HDBSCAN alone joins faces that are each other's nearest but farther apart than the model's
    match distance (strangers who each appear once); link_distance keeps only chains of pairs
    closer than it, and attaches a stray face that is clearly nearest one person."""
    from peoplemap.cluster import refine_by_links
    from peoplemap.knn import knn_graph

    rng = np.random.default_rng(0)
    centre = _unit(rng.normal(size=(3, 64)))
    person_a = _unit(centre[0] + 0.012 * rng.normal(size=(8, 64)))  # pairs ~0.1 apart
    person_b = _unit(centre[1] + 0.012 * rng.normal(size=(8, 64)))
    # strangers: 6 unit vectors each ~0.5 from the others (a crowd HDBSCAN may call a cluster)
    strangers = _unit(centre[2] + 0.045 * rng.normal(size=(6, 64)))
    stray_a = _unit(person_a.mean(0) + 0.035 * rng.normal(size=64))  # ~0.3 from person a
    Z = np.vstack([person_a, person_b, strangers, stray_a[None]])
    dist, nbr, _ = knn_graph(Z, 16)
    assert dist[16:22, 0].min() > 0.35  # the strangers are not within the link distance
    # as if HDBSCAN had put a, the strangers and the stray in one cluster, and b in another
    labels = np.array([0] * 8 + [1] * 8 + [0] * 6 + [NOISE])
    new, probs = refine_by_links(labels, np.ones(len(Z)), dist, nbr, link=0.32)
    assert len(set(new[:8])) == 1 and new[0] != NOISE  # a kept whole
    assert len(set(new[8:16])) == 1 and new[8] not in (NOISE, new[0])  # b kept whole, apart
    assert (new[16:22] == NOISE).all()  # the crowd is split into unsorted strangers
    assert new[22] == new[0] and 0 < probs[22] < 1  # the stray joins a, less surely
    # a profile parameter, checked
    with pytest.raises(InputError):
        Clusterer("default", link_distance=-1).fit(Z)
    with pytest.raises(InputError):
        Clusterer("seed", link_distance=0.3).fit(Z)
    fitted = Clusterer("default", link_distance=0.32).fit(Z)
    assert len(set(fitted.labels_[:8])) == 1 and fitted.labels_[0] != fitted.labels_[8]


def test_groups_of_weak_detections_are_left_unsorted() -> None:
    """False detections (hair, text) resemble each other: a group whose median detection score is
    below the model's floor is not a person."""
    from peoplemap.cluster import drop_weak_groups

    rng = np.random.default_rng(1)
    centre = _unit(rng.normal(size=(2, 32)))
    Z = np.vstack([_unit(c + 0.01 * rng.normal(size=(5, 32))) for c in centre])
    scores = np.array([1.2, 0.8, 1.5, -0.1, 0.9] + [-0.15, 0.02, -0.1, -0.12, -0.18])
    plain = Clusterer("default").fit(Z).labels_
    assert len(set(plain)) == 2 and NOISE not in plain
    fitted = Clusterer("default", min_group_score=0.0).fit(Z, scores=scores)
    assert len(set(fitted.labels_[:5])) == 1 and fitted.labels_[0] != NOISE  # one weak face: kept
    assert (fitted.labels_[5:] == NOISE).all()
    assert fitted.n_clusters_ == 1
    with pytest.raises(InputError):
        drop_weak_groups(plain, np.ones(10), scores[:3], 0.0)
    with pytest.raises(InputError):
        Clusterer("default", min_group_score="high").fit(Z, scores=scores)


def test_groups_of_one_person_are_joined_and_strangers_kept_apart() -> None:
    """merge_groups joins groups whose members are on average closer than the merge distance (one
    person HDBSCAN split in two), never two groups holding faces of one photo, and not a look-alike
    group whose nearest faces are close but whose average is not."""
    from peoplemap.cluster import merge_groups
    from peoplemap.knn import knn_graph

    rng = np.random.default_rng(2)
    centre = _unit(rng.normal(size=(2, 64)))
    half_a = _unit(centre[0] + 0.02 * rng.normal(size=(6, 64)))
    half_b = _unit(centre[0] + 0.02 * rng.normal(size=(6, 64)))  # the same person
    other = _unit(centre[1] + 0.02 * rng.normal(size=(6, 64)))
    # a look-alike of the person: each of its faces is near one of hers, the group is not
    look = _unit(0.75 * centre[0] + 0.66 * centre[1] + 0.02 * rng.normal(size=(6, 64)))
    Z = np.vstack([half_a, half_b, other, look]).astype(np.float32)
    _, nbr, _ = knn_graph(Z, 16)
    labels = np.repeat(np.arange(4), 6)
    avg = lambda a, b: float(np.sqrt(max(0.0, 2 - 2 * Z[labels == a].mean(0) @ Z[labels == b].mean(0))))
    assert avg(0, 1) < 0.345 < min(avg(0, 3), avg(1, 3), avg(0, 2))
    merged = merge_groups(labels, Z, nbr, 0.345)
    assert (merged[:12] == merged[0]).all()  # the two halves are one person
    assert len({merged[0], merged[12], merged[18]}) == 3  # the other person and the look-alike apart
    assert set(merged) == {0, 1, 2}  # renumbered 0..k-1
    # a face of half a and a face of half b in one photo: two people, never joined
    kept = merge_groups(labels, Z, nbr, 0.345, [np.array([0, 6])])
    assert kept[0] != kept[6]
    with_noise = labels.copy()
    with_noise[[5, 11]] = NOISE
    assert (merge_groups(with_noise, Z, nbr, 0.345)[[5, 11]] == NOISE).all()  # unsorted stay so
    # a profile parameter, checked; it needs the link distance's checked groups
    with pytest.raises(InputError, match="merge_distance"):
        Clusterer("default", merge_distance=0.345).fit(Z)
    with pytest.raises(InputError, match="merge_distance"):
        Clusterer("default", link_distance=0.32, merge_distance=3).fit(Z)
    fitted = Clusterer("default", link_distance=0.32, merge_distance=0.345).fit(Z)
    assert fitted.labels_[0] == fitted.labels_[6] != fitted.labels_[12]


def test_halves_of_one_wide_person_are_joined_by_their_spread() -> None:
    """Two groups whose average distance exceeds the merge distance are still one person when it
    is no more than SPREAD_RATIO times their own spread (one wide blob cut in two); two tight
    groups as far apart are two people, and groups too small to have a spread are left alone."""
    from peoplemap.cluster import SPREAD_CAP, SPREAD_RATIO, merge_groups
    from peoplemap.knn import knn_graph

    rng = np.random.default_rng(4)
    c = _unit(rng.normal(size=(3, 64)))
    off = _unit(rng.normal(size=64) - (rng.normal(size=64) @ c[1]) * c[1])
    c2 = _unit(c[1] + 0.34 * off)  # a second person near the first tight one
    wide = _unit(c[0] + 0.034 * rng.normal(size=(12, 64)))  # one person, photographed widely
    tight_a = _unit(c[1] + 0.018 * rng.normal(size=(8, 64)))
    tight_b = _unit(c2 + 0.018 * rng.normal(size=(8, 64)))
    pair = _unit(c[2] + 0.034 * rng.normal(size=(4, 64)))  # two groups of two: no spread to trust
    Z = np.vstack([wide, tight_a, tight_b, pair]).astype(np.float32)
    labels = np.concatenate([np.repeat([0, 1], 6), np.full(8, 2), np.full(8, 3), [4, 4, 5, 5]])
    _, nbr, _ = knn_graph(Z, 16)

    def avg(a, b):
        return float(np.sqrt(max(0.0, 2 - 2 * Z[labels == a].mean(0) @ Z[labels == b].mean(0))))

    def spread(a):
        m = Z[labels == a]
        d = np.sqrt(np.maximum(0, 2 - 2 * m @ m.T))
        return float(np.sqrt((d[np.triu_indices(len(m), 1)] ** 2).mean()))

    # the situations this test is about
    assert 0.345 < avg(0, 1) < min(SPREAD_RATIO * max(spread(0), spread(1)), SPREAD_CAP * 0.345)
    assert 0.345 < avg(2, 3) < SPREAD_CAP * 0.345 and avg(2, 3) > SPREAD_RATIO * max(spread(2), spread(3))
    assert 0.345 < avg(4, 5) < SPREAD_RATIO * max(spread(4), spread(5))
    merged = merge_groups(labels, Z, nbr, 0.345)
    assert (merged[:12] == merged[0]).all()  # the wide person, whole
    assert merged[12] != merged[20] and merged[28] != merged[30]
    assert len(set(merged.tolist())) == 5
    apart = merge_groups(labels, Z, nbr, 0.345, spread_ratio=None)  # by the average alone: apart
    assert apart[0] != apart[6]
    one_photo = merge_groups(labels, Z, nbr, 0.345, [np.array([0, 6])])
    assert one_photo[0] != one_photo[6]  # two faces of one photo: two people


def test_two_unsorted_faces_that_clearly_belong_together_become_a_pair() -> None:
    """A person photographed twice, the two faces farther apart than the match distance: they are
    each other's nearest neighbour, well within ATTACH_SLACK * link and clearly nearer each other
    than anyone else, so they become a group of two; a face between two look-alikes does not pair
    with either, and nothing pairs where min_cluster_size asks for more."""
    from peoplemap.cluster import ATTACH_RATIO, ATTACH_SLACK, refine_by_links
    from peoplemap.knn import knn_graph

    rng = np.random.default_rng(5)
    c = _unit(rng.normal(size=(4, 64)))
    twice = _unit(c[0] + 0.042 * rng.normal(size=(2, 64)))  # one person, two photos
    group = _unit(c[1] + 0.012 * rng.normal(size=(6, 64)))  # someone with a group already
    # a face with two look-alikes equally near it (and nearer it than each other)
    mid = c[2]
    off = _unit(rng.normal(size=(2, 64)))
    looks = _unit(mid + 0.37 * off)
    Z = np.vstack([twice, group, mid[None], looks]).astype(np.float32)
    dist, nbr, _ = knn_graph(Z, 8)
    link = 0.32
    assert link < dist[0, 0] < ATTACH_SLACK * link and nbr[0, 0] == 1 and nbr[1, 0] == 0
    assert dist[0, 0] < ATTACH_RATIO * dist[0, 1] and dist[1, 0] < ATTACH_RATIO * dist[1, 1]
    assert dist[8, 0] < ATTACH_SLACK * link and dist[8, 0] > ATTACH_RATIO * dist[8, 1]
    labels = np.array([NOISE, NOISE] + [0] * 6 + [NOISE] * 3)
    new, probs = refine_by_links(labels, np.ones(len(Z)), dist, nbr, link)
    assert new[0] == new[1] != NOISE and new[0] != new[2] and 0 < probs[0] < 1
    assert (new[8:] == NOISE).all()
    new3, _ = refine_by_links(labels, np.ones(len(Z)), dist, nbr, link, min_cluster_size=3)
    assert (new3[[0, 1]] == NOISE).all()


def test_a_face_without_links_joins_its_cluster_only_when_nearest_to_it() -> None:
    """A face HDBSCAN put in a cluster but linked to nobody joins that cluster's group when its
    nearest neighbour is in it (within JOIN_SLACK * link); when a face of someone else is nearer
    still, HDBSCAN's word is not enough and it does not join."""
    from peoplemap.cluster import JOIN_SLACK, refine_by_links
    from peoplemap.knn import knn_graph

    rng = np.random.default_rng(6)
    e = np.eye(64)
    angle = 2 * np.arcsin(0.3)
    centre_a, centre_b = e[0], np.cos(angle) * e[0] + np.sin(angle) * e[1]  # 0.6 apart
    a = _unit(centre_a + 0.004 * rng.normal(size=(6, 64)))
    b = _unit(centre_b + 0.004 * rng.normal(size=(6, 64)))
    near_a = _unit(centre_a + 0.35 * e[2])                          # ~0.34 from a, far from b
    between = _unit(0.48 * centre_a + 0.52 * centre_b + 0.15 * e[3])  # ~0.35 from a, ~0.33 from b
    Z = np.vstack([a, b, near_a[None], between[None]]).astype(np.float32)
    dist, nbr, _ = knn_graph(Z, 13)
    link = 0.32
    assert link < dist[12, 0] < JOIN_SLACK * link and nbr[12, 0] < 6
    assert 6 <= nbr[13, 0] < 12 and dist[13, 0] > link  # someone else's face is nearest
    a_col = int(np.flatnonzero(nbr[13] < 6)[0])
    assert dist[13, a_col] < JOIN_SLACK * link  # though a's faces are within reach
    labels = np.array([0] * 6 + [1] * 6 + [0, 0])  # HDBSCAN put both strays in a's cluster
    new, _ = refine_by_links(labels, np.ones(len(Z)), dist, nbr, link, min_cluster_size=3)
    assert new[12] == new[0] != NOISE
    assert new[13] != new[0]
