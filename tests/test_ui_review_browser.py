"""Issue 14 in a real browser: answers given in the app survive a re-clustering.

On the Review page the user merges two people through a suggestion ("Same person"), says another
suggested pair are different people, and answers a review group ("Are these Bert?" with one face
unticked). On the People page a face is taken out of a person ("Not Cleo"). From that person a
group photo is opened: a face the detector missed is added by its box (and given to Dora), and a
false detection is removed ("Not a face"). Then the library is clustered again from the Index
page, and every decision is read back off the pages: the grid's people and sizes, the photo's
faces, and no question asked again.

The library is built with `fakefaces` (test_ui_people_browser): one "face" per 64-pixel strip, so
the group photo's last 36 pixels hold a face the "detector" misses. Ada and Eve are each
photographed in two lights (two people each after clustering); two of Bert's photos are left out
of the first clustering (unsorted, for the review).
"""
from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Iterator

import numpy as np
import pytest
from PIL import Image

from test_ui_browser import (SERVER_START_S, _free_port, _images_loaded, _no_exceptions, _settled,
                             _shot, _stop, _wait_for, _wait_healthy, browser, page)  # noqa: F401 (fixtures)
from test_ui_people_browser import STRIP, WRAPPER

expect = pytest.importorskip("playwright.sync_api").expect
PlaywrightError = pytest.importorskip("playwright.sync_api").Error

pytestmark = [pytest.mark.browser, pytest.mark.slow]

MODEL = "fakefaces"
LIGHT = 30
"""Brightness of a person's second look: far enough apart to be two clusters, near enough to be
suggested as one person."""
MISSED = (2 * STRIP, 0, 36, 80)
"""The box of the face the detector misses in the group photo (x, y, width, height)."""


def _face(rng, layout: np.ndarray, width: int = STRIP, height: int = 80) -> np.ndarray:
    big = np.kron(layout, np.ones((height // 4, width // 4, 1)))
    return np.clip(big + rng.normal(0, 6, big.shape), 0, 255).astype(np.uint8)


def build_library(root: Path) -> tuple[Path, dict]:
    """The photos and the library as the user finds them, and the ids the test needs."""
    from peoplemap.library import Library

    photos = root / "photos"
    rng = np.random.default_rng(5)
    looks = {k: rng.integers(0, 256, size=(4, 4, 3)).astype(np.float32) for k in "ABCDE"}

    def save(pixels: np.ndarray, rel: str) -> None:
        p = photos / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(pixels).save(p)

    for j in range(5):
        for k in "AE":
            save(_face(rng, looks[k]), f"{k.lower()}/look1-{j}.png")
            save(_face(rng, np.clip(looks[k] + LIGHT, 0, 255)), f"{k.lower()}/look2-{j}.png")
        for k in "CD":
            save(_face(rng, looks[k]), f"{k.lower()}/{j}.png")
    for j in range(9):  # Bert is the largest person, so he leads the grid and his questions
        save(_face(rng, looks["B"]), f"b/{j}.png")
    party = np.concatenate([_face(rng, looks["C"]), np.full((80, STRIP, 3), 128, np.uint8),
                            _face(rng, looks["D"], width=MISSED[2])], axis=1)
    save(party, "group/party.png")

    lib_dir = root / "lib"
    with Library.open(lib_dir, create=True) as lib:
        lib.index(photos, model=MODEL)
        items = lib.items()
        by_path = {Path(it.path).relative_to(photos).as_posix(): it for it in items}
        held = [by_path[f"b/{j}.png"].id for j in (0, 1)]
        lib.cluster(model=MODEL, min_cluster_size=3, items=[it.id for it in items if it.id not in held])
        owner = {i: p for p in lib.people() for i in p.item_ids}

        def person(rel: str):
            return owner[by_path[rel].id]
        party_faces = sorted((it for it in items if it.path.endswith("party.png")), key=lambda it: it.box[0])
        assert len(party_faces) == 2  # Cleo and the grey "junk"; Dora's face is missed
        facts = {
            "ada": lib.name_person(person("a/look1-0.png").id, "Ada").id,
            "ada2": person("a/look2-0.png").id,
            "eve1": person("e/look1-0.png").id, "eve2": person("e/look2-0.png").id,
            "bert": lib.name_person(person("b/2.png").id, "Bert").id,
            "cleo": lib.name_person(person("c/0.png").id, "Cleo").id,
            "dora": lib.name_person(person("d/0.png").id, "Dora").id,
            "held": held, "cleo_out": by_path["c/1.png"].id, "party_cleo": party_faces[0].id,
            "junk": party_faces[1].id,
        }
        assert len({facts[k] for k in ("ada", "ada2", "eve1", "eve2", "bert", "cleo", "dora")}) == 7
        assert [(p.label, p.size) for p in lib.people()][:2] == [("Bert", 7), ("Cleo", 6)]
        pairs = {(s.person_id, s.other_id) for s in lib.merge_suggestions()}
        assert {tuple(sorted((facts["ada"], facts["ada2"]))), tuple(sorted((facts["eve1"], facts["eve2"])))
                } <= {tuple(sorted(p)) for p in pairs}, pairs
        groups = lib.review_groups()
        assert groups[0].item_ids == held and groups[0].candidate_name == "Bert", groups
    return lib_dir, facts


@pytest.fixture(scope="module")
def review_app(tmp_path_factory) -> Iterator[tuple[str, Path, dict]]:
    from peoplemap.ui import launch

    root = tmp_path_factory.mktemp("review")
    lib_dir, facts = build_library(root)
    wrapper = root / "app_with_fakefaces.py"
    wrapper.write_text(WRAPPER.format(tests=str(Path(__file__).parent), app=str(launch.APP)))
    port = _free_port()
    cmd = [str(wrapper) if c == str(launch.APP) else c
           for c in launch.app_command(str(lib_dir), port=port, address="127.0.0.1")]
    log = root / "streamlit.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_healthy(url, proc, log, SERVER_START_S)
        yield url, lib_dir, facts
    finally:
        _stop(proc)


def _main(page):
    return page.locator('[data-testid="stMain"]')


def _text(page) -> str:
    return page.evaluate("() => document.querySelector('[data-testid=\"stMain\"]').innerText")


def _card(scope, page, *texts: str, button: str):
    """The innermost block holding every text (in bold) and the button: one question's card."""
    loc = scope.locator('[data-testid="stVerticalBlock"]')
    for t in texts:
        loc = loc.filter(has=page.locator("strong", has_text=re.compile(rf"^{re.escape(t)}\b")))
    return loc.filter(has=page.get_by_role("button", name=button, exact=True)).last


def _done(page, scope, text: str) -> None:
    _wait_for(page, scope.locator('[data-testid="stAlertContentSuccess"]', has_text=text))
    _settled(page)
    _no_exceptions(page)


def _tick(page, box, ticked: bool) -> None:
    """Tick or untick a box, again if a rerun that was still drawing the page swallowed the click."""
    for attempt in range(3):
        _settled(page)
        try:
            box.set_checked(ticked, force=True, timeout=10_000)
            break
        except PlaywrightError:
            if attempt == 2:
                raise
    _settled(page)


def _people_on_grid(page) -> list[tuple[str, int]]:
    """(label, faces) of every tile of the People grid, in order."""
    tiles = _main(page).locator('[data-testid="stMarkdownContainer"]', has=page.locator("strong"))
    out = []
    for t in tiles.all():
        m = re.fullmatch(r"(.+)\n(\d+) faces?(?: · hidden)?", t.inner_text().strip())
        if m:
            out.append((m.group(1), int(m.group(2))))
    return out


def test_review_answers_survive_reclustering(review_app, page, tmp_path: Path) -> None:
    url, lib_dir, f = review_app
    main = _main(page)
    dialog = page.get_by_role("dialog")
    ada2, eve1, eve2 = (f"Person {f[k]}" for k in ("ada2", "eve1", "eve2"))

    # -- Review: merge through a suggestion, say another pair are different people --------------
    page.goto(url + "/review")
    main.locator("h3", has_text="Same person?").wait_for()
    _settled(page)
    _images_loaded(page, 4)
    _shot(page, tmp_path, "review-before")
    _card(main, page, "Ada", ada2, button="Same person").get_by_role(
        "button", name="Same person", exact=True).click()
    _done(page, main, f"Merged {ada2} into Ada: 10 faces.")
    first, second = (f"Person {i}" for i in sorted((f["eve1"], f["eve2"])))
    _card(main, page, eve1, eve2, button="Different people").get_by_role(
        "button", name="Different people", exact=True).click()
    _done(page, main, "are different people")
    expect(main.locator("h3", has_text=re.compile(r"^\s*Same person\? · 0\s*$"))).to_have_count(1)

    # -- Review: "Are these Bert?", one face unticked -------------------------------------------
    group = _card(main, page, "Are these Bert? · 2 faces", button="Yes, Bert")
    keep, out = f["held"]
    _tick(page, group.get_by_role("checkbox", name=f"#{out}", exact=True), False)
    expect(group.get_by_role("checkbox", name=f"#{out}", exact=True)).not_to_be_checked()
    group.get_by_role("button", name="Yes, Bert", exact=True).click()
    _done(page, main, "1 face confirmed as Bert; 1 marked as not Bert.")
    expect(main.get_by_text(re.compile(r"^Are these Bert\?"))).to_have_count(0)

    # -- People: "Not Cleo" on one of Cleo's faces -----------------------------------------------
    page.goto(url + f"/people?person={f['cleo']}")
    dialog.get_by_text(re.compile(r"^Cleo · 6 faces$")).wait_for()
    _settled(page)
    _tick(page, dialog.get_by_role("checkbox", name=f"#{f['cleo_out']}", exact=True), True)
    dialog.get_by_text("1 ticked").wait_for()
    _settled(page)
    dialog.get_by_role("button", name="Not Cleo", exact=True).click()
    _done(page, dialog, "1 face taken out of Cleo: not Cleo.")
    dialog.get_by_text(re.compile(r"^Cleo · 5 faces$")).wait_for()
    expect(dialog.get_by_role("checkbox", name=f"#{f['cleo_out']}", exact=True)).to_have_count(0)
    _shot(page, tmp_path, "review-person")

    # -- The group photo, opened from Cleo's face in it -------------------------------------------
    tile = dialog.locator('[data-testid="stColumn"]', has=page.get_by_role(
        "checkbox", name=f"#{f['party_cleo']}", exact=True))
    tile.get_by_role("link", name="Photo").click()
    page.locator("h1", has_text="Photo").wait_for()
    expect(dialog).to_have_count(0)
    faces = main.locator('[data-testid="stMarkdownContainer"]', has_text=re.compile(r"^\d+ · "))
    expect(faces).to_have_count(2)
    assert [t.inner_text() for t in faces.all()] == ["1 · Cleo", "2 · nobody yet"]
    _images_loaded(page, 1)
    # A missed face, drawn with the mouse on the photo: the box fills in the fields.
    x, y, w, h = MISSED
    drag = main.locator('[data-testid="stPlotlyChart"] .nsewdrag').first
    drag.wait_for()
    area = drag.bounding_box()
    size = {"x": 2 * STRIP + MISSED[2], "y": 80}  # the photo's pixels

    def at(px: float, py: float) -> tuple[float, float]:
        return area["x"] + px / size["x"] * area["width"], area["y"] + py / size["y"] * area["height"]
    page.mouse.move(*at(x + 1, y + 1))
    page.mouse.down()
    page.mouse.move(*at(x + w - 1, y + h - 1), steps=8)
    page.mouse.up()
    fields = [main.get_by_label(label, exact=True) for label in ("x", "y", "Width", "Height")]
    expect(fields[0]).not_to_have_value("0")
    _settled(page)
    drawn = [int(fld.input_value()) for fld in fields]
    assert all(abs(a - b) <= 3 for a, b in zip(drawn, (x + 1, y + 1, w - 2, h - 2))), drawn
    # ... and typed exactly
    for fld, value in zip(fields, MISSED):
        fld.fill(str(value))
    main.get_by_label("Who is it? (optional)").fill("Dora")
    main.get_by_role("button", name="Add face").click()
    _done(page, main, "Added a face of Dora.")
    expect(faces).to_have_count(3)
    assert [t.inner_text() for t in faces.all()] == ["1 · Cleo", "2 · nobody yet", "3 · Dora"]
    # The grey strip is no face.
    junk = main.locator('[data-testid="stVerticalBlock"]').filter(has=page.locator(
        '[data-testid="stMarkdownContainer"]', has_text=re.compile(r"^2 · nobody yet$"))).filter(
        has=page.get_by_role("button", name="Not a face")).last
    junk.get_by_role("button", name="Not a face").click()
    _done(page, main, "Removed face 2: not a face.")
    expect(faces).to_have_count(2)
    assert [t.inner_text() for t in faces.all()] == ["1 · Cleo", "2 · Dora"]
    _shot(page, tmp_path, "review-photo")
    # From the photo to the person.
    main.get_by_role("link", name="See Dora").click()
    dialog.get_by_text(re.compile(r"^Dora · 6 faces$")).wait_for()
    _settled(page)
    _no_exceptions(page)

    # -- Cluster again, from the Index page --------------------------------------------------------
    page.goto(url + "/")
    page.locator("h1", has_text="Index").wait_for()
    _settled(page)
    main.get_by_role("button", name="Cluster", exact=True).click()
    _wait_for(page, main.get_by_text(re.compile(r"Grouped \d+ faces into \d+ people")))
    _settled(page)

    # -- Every decision is still in place, read off the pages ---------------------------------------
    page.goto(url + "/people")
    main.locator("h1", has_text="People").wait_for()
    expect(main.get_by_role("button", name="View", exact=True)).to_have_count(6)
    _settled(page)
    grid = _people_on_grid(page)
    # named people first, largest first; the two Eves stay two people
    assert grid == [("Ada", 10), ("Bert", 8), ("Dora", 6), ("Cleo", 5), (first, 5), (second, 5)], grid
    _shot(page, tmp_path, "review-people-after")

    page.goto(url + f"/people?person={f['bert']}")
    dialog.get_by_text(re.compile(r"^Bert · 8 faces$")).wait_for()
    _settled(page)
    expect(dialog.get_by_role("checkbox", name=f"#{keep}", exact=True)).to_have_count(1)
    expect(dialog.get_by_role("checkbox", name=f"#{out}", exact=True)).to_have_count(0)

    page.goto(url + f"/photo?photo=0&face={f['party_cleo']}")  # a photo that is not there
    main.get_by_text(re.compile("Open a photo from any face")).wait_for()
    page.goto(url + f"/people?person={f['cleo']}")
    dialog.get_by_text(re.compile(r"^Cleo · 5 faces$")).wait_for()
    _settled(page)
    expect(dialog.get_by_role("checkbox", name=f"#{f['cleo_out']}", exact=True)).to_have_count(0)
    tile = dialog.locator('[data-testid="stColumn"]', has=page.get_by_role(
        "checkbox", name=f"#{f['party_cleo']}", exact=True))
    tile.get_by_role("link", name="Photo").click()
    page.locator("h1", has_text="Photo").wait_for()
    expect(faces).to_have_count(2)
    assert [t.inner_text() for t in faces.all()] == ["1 · Cleo", "2 · Dora"]

    page.goto(url + "/review")
    main.locator("h3", has_text="Who is this?").wait_for()
    _settled(page)
    text = _text(page)
    assert "Same person? · 0" in text, text  # Ada is one person, the Eves are different people
    assert not re.search(r"(Are these|Is this) (Bert|Cleo)\?", text), text  # "not Bert/Cleo" kept
    _no_exceptions(page)
    _shot(page, tmp_path, "review-after")

    from peoplemap.library import Library

    with Library.open(lib_dir) as lib:
        by_name = {p.label: p for p in lib.people()}
        assert by_name["Ada"].size == 10 and f["ada2"] not in by_name
        assert keep in by_name["Bert"].item_ids and out not in by_name["Bert"].item_ids
        assert f["cleo_out"] not in by_name["Cleo"].item_ids
        assert f["junk"] not in {it.id for it in lib.items()}
        assert len(by_name["Dora"].item_ids) == 6
