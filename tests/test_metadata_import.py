"""Face regions written by another program (exiftool here) come in as named people with those faces
confirmed; bad sidecars are refused with a reason; dates, orientation and places are stored."""
from __future__ import annotations

import os
import sqlite3
from pathlib import Path

import pytest

from metadata_helpers import exiftool, make_photo, mp_tags, mwg_tags, write_tags
from peoplemap import Library
from peoplemap.config import Settings, load_settings
from peoplemap.errors import InputError

RED, BLUE, GREEN, YELLOW = (220, 30, 30), (30, 30, 220), (30, 200, 30), (240, 240, 20)
ADA, BOB, CY, MISSED = (40, 50, 40, 48), (200, 60, 36, 44), (120, 150, 34, 40), (260, 170, 30, 34)


def _settings(tmp_path: Path, **kw) -> Settings:
    return Settings(cache_dir=str(tmp_path / "cache"), batch_size=8, workers=1, **kw)


def _album(folder: Path) -> None:
    """Five photos of Ada (red), Bob (blue) and Cy (green): names in MWG form inside the photos,
    in Microsoft form in photo.xmp sidecars, and in MWG form in photo.jpg.xmp sidecars; a yellow
    face the detector misses, named in one and unnamed in another."""
    folder.mkdir()
    faces = [(ADA, RED), (BOB, BLUE), (CY, GREEN), (MISSED, YELLOW)]
    for k in range(5):
        make_photo(folder / f"p{k}.jpg", faces, seed=k, orientation=6 if k == 2 else 1)
    write_tags(folder / "p0.jpg", mwg_tags([("Ada", ADA), ("Bob", (198, 58, 40, 48)), ("Yan", MISSED)], 320, 240))
    write_tags(folder / "p1.jpg", mwg_tags([("Ada", ADA), (None, MISSED)], 320, 240))
    write_tags(folder / "p2.xmp", mp_tags([("Bob", BOB), ("Cy", CY)], 320, 240), original=folder / "p2.jpg")
    write_tags(folder / "p3.jpg.xmp", mwg_tags([("Cy", CY), ("Ada", ADA)], 320, 240), original=folder / "p3.jpg")
    # p4 has no names at all.


def _who(lib: Library) -> dict[str, set[tuple[str, tuple]]]:
    """person name (or label) -> {(photo, box)} of its faces."""
    out = {}
    for p in lib.people():
        out[p.name or p.label] = {(Path(it.path).name, it.box) for it in lib.items(ids=p.item_ids)}
    return out


def _confirmed(lib: Library) -> dict[int, int]:
    """item id -> person id of the confirmed members."""
    s = lib.vector_set()
    return {i: m.person_id for i, m in lib.store.people.members(s.id).items() if m.confirmed}


def _near(box: tuple, target: tuple, tol: int = 3) -> bool:
    return all(abs(a - b) <= tol for a, b in zip(box, target))


def test_regions_from_exiftool_become_confirmed_people_and_clustering_keeps_them(tmp_path: Path) -> None:
    photos = tmp_path / "photos"
    _album(photos)
    with Library.open(tmp_path / "lib", create=True, settings=_settings(tmp_path)) as lib:
        summary = lib.index(photos, model="fakeface")
        assert summary.files_seen == 5 and not summary.skipped  # sidecars are not images
        who = _who(lib)
        assert {"Ada", "Bob", "Cy", "Yan"} <= set(who)
        assert {f for f, _ in who["Ada"]} == {"p0.jpg", "p1.jpg", "p3.jpg"}
        assert {f for f, _ in who["Bob"]} == {"p0.jpg", "p2.jpg"}
        assert {f for f, _ in who["Cy"]} == {"p2.jpg", "p3.jpg"}
        [(f, box)] = who["Yan"]  # a face the detector missed, brought in by its region
        assert f == "p0.jpg" and _near(box, MISSED)
        # The unnamed region of p1 is a face too (the detector missed it), of nobody yet.
        missed_p1 = [it for it in lib.items() if Path(it.path).name == "p1.jpg" and _near(it.box, MISSED)]
        assert len(missed_p1) == 1
        # Matched regions name the detected face (its box), not a second face on top of it.
        assert sum(1 for it in lib.items() if Path(it.path).name == "p0.jpg") == 4
        confirmed = _confirmed(lib)
        named = {p.name: p for p in lib.people() if p.name}
        for name in ("Ada", "Bob", "Cy", "Yan"):
            assert all(confirmed.get(i) == named[name].id for i in named[name].item_ids)
        ids_before = {n: (p.id, set(p.item_ids)) for n, p in named.items()}

        lib.cluster()
        after = {p.name: p for p in lib.people() if p.name}
        for name, (pid, items) in ids_before.items():
            assert after[name].id == pid and items <= set(after[name].item_ids)
        # The clustering put the unnamed faces of the same colour with them.
        ada_photos = {Path(it.path).name for it in lib.items(ids=after["Ada"].item_ids)}
        assert ada_photos == {f"p{k}.jpg" for k in range(5)}


def test_a_name_someone_has_reuses_that_person(tmp_path: Path) -> None:
    photos = tmp_path / "photos"
    photos.mkdir()
    make_photo(photos / "a.jpg", [(ADA, RED)])
    with Library.open(tmp_path / "lib", create=True, settings=_settings(tmp_path)) as lib:
        lib.index(photos, model="fakeface")
        [p] = lib.people() or [lib.new_person([it.id for it in lib.items()], None)]
        lib.name_person(p.id, "ada")
        make_photo(photos / "b.jpg", [(ADA, RED)], seed=3)
        write_tags(photos / "b.jpg", mwg_tags([("Ada", ADA)], 320, 240))
        lib.index(photos, model="fakeface")
        people = lib.people()
        assert [(q.id, q.name, q.size) for q in people] == [(p.id, "ada", 2)]


def test_import_can_be_turned_off(tmp_path: Path, monkeypatch) -> None:
    photos = tmp_path / "photos"
    _album(photos)
    monkeypatch.setenv("PEOPLEMAP_IMPORT_REGIONS", "0")
    assert load_settings().import_regions is False
    monkeypatch.setenv("PEOPLEMAP_IMPORT_REGIONS", "perhaps")
    with pytest.raises(InputError, match="IMPORT_REGIONS"):
        load_settings()
    with Library.open(tmp_path / "lib", create=True,
                      settings=_settings(tmp_path, import_regions=False)) as lib:
        lib.index(photos, model="fakeface")
        assert lib.people() == []
        assert all(not _near(it.box, MISSED) for it in lib.items())  # nothing but the detector's


def test_cli_index_no_regions(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from peoplemap.cli import main

    photos = tmp_path / "photos"
    _album(photos)
    r = CliRunner().invoke(main, ["index", str(photos), "--library", str(tmp_path / "lib"),
                                  "--model", "fakeface", "--no-regions"])
    assert r.exit_code == 0, r.output
    with Library.open(tmp_path / "lib") as lib:
        assert lib.people() == []


BAD_SIDECARS = {
    "malformed": (b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/'
                  b'22-rdf-syntax-ns#"><rdf:Description></x:xmpmeta>', "malformed XML"),
    "binary": (bytes(range(256)) * 4, "not XML"),
    "text": (b"Ada was here\n", "not XML"),
    "entities": (b'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;">]>'
                 b'<x:xmpmeta xmlns:x="adobe:ns:meta/">&b;</x:xmpmeta>', "DTD"),
    "huge": (b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><!-- ' + b"x" * 300_000 + b" --></x:xmpmeta>", "too large"),
}


def test_bad_sidecars_are_refused_with_a_reason_and_indexing_goes_on(tmp_path: Path) -> None:
    photos = tmp_path / "photos"
    photos.mkdir()
    for k, (name, (data, _)) in enumerate(BAD_SIDECARS.items()):
        make_photo(photos / f"{name}.jpg", [(ADA, RED), (BOB, BLUE)], seed=k)
        (photos / f"{name}.jpg.xmp").write_bytes(data)
    make_photo(photos / "good.jpg", [(ADA, RED)], seed=9)
    write_tags(photos / "good.jpg.xmp", mwg_tags([("Ada", ADA)], 320, 240), original=photos / "good.jpg")
    with Library.open(tmp_path / "lib", create=True,
                      settings=_settings(tmp_path, max_sidecar_bytes=200_000)) as lib:
        summary = lib.index(photos, model="fakeface")
        reasons = {Path(s.path).name: s.reason for s in summary.skipped}
        for name, (_, why) in BAD_SIDECARS.items():
            assert why in reasons[f"{name}.jpg.xmp"], reasons
        assert "good.jpg.xmp" not in reasons
        per_photo = {}
        for it in lib.items():
            per_photo[Path(it.path).name] = per_photo.get(Path(it.path).name, 0) + 1
        assert per_photo == {**{f"{n}.jpg": 2 for n in BAD_SIDECARS}, "good.jpg": 1}
        assert [p.name for p in lib.people()] == ["Ada"]
        # A sidecar mended: the photo processed again clears its problem.
        (photos / "text.jpg.xmp").unlink()
        os.utime(photos / "text.jpg", (1, 1))
        summary = lib.index(photos, model="fakeface")
        assert "text.jpg.xmp" not in {Path(s.path).name for s in summary.skipped}


def test_dates_orientation_and_places_are_stored(tmp_path: Path) -> None:
    photos = tmp_path / "photos"
    photos.mkdir()
    make_photo(photos / "a.jpg", [(ADA, RED)], orientation=6)
    exiftool("-overwrite_original", "-DateTimeOriginal=2019:07:14 18:30:05", "-OffsetTimeOriginal=+02:00",
             "-GPSLatitude=48.8583", "-GPSLatitudeRef=N", "-GPSLongitude=2.2945", "-GPSLongitudeRef=W",
             "-GPSAltitude=35", "-GPSAltitudeRef=0", str(photos / "a.jpg"))
    make_photo(photos / "b.jpg", [(BOB, BLUE)])
    exiftool("-overwrite_original", "-XMP-exif:DateTimeOriginal=2020-01-02T03:04:05-05:00", str(photos / "b.jpg"))
    make_photo(photos / "c.jpg", [(CY, GREEN)])
    with Library.open(tmp_path / "lib", create=True, settings=_settings(tmp_path)) as lib:
        lib.index(photos, model="fakeface")
        ids = {Path(p).name: i for i, p, _ in lib.store.images.under(str(photos))}
        meta = lib.store.photos.get(list(ids.values()))
        a, b = meta[ids["a.jpg"]], meta[ids["b.jpg"]]
        assert (a.taken, a.utc_offset, a.orientation) == ("2019-07-14 18:30:05", "+02:00", 6)
        assert a.latitude == pytest.approx(48.8583, abs=1e-4) and a.longitude == pytest.approx(-2.2945, abs=1e-4)
        assert a.altitude == pytest.approx(35)
        assert (b.taken, b.utc_offset) == ("2020-01-02 03:04:05", "-05:00")
        assert meta[ids["c.jpg"]].taken is None
        # Exports carry the date.
        lib.export("csv", tmp_path / "out.csv")
        text = (tmp_path / "out.csv").read_text()
        assert text.splitlines()[0].endswith(",taken") and "2019-07-14 18:30:05" in text
        from peoplemap.export import rows

        assert {Path(r["path"]).name: r["taken"] for r in rows(lib)} == {
            "a.jpg": "2019-07-14 18:30:05", "b.jpg": "2020-01-02 03:04:05", "c.jpg": None}
        # So do search results.
        [result] = lib.search(photos / "a.jpg", k=3)
        taken = {Path(h.path).name: h.taken for h in result.hits}
        assert taken["a.jpg"] == "2019-07-14 18:30:05" and taken.get("c.jpg", None) is None
        assert result.to_json()["hits"][0]["taken"] == "2019-07-14 18:30:05"


def test_an_older_library_gets_its_dates_on_the_next_index(tmp_path: Path) -> None:
    photos = tmp_path / "photos"
    photos.mkdir()
    make_photo(photos / "a.jpg", [(ADA, RED)])
    exiftool("-overwrite_original", "-DateTimeOriginal=2018:03:04 05:06:07", str(photos / "a.jpg"))
    with Library.open(tmp_path / "lib", create=True, settings=_settings(tmp_path)) as lib:
        lib.index(photos, model="fakeface")
    # As if indexed before migration 4 read metadata.
    db = sqlite3.connect(tmp_path / "lib" / "library.sqlite")
    db.execute("DELETE FROM photo_meta")
    db.commit()
    db.close()
    with Library.open(tmp_path / "lib", settings=_settings(tmp_path)) as lib:
        s = lib.index(photos, model="fakeface")
        assert s.unchanged == 1
        [(iid, _, _)] = lib.store.images.under(str(photos))
        assert lib.store.photos.get([iid])[iid].taken == "2018-03-04 05:06:07"


def test_date_words_and_the_search_filter() -> None:
    from peoplemap.types import Hit, QueryResult
    from peoplemap.ui import dates

    assert dates.month_label("2019-07-14 18:30:05") == "July 2019" and dates.month_label(None) == "No date"
    assert dates.day_label("2019-07-04 18:30:05") == "4 July 2019" and dates.day_label(None) == ""
    hits = [Hit(i, f"/p/{i}.jpg", None, 0.1 * i, 1.0, None, taken=t)
            for i, t in enumerate(["2019-01-01 00:00:00", None, "2021-05-05 00:00:00", "2019-12-31 23:59:59"])]
    r = QueryResult("q", None, None, 0.0, hits)
    assert dates.only([r], None, 2) == [r]
    in_2019 = dates.only([r], lambda t: bool(t) and t.startswith("2019"), 5)[0]
    assert [h.item_id for h in in_2019.hits] == [0, 3]
    assert [h.item_id for h in dates.only([r], lambda t: True, 2)[0].hits] == [0, 1]


def test_names_given_elsewhere_after_indexing_come_in_on_the_next_index(tmp_path: Path) -> None:
    """A sidecar written (by another program) after the photo was indexed is read on the next
    index run without redoing the photo: its regions name the faces, a face the detector missed
    is added. Sidecars peoplemap wrote itself are not read back as the user's names."""
    photos = tmp_path / "photos"
    photos.mkdir()
    for k in range(3):
        make_photo(photos / f"p{k}.jpg", [(ADA, RED), (BOB, BLUE), (MISSED, YELLOW)], seed=k)
    with Library.open(tmp_path / "lib", create=True, settings=_settings(tmp_path)) as lib:
        lib.index(photos, model="fakeface")
        before = {it.id: it.box for it in lib.items()}
        assert len(before) == 6 and lib.people() == []
        write_tags(photos / "p0.jpg.xmp", mwg_tags([("Ada", ADA), ("Yan", MISSED)], 320, 240),
                   original=photos / "p0.jpg")
        s = lib.index(photos, model="fakeface")
        assert s.unchanged == 3 and s.items_added == 1  # only Yan's face is new
        after = {it.id: it.box for it in lib.items()}
        assert {k: v for k, v in after.items() if k in before} == before  # nothing redone
        who = _who(lib)
        assert {f for f, _ in who["Ada"]} >= {"p0.jpg"} and [f for f, _ in who["Yan"]] == ["p0.jpg"]
        ada = next(p for p in lib.people() if p.name == "Ada")
        assert all(_confirmed(lib).get(i) == ada.id for i in ada.item_ids if
                   Path(lib.items(ids=[i])[0].path).name == "p0.jpg")

        # Clustering puts Ada's other faces with her, unconfirmed; an export writes them out...
        lib.cluster()
        ada = next(p for p in lib.people() if p.name == "Ada")
        assert ada.size == 3
        unconfirmed = [i for i in ada.item_ids if i not in _confirmed(lib)]
        assert len(unconfirmed) == 2
        assert {c.action for c in lib.export_xmp()} <= {"create", "update"}
        # ... and the next index does not take them back as the user's own names.
        lib.index(photos, model="fakeface")
        assert [i for i in unconfirmed if i in _confirmed(lib)] == []


def test_the_ray_actor_brings_back_names_and_dates(tmp_path: Path) -> None:
    """A Ray run's actor (called here in-process, read back as the driver reads it) returns the
    regions' names and the photo's metadata with its faces, as the local paths do."""
    pytest.importorskip("pyarrow")
    import numpy as np

    from peoplemap.engine_ray import EmbedBatch, _decode_rows
    from peoplemap.indexing_work import Job, work_file
    from peoplemap.ingest import FileEntry

    photos = tmp_path / "photos"
    _album(photos)
    exiftool("-overwrite_original", "-DateTimeOriginal=2019:07:14 18:30:05", str(photos / "p0.jpg"))
    settings = _settings(tmp_path)
    jobs = [Job(FileEntry(str(photos / f"p{k}.jpg"), 0, 0.0), None) for k in range(4)]
    actor = EmbedBatch("fakeface", settings, "metadata_helpers")
    table = actor({"i": np.arange(len(jobs)), "path": np.array([j.entry.path.encode() for j in jobs],
                                                               dtype=object)})
    ray = [res for _i, res, _secs in _decode_rows(table, jobs, actor._e.dim)]
    local = [work_file(actor._e, j, settings) for j in jobs]
    for a, b in zip(ray, local):
        assert a.names == b.names and [r.box for r in a.regions] == [r.box for r in b.regions]
        assert a.meta == b.meta
    assert ray[0].meta.taken == "2019-07-14 18:30:05" and "Yan" in ray[0].names
    assert ray[2].meta.sidecars == [str(photos / "p2.xmp")]
