"""The People page's edits and a group-photo search, in a real browser.

People (in the dialog "View" opens): hide and unhide, merge, split, forget, and a bad name. Search:
a photo with two "faces" says who is in it, is drawn with numbered boxes, and picking one shows its
own matches and person.

The library is built here on generated images (4 people of 5) with `fakefaces`, a fast fake face
model: one "face" per 64-pixel-wide strip of the image. The app's process registers it by importing
this module from a small wrapper script, then runs the real app.
"""
from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Iterator

import numpy as np
import pytest
from PIL import Image

from conftest import FakeEmbedder, make_person_images
from peoplemap.embed.registry import register
from peoplemap.types import Region
from test_ui_browser import (SERVER_START_S, _free_port, _images_loaded, _no_exceptions, _settled,
                             _shot, _stop, _wait_for, _wait_healthy, browser, page)  # noqa: F401 (fixtures)

expect = pytest.importorskip("playwright.sync_api").expect

pytestmark = [pytest.mark.browser, pytest.mark.slow]

STRIP = 64


@register("fakefaces", "test-only: one 'face' per 64-pixel strip, 4x4 colour embedding")
class StripFaces(FakeEmbedder):
    name = "fakefaces"
    item_kind = "face"
    decode_max_side = None

    def detect(self, image: np.ndarray) -> list[Region]:
        h, w = image.shape[:2]
        return [Region(box=(x, 0, STRIP, h)) for x in range(0, w - STRIP + 1, STRIP)]


WRAPPER = """import runpy, sys
sys.path.insert(0, {tests!r})
import test_ui_people_browser  # registers fakefaces
runpy.run_path({app!r}, run_name="__main__")
"""


@pytest.fixture
def people_app(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    from peoplemap.library import Library
    from peoplemap.ui import launch

    make_person_images(tmp_path / "photos", n_people=4, per_person=5)
    lib_dir = tmp_path / "lib"
    with Library.open(lib_dir, create=True) as lib:
        lib.index(tmp_path / "photos", model="fakefaces")
        lib.cluster(model="fakefaces", min_cluster_size=3)
        assert [p.size for p in lib.people()] == [5, 5, 5, 5]
    wrapper = tmp_path / "app_with_fakefaces.py"
    wrapper.write_text(WRAPPER.format(tests=str(Path(__file__).parent), app=str(launch.APP)))
    port = _free_port()
    cmd = [str(wrapper) if c == str(launch.APP) else c
           for c in launch.app_command(str(lib_dir), port=port, address="127.0.0.1")]
    log = tmp_path / "streamlit.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_healthy(url, proc, log, SERVER_START_S)
        yield url, lib_dir
    finally:
        _stop(proc)


def _people(lib_dir: Path, hidden: bool = True):
    from peoplemap.library import Library

    with Library.open(lib_dir) as lib:
        return lib.people(include_hidden=hidden)


def test_people_page_edits(people_app, page, tmp_path: Path) -> None:
    url, lib_dir = people_app
    page.goto(url + "/people")
    main = page.locator('[data-testid="stMain"]')
    dialog = page.get_by_role("dialog")  # a person opens over the grid
    page.locator("h1", has_text="People").wait_for()
    views = main.get_by_role("button", name="View", exact=True)
    expect(views).to_have_count(4)
    _images_loaded(page, 4)
    ids = [p.id for p in _people(lib_dir)]

    def open_person(label: str) -> None:
        tile = main.locator('[data-testid="stVerticalBlock"]', has=page.locator(
            "strong", has_text=re.compile(rf"^{label}$"))).last
        tile.get_by_role("button", name="View", exact=True).click()
        dialog.get_by_text(re.compile(rf"^{label} · \d+ faces?")).wait_for()
        _settled(page)

    def close() -> None:
        dialog.get_by_role("button", name="Close").click()
        expect(dialog).to_have_count(0)
        _settled(page)

    def done(text: str, where=dialog) -> None:
        _wait_for(page, where.locator('[data-testid="stAlertContentSuccess"]', has_text=text))
        _settled(page)
        _no_exceptions(page)

    def done_after_error(text: str) -> None:
        # the last run's error box stays until this run passes its place: wait for the message only
        dialog.locator('[data-testid="stAlertContentSuccess"]', has_text=text).first.wait_for()
        _settled(page)
        _no_exceptions(page)

    # A bad name is refused with a readable error, not a traceback.
    open_person(f"Person {ids[0]}")
    dialog.get_by_label("Name", exact=True).fill("   ")
    dialog.get_by_role("button", name="Save name").click()
    err = dialog.locator('[data-testid="stAlertContentError"]')
    err.first.wait_for()
    assert "cannot be empty" in err.first.inner_text()
    _no_exceptions(page)

    # Hide: out of the grid unless "Show hidden" is on; Unhide brings it back.
    dialog.get_by_role("button", name="Hide", exact=True).click()
    done_after_error("is hidden")
    expect(err).to_have_count(0)
    dialog.get_by_text(re.compile(rf"^Person {ids[0]} · 5 faces · hidden$")).wait_for()
    close()
    expect(views).to_have_count(3)
    assert [p.id for p in _people(lib_dir, hidden=False)] == ids[1:]
    # A click right after closing can leave before the browser hears that the address lost its
    # person: that run carries the closed person's address and must not open the dialog again.
    page.evaluate("id => history.replaceState(null, '', location.pathname + '?person=' + id)", ids[0])
    main.get_by_text("Show hidden").click()
    expect(views).to_have_count(4)
    _settled(page)
    expect(dialog).to_have_count(0)
    assert "person=" not in page.url
    open_person(f"Person {ids[0]}")
    unhide = dialog.get_by_role("button", name="Unhide", exact=True)
    expect(unhide).to_have_count(1)  # a rerun can briefly show the stale copy beside the new one
    unhide.click()
    done("is shown again")
    assert len(_people(lib_dir, hidden=False)) == 4

    # Merge person 0 into person 1: the dialog shows the merged person.
    dialog.get_by_role("combobox", name=re.compile("Merge into")).click()
    page.get_by_role("option", name=re.compile(rf"^Person {ids[1]} \(5 faces\)")).click()
    dialog.get_by_role("button", name="Merge", exact=True).click()
    done(f"Merged Person {ids[0]} into Person {ids[1]}: 10 faces.")
    merged = next(p for p in _people(lib_dir) if p.id == ids[1])
    assert merged.size == 10

    # Split two ticked faces (of the open, merged person) into a new, named person.
    dialog.get_by_text(re.compile(rf"^Person {ids[1]} · 10 faces$")).wait_for()
    for n, item_id in enumerate(merged.item_ids[:2], 1):
        dialog.get_by_role("checkbox", name=f"#{item_id}", exact=True).check(force=True)
        dialog.get_by_text(f"{n} ticked").wait_for()
        _settled(page)
    dialog.get_by_label("Name of the new person (optional)").fill("Split Off")
    dialog.get_by_role("button", name="Split selected").click()
    done(f"Moved 2 faces out of Person {ids[1]} into Split Off.")
    split = next(p for p in _people(lib_dir) if p.name == "Split Off")
    assert split.item_ids == merged.item_ids[:2]
    _shot(page, tmp_path, "people-edits")
    close()
    expect(views).to_have_count(4)  # one merged away, one split off

    # Forget the new person: the button waits for the confirmation; faces and thumbnails go.
    thumbs = lib_dir / "thumbnails"
    _images_loaded(page, 4)
    open_person("Split Off")
    sure = dialog.get_by_text(re.compile("Yes, delete the 2 faces"))
    dialog.locator('[data-testid="stExpander"] summary', has_text="Forget this person").click()
    forget = dialog.get_by_role("button", name="Forget this person")
    expect(forget).to_be_disabled()
    sure.click()
    expect(forget).to_be_enabled()
    forget.click()
    done("Forgot Split Off: 2 faces deleted.", where=main)
    expect(dialog).to_have_count(0)
    expect(views).to_have_count(3)
    assert sum(p.size for p in _people(lib_dir)) == 18
    gone = {str(i) for i in split.item_ids}
    assert not any(f.name.split("-")[0] in gone for f in thumbs.glob("*.jpg"))
    expect(main.get_by_text("Split Off", exact=True)).to_have_count(0)


def test_search_group_photo(people_app, page, tmp_path: Path) -> None:
    url, lib_dir = people_app
    from peoplemap.library import Library

    with Library.open(lib_dir) as lib:
        lib.name_person(lib.people()[0].id, "Ada")
        owner = {it.path: p.label for p in lib.people() for it in lib.items(ids=p.item_ids)}
    photos = tmp_path / "photos"
    left, right = photos / "person0" / "img0.jpg", photos / "person1" / "img0.jpg"
    group = np.concatenate([np.asarray(Image.open(left)), np.asarray(Image.open(right))], axis=1)
    query = tmp_path / "group.png"
    Image.fromarray(group).save(query)

    page.goto(url + "/search")
    main = page.locator('[data-testid="stMain"]')
    page.locator("h1", has_text="Search").wait_for()
    page.locator('[data-testid="stFileUploader"] input[type="file"]').set_input_files(str(query))
    _wait_for(page, main.get_by_text("Who is in this photo"))
    faces = main.get_by_role("radio")
    expect(faces).to_have_count(2)
    summary = main.locator('[data-testid="stMarkdownContainer"]', has_text="Face 1:").first
    assert summary.inner_text().splitlines() == [
        f"Face {n}: {owner[str(photo)]}" for n, photo in enumerate([left, right], 1)]
    top = main.locator('[data-testid="stMarkdownContainer"]', has_text=re.compile(r"^#1 · "))

    for n, photo in enumerate([left, right], 1):
        main.get_by_test_id("stRadioGroup").get_by_text(f"Face {n}", exact=True).click()
        main.locator("h3", has_text=f"Matches for face {n}").wait_for()
        expect(top).to_have_count(1)
        expect(top).to_contain_text(f"{photo.parent.name}/{photo.name}")
        expect(top).to_contain_text(owner[str(photo)])
        expect(main.locator('[data-testid="stMarkdownContainer"]', has_text=re.compile(
            rf"^This is {owner[str(photo)]}\.$"))).to_have_count(1)
        _no_exceptions(page)
    _shot(page, tmp_path, "search-faces")
