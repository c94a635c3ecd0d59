"""Face regions on real faces with the real face model: a group photo from
../shared/data/face_recognition_examples (copied to tmp_path, never into the repository), as shot
and stored turned with EXIF orientation 6. Names written back are read by exiftool on the faces
peoplemap found; regions exiftool writes name exactly those faces."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from PIL import Image

from conftest import shared_set
from metadata_helpers import exiftool, mp_tags, mwg_tags, read_regions, write_tags
from peoplemap import Library
from peoplemap.config import Settings

pytestmark = pytest.mark.slow

GROUP = "_multi_person/knn_test__kit_with_rose.jpg"


def _copies(folder: Path) -> tuple[int, int]:
    """The group photo as it is (kr.jpg) and stored turned with orientation 6 (kr6.jpg, shown the
    same); returns the shown width and height."""
    folder.mkdir()
    src = shared_set("face_recognition_examples") / GROUP
    shutil.copy(src, folder / "kr.jpg")
    with Image.open(src) as im:
        im = im.convert("RGB")
        im.transpose(Image.Transpose.ROTATE_90).save(folder / "kr6.jpg", quality=95)
        size = im.size
    exiftool("-overwrite_original", "-Orientation#=6", str(folder / "kr6.jpg"))
    return size


def _faces(lib: Library) -> dict[str, list]:
    """photo -> its face items, left to right."""
    out: dict[str, list] = {}
    for it in lib.items():
        out.setdefault(Path(it.path).name, []).append(it)
    return {k: sorted(v, key=lambda it: it.box[0]) for k, v in out.items()}


def test_real_faces_both_ways(tmp_path: Path) -> None:
    settings = Settings(cache_dir=str(tmp_path / "cache"), workers=1)
    first = tmp_path / "first"
    W, H = _copies(first)
    with Library.open(tmp_path / "lib1", create=True, settings=settings) as lib:
        lib.index(first, model="face")
        faces = _faces(lib)
        assert [len(faces["kr.jpg"]), len(faces["kr6.jpg"])] == [2, 2]
        for a, b in zip(faces["kr.jpg"], faces["kr6.jpg"]):  # the same faces, once oriented
            assert all(abs(x - y) <= 12 for x, y in zip(a.box, b.box)), (a.box, b.box)
        lib.new_person([faces["kr.jpg"][0].id, faces["kr6.jpg"][0].id], "Left")
        lib.new_person([faces["kr.jpg"][1].id, faces["kr6.jpg"][1].id], "Right")
        changes = lib.export_xmp()
        assert sorted(c.action for c in changes) == ["create", "create"]
        for name in ("kr.jpg", "kr6.jpg"):
            read = read_regions(first / f"{name}.xmp")
            assert set(read) == {"Left", "Right"}
            for person, it in zip(("Left", "Right"), faces[name]):
                assert all(abs(x - y) <= 1 for x, y in zip(read[person], it.box)), (name, read[person], it.box)
        boxes = {n: [it.box for it in v] for n, v in faces.items()}

    # The other way: regions exiftool writes (MWG in one photo, Microsoft in the other's sidecar).
    second = tmp_path / "second"
    _copies(second)
    write_tags(second / "kr.jpg", mwg_tags([("Kit", boxes["kr.jpg"][0]), ("Rose", boxes["kr.jpg"][1])], W, H))
    write_tags(second / "kr6.xmp", mp_tags([("Kit", boxes["kr6.jpg"][0]), ("Rose", boxes["kr6.jpg"][1])], W, H),
               original=second / "kr6.jpg")
    with Library.open(tmp_path / "lib2", create=True, settings=settings) as lib:
        lib.index(second, model="face")
        assert sum(len(v) for v in _faces(lib).values()) == 4  # the regions named the detected faces
        people = {p.name: p for p in lib.people()}
        assert set(people) == {"Kit", "Rose"} and all(p.size == 2 for p in people.values())
        lib.cluster()
        after = {p.name: set(p.item_ids) for p in lib.people() if p.name}
        assert after == {n: set(p.item_ids) for n, p in people.items()}
