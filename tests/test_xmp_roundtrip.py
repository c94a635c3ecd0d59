"""Names written back as XMP face regions, checked with exiftool as the independent reader; the
originals are never written without the explicit flag."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from metadata_helpers import exiftool, hashes, make_photo, mwg_tags, read_regions, write_tags
from peoplemap import Library
from peoplemap.config import Settings
from peoplemap.metadata.regions import iou

COLOURS = {"Ada": (220, 30, 30), "Bob": (30, 30, 220), "Cy": (30, 200, 30), "Di": (200, 30, 200),
           "Ed": (20, 200, 200)}


def _settings(tmp_path: Path) -> Settings:
    return Settings(cache_dir=str(tmp_path / "cache"), batch_size=8, workers=1)


def _name_faces(lib: Library, truth: dict[str, dict[str, tuple]]) -> None:
    """Name the faces peoplemap found after the drawn faces they lie on (the user naming people)."""
    groups: dict[str, list[int]] = {}
    for it in lib.items():
        for name, box in truth[Path(it.path).name].items():
            if iou(it.box, box) > 0.8:
                groups.setdefault(name, []).append(it.id)
    for name, ids in groups.items():
        lib.new_person(ids, name)


def _photos(folder: Path) -> dict[str, dict[str, tuple]]:
    """Photos with EXIF orientations 1, 3, 6 and 8 and one with five faces: file -> name -> box."""
    folder.mkdir()
    truth = {}
    for o in (1, 3, 6, 8):
        faces = {"Ada": (30 + 7 * o, 40, 44, 52), "Bob": (190, 70 + 5 * o, 38, 46)}
        truth[f"o{o}.jpg"] = faces
        make_photo(folder / f"o{o}.jpg", [(b, COLOURS[n]) for n, b in faces.items()], orientation=o,
                   seed=o)
    five = {n: (14 + 60 * k, 60 + 17 * k, 40, 48) for k, n in enumerate(COLOURS)}
    truth["group.jpg"] = five
    make_photo(folder / "group.jpg", [(b, COLOURS[n]) for n, b in five.items()], size=(320, 240),
               orientation=6, seed=9)
    return truth


def test_sidecars_read_back_by_exiftool(tmp_path: Path) -> None:
    photos = tmp_path / "photos"
    truth = _photos(photos)
    before = hashes(photos)
    with Library.open(tmp_path / "lib", create=True, settings=_settings(tmp_path)) as lib:
        lib.index(photos, model="fakeface")
        _name_faces(lib, truth)
        boxes = {(Path(it.path).name, p.name): it.box for p in lib.people() for it in
                 lib.items(ids=p.item_ids)}
        dry = lib.export_xmp(dry_run=True)
        assert {c.action for c in dry} == {"create"} and len(dry) == 5
        assert hashes(photos) == before  # a dry run writes nothing
        changes = lib.export_xmp()
    assert sorted(Path(c.target).name for c in changes) == sorted(f"{n}.xmp" for n in truth)
    after = hashes(photos)
    assert {k: v for k, v in after.items() if not k.endswith(".xmp")} == before  # originals untouched
    for name, faces in truth.items():
        read = read_regions(photos / f"{name}.xmp")
        assert set(read) == set(faces), name
        for person, drawn in faces.items():
            ours = boxes[(name, person)]
            assert all(abs(a - b) <= 1 for a, b in zip(read[person], ours)), (name, person, read[person], ours)
            # ... and on the face as drawn (the test detector's boxes may take in JPEG ringing).
            assert all(abs(a - b) <= 3 for a, b in zip(read[person], drawn)), (name, person, read[person], drawn)
        # The Microsoft form is written too, top-left and size.
        mp = json.loads(exiftool("-struct", "-json", "-XMP-MP:RegionInfoMP", str(photos / f"{name}.xmp")))[0]
        assert sorted(r["PersonDisplayName"] for r in mp["RegionInfoMP"]["Regions"]) == sorted(faces)


def test_sidecar_merge_keeps_other_tags_and_updates_same_name(tmp_path: Path) -> None:
    photos = tmp_path / "photos"
    photos.mkdir()
    make_photo(photos / "a.jpg", [((40, 50, 40, 48), COLOURS["Ada"]), ((200, 60, 36, 44), COLOURS["Bob"])])
    # A sidecar another program wrote: a keyword, a rating, Ada drawn elsewhere, and Zoe.
    write_tags(photos / "a.jpg.xmp", {"Subject": ["holiday"], "Rating": 4,
                                      **mwg_tags([("Ada", (100, 100, 20, 20)), ("Zoe", (250, 150, 30, 30))],
                                                 320, 240)}, original=photos / "a.jpg")
    with Library.open(tmp_path / "lib", create=True,
                      settings=Settings(cache_dir=str(tmp_path / "c"), workers=1, import_regions=False)) as lib:
        lib.index(photos, model="fakeface")
        _name_faces(lib, {"a.jpg": {"Ada": (40, 50, 40, 48), "Bob": (200, 60, 36, 44)}})
        [change] = lib.export_xmp()
        assert change.action == "update" and change.added == ["Bob"] and change.updated == ["Ada"]
        [again] = lib.export_xmp()
        assert again.action == "unchanged"
    data = json.loads(exiftool("-struct", "-json", str(photos / "a.jpg.xmp")))[0]
    assert data["Subject"] == "holiday" or data["Subject"] == ["holiday"]
    assert data["Rating"] == 4
    names = [r.get("Name") for r in data["RegionInfo"]["RegionList"]]
    assert sorted(names) == ["Ada", "Bob", "Zoe"]  # Ada updated, not duplicated; Zoe kept
    read = read_regions(photos / "a.jpg.xmp")
    assert all(abs(a - b) <= 1 for a, b in zip(read["Ada"], (40, 50, 40, 48)))
    assert all(abs(a - b) <= 1 for a, b in zip(read["Zoe"], (250, 150, 30, 30)))


def test_write_originals_only_with_the_flag_and_keeps_a_backup(tmp_path: Path) -> None:
    photos = tmp_path / "photos"
    truth = _photos(photos)
    before = hashes(photos)
    with Library.open(tmp_path / "lib", create=True, settings=_settings(tmp_path)) as lib:
        lib.index(photos, model="fakeface")
        _name_faces(lib, truth)
        lib.export_xmp(into_originals=True, dry_run=True)
        assert hashes(photos) == before
        changes = lib.export_xmp(into_originals=True)
        assert {c.action for c in changes} == {"update"}
        backups = sorted((lib.path / "metadata-backups").glob("*.json"))
    assert len(backups) == 5
    saved = json.loads(backups[0].read_text())
    assert saved["photo"].startswith(str(photos)) and "exif" in saved and "xmp_packet" in saved
    after = hashes(photos)
    assert not any(k.endswith(".xmp") for k in after)  # no sidecars in this mode
    assert all(after[k] != before[k] for k in before)
    for name, faces in truth.items():
        read = read_regions(photos / name)
        assert set(read) == set(faces)
        # The orientation and the pixels are the photo's own still.
        assert exiftool("-n", "-s3", "-Orientation", str(photos / name)).strip() in ("", "1", "3", "6", "8")


def test_cli_export_xmp_dry_run_lists_changes(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from peoplemap.cli import main

    photos = tmp_path / "photos"
    truth = _photos(photos)
    lib_path = tmp_path / "lib"
    with Library.open(lib_path, create=True, settings=_settings(tmp_path)) as lib:
        lib.index(photos, model="fakeface")
        _name_faces(lib, truth)
    before = hashes(photos)
    r = CliRunner().invoke(main, ["export", "--library", str(lib_path), "--format", "xmp", "--dry-run"])
    assert r.exit_code == 0, r.output
    assert "would create" in r.output and "o6.jpg.xmp: adds Ada, Bob" in r.output
    assert "dry run: nothing written" in r.output
    assert hashes(photos) == before
    r = CliRunner().invoke(main, ["export", "--library", str(lib_path), "--format", "xmp",
                                  "--out", str(tmp_path / "report.json")])
    assert r.exit_code == 0, r.output
    report = json.loads((tmp_path / "report.json").read_text())
    assert len(report["changes"]) == 5 and {c["action"] for c in report["changes"]} == {"create"}
    r = CliRunner().invoke(main, ["export", "--library", str(lib_path), "--format", "csv"])
    assert r.exit_code == 1 and "needs --out" in r.output


@pytest.mark.parametrize("orientation", [6, 8])
def test_regions_stored_frame_applied_dimensions(tmp_path: Path, orientation: int) -> None:
    """MWG regions written on the image as stored (AppliedToDimensions fit it, not the oriented
    image: only a quarter turn can tell) are turned with the orientation."""
    from peoplemap.metadata.regions import mwg_regions, stored_to_oriented, to_box

    W, H = 320, 240  # as shown
    box = (40, 50, 40, 48)
    rect = (box[0] / W, box[1] / H, box[2] / W, box[3] / H)
    # The same rectangle on the stored image: the inverse of stored -> oriented.
    inverse = {6: 8, 8: 6}[orientation]
    sw, sh = H, W
    x, y, w, h = stored_to_oriented(rect, inverse)
    xmp = {"Xmp.mwg-rs.Regions/mwg-rs:AppliedToDimensions/stDim:w": str(sw),
           "Xmp.mwg-rs.Regions/mwg-rs:AppliedToDimensions/stDim:h": str(sh),
           "Xmp.mwg-rs.Regions/mwg-rs:RegionList[1]/mwg-rs:Name": "Ada",
           "Xmp.mwg-rs.Regions/mwg-rs:RegionList[1]/mwg-rs:Area/stArea:x": str(x + w / 2),
           "Xmp.mwg-rs.Regions/mwg-rs:RegionList[1]/mwg-rs:Area/stArea:y": str(y + h / 2),
           "Xmp.mwg-rs.Regions/mwg-rs:RegionList[1]/mwg-rs:Area/stArea:w": str(w),
           "Xmp.mwg-rs.Regions/mwg-rs:RegionList[1]/mwg-rs:Area/stArea:h": str(h)}
    [r] = mwg_regions(xmp, W, H, orientation, "test")
    assert r.name == "Ada"
    assert all(abs(a - b) <= 1 for a, b in zip(r.box, box)), (r.box, box)
    assert to_box(rect, W, H) == box


def test_a_sidecar_that_cannot_be_read_safely_is_left_alone(tmp_path: Path) -> None:
    photos = tmp_path / "photos"
    photos.mkdir()
    make_photo(photos / "a.jpg", [((40, 50, 40, 48), COLOURS["Ada"])])
    bad = b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF>'  # cut short by a crashed program
    (photos / "a.xmp").write_bytes(bad)
    with Library.open(tmp_path / "lib", create=True, settings=_settings(tmp_path)) as lib:
        summary = lib.index(photos, model="fakeface")
        assert [Path(s.path).name for s in summary.skipped] == ["a.xmp"]
        _name_faces(lib, {"a.jpg": {"Ada": (40, 50, 40, 48)}})
        [change] = lib.export_xmp()
    assert change.action == "refused" and "malformed XML" in change.reason
    assert change.target.endswith("a.xmp") and (photos / "a.xmp").read_bytes() == bad
    assert not (photos / "a.jpg.xmp").exists()


def test_region_mapping_rules() -> None:
    """The hand-written part: which regions count and how their areas become boxes."""
    from peoplemap.metadata.regions import match, merge_sources, mp_regions, mwg_regions, regions_of

    L = "Xmp.mwg-rs.Regions/mwg-rs:RegionList"
    xmp = {
        f"{L}[1]/mwg-rs:Name": "  Ada   Lovelace ", f"{L}[1]/mwg-rs:Type": "Face",
        **{f"{L}[1]/mwg-rs:Area/stArea:{k}": v for k, v in zip("xywh", ("0.5", "0.5", "0.25", "0.5"))},
        f"{L}[2]/mwg-rs:Name": "Rex", f"{L}[2]/mwg-rs:Type": "Pet",  # not a face
        **{f"{L}[2]/mwg-rs:Area/stArea:{k}": v for k, v in zip("xywh", ("0.2", "0.2", "0.1", "0.1"))},
        f"{L}[3]/mwg-rs:Area/stArea:unit": "pixel",  # pixels of AppliedToDimensions
        **{f"{L}[3]/mwg-rs:Area/stArea:{k}": v for k, v in zip("xywh", ("100", "50", "40", "20"))},
        "Xmp.mwg-rs.Regions/mwg-rs:AppliedToDimensions/stDim:w": "400",
        "Xmp.mwg-rs.Regions/mwg-rs:AppliedToDimensions/stDim:h": "200",
        f"{L}[4]/mwg-rs:Name": "Broken", f"{L}[4]/mwg-rs:Area/stArea:x": "nan",
        "Xmp.MP.RegionInfo/MPRI:Regions[1]/MPReg:PersonDisplayName": "Ada Lovelace",
        "Xmp.MP.RegionInfo/MPRI:Regions[1]/MPReg:Rectangle": "0.375, 0.25, 0.25, 0.5",  # = region 1
        "Xmp.MP.RegionInfo/MPRI:Regions[2]/MPReg:PersonDisplayName": "Bob",
        "Xmp.MP.RegionInfo/MPRI:Regions[2]/MPReg:Rectangle": "0.0, 0.0, 0.1, 0.2",
        "Xmp.MP.RegionInfo/MPRI:Regions[3]/MPReg:Rectangle": "not, a, rectangle",
    }
    got = mwg_regions(xmp, 800, 400, 1, "x")
    assert [(r.name, r.box) for r in got] == [("Ada Lovelace", (300, 100, 200, 200)), (None, (160, 80, 80, 40))]
    assert [(r.name, r.box) for r in mp_regions(xmp, 800, 400, "x")] == [
        ("Ada Lovelace", (300, 100, 200, 200)), ("Bob", (0, 0, 80, 80))]
    both = regions_of(xmp, 800, 400, 1, "x")  # the same face in both forms counts once
    assert [r.name for r in both] == ["Ada Lovelace", None, "Bob"]
    # Sources in order (sidecars, then the photo): a name fills in an unnamed region of the same face.
    merged = merge_sources([[both[1]], [type(both[1])((162, 80, 80, 40), "Cy", "mwg", "y")]])
    assert [r.name for r in merged] == ["Cy"]
    merged = merge_sources([[type(both[1])((162, 80, 80, 40), None, "mwg", "y")], [both[0], both[1]]])
    assert [r.name for r in merged] == [None, "Ada Lovelace"]
    # Matching: best overlaps first, one region per face, weak overlaps not matched.
    pairs, unmatched = match(both, [(310, 110, 190, 190), None, (0, 0, 20, 20), (165, 82, 78, 38)])
    assert pairs == {0: 0, 3: 1} and unmatched == [2]
