"""Merge suggestions, review groups and the answers a user gives (peoplemap.review, the review CLI),
on generated images with the fake model; the simulated-user benchmark's real-data run is in
benchmarks/bench_review.py and tests/test_review_real.py."""
from __future__ import annotations

import json

import numpy as np
from click.testing import CliRunner

from peoplemap.cli import main

from conftest import make_person_images


def _split_first_person(lib):
    p = lib.people("fake")[0]
    half = p.item_ids[: p.size // 2]
    q = lib.split_person(p.id, half, "fake")
    return lib.person(p.id, "fake"), q


def test_a_split_person_is_the_first_suggestion_until_answered(library, photos):
    library.index(photos, model="fake")
    library.cluster(model="fake")
    a, b = _split_first_person(library)
    top = library.merge_suggestions("fake")[0]
    assert {top.person_id, top.other_id} == {a.id, b.id}
    assert top.person_faces and top.other_faces
    assert set(top.person_faces) <= set(a.item_ids) | set(b.item_ids)
    for_b = library.merge_suggestions("fake", person=b.id)
    assert for_b and for_b[0].person_id == b.id and for_b[0].other_id == a.id
    library.mark_different(a.id, b.id, "fake")
    assert all({s.person_id, s.other_id} != {a.id, b.id} for s in library.merge_suggestions("fake"))
    library.cluster(model="fake")  # a re-clustering does not merge them either
    ids = {p.id for p in library.people("fake")}
    assert {a.id, b.id} <= ids


def test_unsorted_faces_come_as_a_group_with_their_candidate(library, tmp_path):
    photos = tmp_path / "p"
    make_person_images(photos, n_people=3, per_person=5, seed=2)
    library.index(photos, model="fake")
    library.cluster(model="fake")
    target = library.people("fake")[0]
    library.name_person(target.id, "Ada", "fake")
    loose = target.item_ids[:2]
    library.reject_items(target.id, loose, "fake")
    groups = library.review_groups("fake")
    unsorted = [g for g in groups if g.kind == "unsorted"]
    assert any(set(loose) <= set(g.item_ids) for g in unsorted)
    g = next(g for g in unsorted if set(loose) <= set(g.item_ids))
    # rejected from Ada: the candidate is never Ada for these faces
    assert g.candidate_id != target.id  # rejected from Ada: never offered to Ada again
    p = library.new_person(loose, "Ada again", "fake")
    assert set(p.item_ids) == set(loose)
    library.cluster(model="fake")
    assert set(library.person("Ada again", "fake").item_ids) >= set(loose)


def test_review_cli_answers_and_json(library, photos):
    library.index(photos, model="fake")
    library.cluster(model="fake")
    a, b = _split_first_person(library)
    lib_path = str(library.path)
    r = CliRunner().invoke(main, ["review", "suggestions", "--library", lib_path, "--json"])
    assert r.exit_code == 0, r.output
    rows = json.loads(r.output)
    assert {rows[0]["person_id"], rows[0]["other_id"]} == {a.id, b.id}
    assert rows[0] == library.merge_suggestions("fake")[0].to_json()
    r = CliRunner().invoke(main, ["review", "same", str(a.id), str(b.id), "--library", lib_path])
    assert r.exit_code == 0 and "Merged" in r.output
    merged = library.person(a.id, "fake")
    assert merged.size == a.size + b.size
    r = CliRunner().invoke(main, ["review", "reject", str(a.id), str(merged.item_ids[0]), "--library", lib_path])
    assert r.exit_code == 0, r.output
    assert merged.item_ids[0] not in library.person(a.id, "fake").item_ids
    r = CliRunner().invoke(main, ["review", "confirm", "nobody", "1", "--library", lib_path])
    assert r.exit_code == 1 and r.output.startswith("Error:")
    r = CliRunner().invoke(main, ["review", "groups", "--library", lib_path, "--json"])
    assert r.exit_code == 0
    assert any(merged.item_ids[0] in g["item_ids"] for g in json.loads(r.output))
    assert np.isfinite([g["distance"] or 0 for g in json.loads(r.output)]).all()


class _TwoBoxes(__import__("conftest").FakeEmbedder):
    """Two 'faces' per photo: its left and right halves (boxes in the image's own pixels)."""

    name = "fake-boxes"
    item_kind = "face"
    decode_max_side = None

    def detect(self, image):
        from peoplemap.types import Region

        h, w = image.shape[:2]
        return [Region((0, 0, w // 2, h), 0.9), Region((w // 2, 0, w - w // 2, h), 0.8)]


from peoplemap.embed.registry import register  # noqa: E402

register("fake-boxes", "test-only: two boxes per photo")(_TwoBoxes)


def test_not_a_face_goes_for_good(library, photos):
    library.index(photos, model="fake-boxes")
    library.cluster(model="fake-boxes")
    items = library.items("fake-boxes")
    right = [it for it in items if it.box and it.box[0] > 0]
    assert len(right) == 20 and len(items) == 40
    library.set_cover(library.people("fake-boxes")[0].id, library.people("fake-boxes")[0].item_ids[-1],
                      "fake-boxes")
    assert library.people("fake-boxes")[0].cover_item_id is not None
    assert library.not_a_face([it.id for it in right[:5]], "fake-boxes") == 5
    left = {it.id for it in library.items("fake-boxes")}
    assert not left & {it.id for it in right[:5]} and len(left) == 35
    # processed again from scratch (a rebuild): the refused boxes stay refused
    library.index(photos, model="fake-boxes", rebuild=True)
    again = library.items("fake-boxes")
    assert len(again) == 35
    refused = {(it.path, it.box) for it in right[:5]}
    assert not refused & {(it.path, it.box) for it in again}


def test_a_missed_face_drawn_by_the_user_becomes_an_item(library, photos):
    import pytest

    from peoplemap.errors import InputError

    library.index(photos, model="fake")
    library.cluster(model="fake")
    ada = library.people("fake")[0]
    library.name_person(ada.id, "Ada", "fake")
    path = str(photos / "person0" / "img0.jpg")
    item = library.add_face(path, (8, 10, 30, 40), person="Ada", model="fake")
    assert item.box == (8, 10, 30, 40) and item.path == path
    ids, X = library.vectors("fake", ids=[item.id])
    assert list(ids) == [item.id] and np.isclose(np.linalg.norm(X[0]), 1.0)
    library.cluster(model="fake")
    assert item.id in library.person("Ada", "fake").item_ids  # confirmed: kept through re-clustering
    idx = library.index_for("fake")
    assert item.id in set(idx.ids().tolist())
    with pytest.raises(InputError, match="outside"):
        library.add_face(path, (500, 500, 20, 20), model="fake")
    with pytest.raises(InputError, match="no indexed photo"):
        library.add_face("/nowhere.jpg", (0, 0, 10, 10), model="fake")


def test_rebuild_keeps_names_and_decisions(library, photos):
    """Re-extracting a vector set (index --rebuild, e.g. after a model change) gives the new faces
    the people, names and decisions the old ones had."""
    library.index(photos, model="fake-boxes")
    library.cluster(model="fake-boxes")
    a, b = library.people("fake-boxes")[:2]
    library.name_person(a.id, "Ada", "fake-boxes")
    library.hide_person(b.id, True, "fake-boxes")
    rejected = a.item_ids[0]
    library.reject_items(a.id, [rejected], "fake-boxes")
    library.mark_different(a.id, b.id, "fake-boxes")
    boxes = {it.id: (it.path, it.box) for it in library.items("fake-boxes")}
    ada_faces = {boxes[i] for i in library.person("Ada", "fake-boxes").item_ids}
    library.index(photos, model="fake-boxes", rebuild=True)
    assert not (library.path / "carry-over-fake-boxes.json").exists()
    new_boxes = {it.id: (it.path, it.box) for it in library.items("fake-boxes")}
    assert not set(new_boxes) & set(boxes)  # new items, new ids
    ada = library.person("Ada", "fake-boxes")
    assert {new_boxes[i] for i in ada.item_ids} == ada_faces
    hidden = [p for p in library.people("fake-boxes", include_hidden=True) if p.hidden]
    assert len(hidden) == 1 and hidden[0].size == b.size
    library.cluster(model="fake-boxes")
    ada = library.person("Ada", "fake-boxes")
    assert boxes[rejected] not in {new_boxes[i] for i in ada.item_ids}  # the rejection came along
    s = library.vector_set("fake-boxes")
    assert library.store.people.different(s.id) == {tuple(sorted((ada.id, hidden[0].id)))}


def test_kept_review_state_answers_as_a_fresh_library_after_every_change(library, settings, tmp_path):
    """The review questions keep the set's vectors and their neighbour tables between calls
    (peoplemap.derived.ReviewState); after every kind of answer, new faces and a re-clustering
    they must give exactly what a freshly opened library computes from the catalog alone."""
    from peoplemap import Library
    from peoplemap.review import merge_suggestions

    photos = tmp_path / "many"
    make_person_images(photos, n_people=8, per_person=6, seed=3)
    library.index(photos, model="fake")
    library.cluster(model="fake")
    sid = library.vector_set("fake").id

    def questions(lib):
        return ([s.to_json() for s in merge_suggestions(lib, "fake", limit=50, max_distance=2.0)],
                [g.to_json() for g in lib.review_groups("fake", limit=100)])

    def same_as_fresh():
        kept = questions(library)
        with Library.open(library.path, settings=settings) as fresh:
            assert questions(fresh) == kept
        return kept

    sug, _ = same_as_fresh()
    assert sug
    same_as_fresh()
    table = library.derived.review.table(sid, "centroids", lambda: None)
    assert table is not None and table.searched == 0  # nothing changed: nothing searched again

    a, b = sug[0]["person_id"], sug[0]["other_id"]
    library.merge_people(a, [b], "fake")
    sug, _ = same_as_fresh()
    assert all(b not in (s["person_id"], s["other_id"]) for s in sug)

    c, d = sug[0]["person_id"], sug[0]["other_id"]
    library.mark_different(c, d, "fake")
    sug, _ = same_as_fresh()
    assert all({s["person_id"], s["other_id"]} != {c, d} for s in sug)

    p = library.people("fake")[0]
    library.reject_items(p.id, p.item_ids[:2], "fake")
    _, groups = same_as_fresh()
    unsorted = [g for g in groups if g["kind"] == "unsorted"]
    assert {i for g in unsorted for i in g["item_ids"]} >= set(p.item_ids[:2])
    assert all(g["candidate_id"] != p.id for g in unsorted if set(g["item_ids"]) & set(p.item_ids[:2]))

    library.confirm_items(p.id, [p.item_ids[0]], "fake")
    _, groups = same_as_fresh()
    assert all(p.item_ids[0] not in g["item_ids"] for g in groups if g["kind"] == "unsorted")

    library.hide_person(library.people("fake")[1].id, True, "fake")
    same_as_fresh()
    library.add_face(str(photos / "person0" / "img0.jpg"), (0, 0, 40, 50), model="fake")  # a new item
    same_as_fresh()
    library.not_a_face([library.people("fake")[2].item_ids[0]], "fake")
    same_as_fresh()
    library.cluster(model="fake")
    same_as_fresh()


def test_kept_neighbours_match_a_fresh_search_through_changes():
    """KeptNeighbours searches again only the rows a change can touch; through removals, moved
    vectors, additions and a new order its neighbours are those of a search from scratch."""
    from peoplemap.review import KeptNeighbours

    rng = np.random.default_rng(0)

    def unit(n):
        V = rng.standard_normal((n, 16)).astype(np.float32)
        return V / np.linalg.norm(V, axis=1, keepdims=True)

    keys, V = np.arange(1, 801, dtype=np.int64) * 3, unit(800)
    kept = KeptNeighbours(6)
    kept.update(keys, V)
    for _step in range(10):
        gone = rng.choice(len(keys), 8, replace=False)
        keys, V = np.delete(keys, gone), np.delete(V, gone, axis=0)
        moved = rng.choice(len(keys), 8, replace=False)
        V[moved] = unit(8)
        keys = np.concatenate([keys, keys.max() + 1 + np.arange(8)])
        V = np.concatenate([V, unit(8)])
        order = rng.permutation(len(keys))
        keys, V = keys[order], V[order]
        sims, rows = kept.update(keys, V)
        assert 16 <= kept.searched < len(keys) // 2
        fresh_sims, fresh_rows = KeptNeighbours(6).update(keys, V)
        assert (rows == fresh_rows).all()
        assert np.allclose(sims, fresh_sims, atol=1e-5)
    kept.update(keys, V)
    assert kept.searched == 0
    few = KeptNeighbours(6)  # fewer rows than k: -1 and -inf pad the lists
    sims, rows = few.update(keys[:3], V[:3])
    assert (rows[:, 3:] == -1).all() and np.isneginf(sims[:, 3:]).all()
    assert sorted(rows[0, :3].tolist()) == [0, 1, 2]


def test_review_tables_kept_on_disk_start_the_next_opening(library, settings, tmp_path, monkeypatch):
    """After a large search the neighbour tables are written next to the catalog; a library opened
    again starts from them (nothing searched) and still answers exactly as a fresh computation,
    also after answers given elsewhere. Forgetting deletes them (they hold vectors)."""
    import shutil

    from peoplemap import Library, review

    monkeypatch.setattr(review, "KEEP_AFTER", 1)
    photos = tmp_path / "many"
    make_person_images(photos, n_people=8, per_person=6, seed=5)
    library.index(photos, model="fake")
    library.cluster(model="fake")
    sid = library.vector_set("fake").id
    first = library.people("fake")[0]
    library.reject_items(first.id, library.person(first.id, "fake").item_ids[:3], "fake")  # unsorted faces

    def questions(lib):
        return ([s.to_json() for s in review.merge_suggestions(lib, "fake", limit=50, max_distance=2.0)],
                [g.to_json() for g in lib.review_groups("fake", limit=100)])

    def fresh():
        copy = tmp_path / f"fresh-{len(list(tmp_path.iterdir()))}"
        shutil.copytree(library.path, copy)
        shutil.rmtree(copy / "review", ignore_errors=True)
        with Library.open(copy, settings=settings) as lib:
            return questions(lib)

    kept = questions(library)
    folder = library.path / "review"
    assert {p.name for p in folder.iterdir()} == {f"set-{sid}-centroids.npz", f"set-{sid}-unsorted.npz"}
    with Library.open(library.path, settings=settings) as again:
        assert questions(again) == kept == fresh()
        for name in ("centroids", "unsorted"):
            assert again.derived.review.table(sid, name, lambda: None).searched == 0
        a, b = kept[0][0]["person_id"], kept[0][0]["other_id"]
        again.merge_people(a, [b], "fake")  # answered in another process
        after = questions(again)
    with Library.open(library.path, settings=settings) as third:
        assert questions(third) == after == fresh()
    for p in folder.glob("*.npz"):  # cut off (a full disk, a crash): computed again, no traceback
        p.write_bytes(p.read_bytes()[:len(p.read_bytes()) // 2])
    with Library.open(library.path, settings=settings) as damaged:
        assert questions(damaged) == after
    library.forget_derived("fake")
    assert not list(folder.glob("*.npz"))


def test_clustering_prepares_the_review_questions(library, tmp_path):
    """`cluster` ends by making the review tables, so the first questions search nothing."""
    photos = tmp_path / "some"
    make_person_images(photos, n_people=6, per_person=5, seed=7)
    library.index(photos, model="fake")
    stages = []
    library.cluster(model="fake", progress=lambda stage, done, total: stages.append((stage, done, total)))
    assert ("review", 2, 2) in stages
    sid = library.vector_set("fake").id
    table = library.derived.review.table(sid, "centroids", lambda: None)
    assert table is not None and len(table.keys) == len(library.people("fake"))
    library.merge_suggestions("fake")
    assert table.searched == 0
