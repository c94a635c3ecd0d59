"""The Review, Photo and People pages' answers, run without a browser (Streamlit's AppTest).

What test_ui_review_browser does not click: "Someone else" with a new name (one action for a whole
group), "None of them", naming a face nobody holds from its photo, the "hide people seen fewer
than N times" setting (kept in the library), hiding every unnamed person at once, and the grid's
orders. The library is test_ui_review_browser's (fakefaces, Ada and Eve split in two, two of
Bert's faces unsorted, a group photo with a grey strip).
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from test_ui_review_browser import build_library

AppTest = pytest.importorskip("streamlit.testing.v1").AppTest


@pytest.fixture
def lib_env(tmp_path: Path, monkeypatch) -> tuple[Path, dict]:
    lib_dir, facts = build_library(tmp_path)
    monkeypatch.setenv("PEOPLEMAP_LIBRARY", str(lib_dir))
    return lib_dir, facts


def _run(page: str, setup: str = "", **query: object):
    at = AppTest.from_string(f"from peoplemap.ui import {page}\n{setup}\n{page}.page()\n",
                             default_timeout=60)
    for k, v in query.items():
        at.query_params[k] = str(v)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def _button(at, label: str):
    found = [b for b in at.button if b.label == label]
    assert found, [b.label for b in at.button]
    return found[0]


def _success(at) -> list[str]:
    """The success messages as read (the page escapes Markdown in them)."""
    return [re.sub(r"\\(.)", r"\1", s.value) for s in at.success]


def test_someone_else_gives_a_whole_group_to_a_new_person(lib_env) -> None:
    from peoplemap.library import Library
    from peoplemap.ui.pages_review import _group_key

    lib_dir, f = lib_env
    with Library.open(lib_dir) as lib:
        group = lib.review_groups()[0]
    key = f"review_who_{_group_key(group)}"
    who = _run("pages_review").selectbox(key=key)
    assert "Ada" in who.options and "Bert" not in who.options  # Bert is the question itself
    # A new name is typed (AppTest can only pick listed options: the page is run with a field
    # to type in, as for a library of more people than the list holds).
    at = _run("pages_review", setup="pages_review.PICK_CHOICES = 0")
    at.text_input(key=key).set_value("Bea")
    _button(at, "Give the ticked faces to them").click()
    at.run()
    assert not at.exception
    assert "2 faces given to Bea (a new person)." in _success(at)
    with Library.open(lib_dir) as lib:
        assert sorted(lib.person("Bea").item_ids) == sorted(f["held"])


def test_none_of_them_is_remembered(lib_env) -> None:
    from peoplemap.library import Library

    lib_dir, f = lib_env
    at = _run("pages_review")
    _button(at, "None of them").click()
    at.run()
    assert "None of the 2 faces is Bert." in _success(at)
    with Library.open(lib_dir) as lib:
        assert {(i, f["bert"]) for i in f["held"]} <= lib.store.people.rejected(lib.vector_set().id)
        assert all(g.candidate_id != f["bert"] for g in lib.review_groups() if set(g.item_ids) & set(f["held"]))


def test_name_a_face_from_its_photo(lib_env) -> None:
    from peoplemap.library import Library

    lib_dir, f = lib_env
    with Library.open(lib_dir) as lib:
        image_id = lib.items(ids=[f["junk"]])[0].image_id
    faces = ["**1** · Cleo", "**2** · nobody yet"]
    # a search hit links by its face alone
    assert [m.value for m in _run("pages_photo", face=f["junk"]).markdown if " · " in m.value] == faces
    at = _run("pages_photo", photo=image_id, face=f["junk"])
    assert [m.value for m in at.markdown if " · " in m.value] == faces
    at.text_input(key=f"photo_name_{f['junk']}").set_value("Grey")
    _button(at, "Save").click()
    at.run()
    assert "Face 2 is Grey (a new person)." in _success(at)
    with Library.open(lib_dir) as lib:
        assert lib.person("Grey").item_ids == [f["junk"]]


def test_hide_small_and_unnamed_people(lib_env) -> None:
    from peoplemap.library import Library

    lib_dir, f = lib_env
    at = _run("pages_people")
    assert len([b for b in at.button if b.label == "View"]) == 7
    at.number_input(key="people_min_faces").set_value(6)
    at.run()
    # the unnamed people have 5 faces; named ones are always shown
    assert len([b for b in at.button if b.label == "View"]) == 4
    assert json.loads((lib_dir / "app-settings.json").read_text())["people_min_faces"] == 6
    assert _run("pages_people").number_input(key="people_min_faces").value == 6  # a new session

    at = _run("pages_people")
    hide = _button(at, "Hide all unnamed people (3)")
    hide.click()
    at.run()
    assert "Hid 3 unnamed people." in _success(at)
    with Library.open(lib_dir) as lib:
        assert all(p.name for p in lib.people())
        assert sum(p.hidden for p in lib.people(include_hidden=True)) == 3


def test_grid_orders() -> None:
    from peoplemap.responses import Person
    from peoplemap.ui.pages_people import sort_people

    people = [Person(1, None, False, 9, [1, 2]), Person(2, "bo", False, 2, [3, 40]),
              Person(3, "Al", False, 3, [5]), Person(4, None, False, 1, [50])]
    ids = {how: [p.id for p in sort_people(people, how)] for how in ("named", "size", "name", "recent")}
    assert ids == {"named": [3, 2, 1, 4], "size": [1, 3, 2, 4], "name": [3, 2, 1, 4],
                   "recent": [4, 2, 3, 1]}


def test_not_now_puts_a_question_off(lib_env) -> None:
    lib_dir, _f = lib_env
    at = _run("pages_review")

    def questions(at) -> list[str]:
        return [m.value for m in at.markdown if m.value.startswith("**Are these") or
                m.value.startswith("**Is this") or m.value.startswith("**Who")]
    first = questions(at)[0]
    assert first.startswith("**Are these Bert?"), questions(at)
    at.button(key=[b.key for b in at.button if b.key.startswith("review_later_")][0]).click()
    at.run()
    assert first not in questions(at) and "1 put off for later." in [c.value for c in at.caption]
    at.button(key="review_unskip").click()
    at.run()
    assert questions(at)[0] == first


def test_tick_all_and_untick_all(lib_env) -> None:
    """Many faces to tick or untick at once, in a person's dialog."""
    lib_dir, f = lib_env
    at = _run("pages_people", person=f["bert"])
    boxes = [c for c in at.checkbox if c.key and c.key.startswith(f"people_tick_{f['bert']}_")]
    assert len(boxes) == 7 and not any(c.value for c in boxes)
    at.button(key=f"people_tickall_{f['bert']}").click()
    at.run()
    assert all(c.value for c in at.checkbox if c.key and c.key.startswith(f"people_tick_{f['bert']}_"))
    assert "**7** ticked" in " ".join(c.value for c in at.caption)
    at.button(key=f"people_untickall_{f['bert']}").click()
    at.run()
    assert not any(c.value for c in at.checkbox if c.key and c.key.startswith(f"people_tick_{f['bert']}_"))


def test_a_persons_own_suggestions_merge_and_open_the_merged_person(lib_env) -> None:
    from peoplemap.library import Library

    lib_dir, f = lib_env
    pair = f"{min(f['ada'], f['ada2'])}_{max(f['ada'], f['ada2'])}"
    at = _run("pages_people", person=f["ada2"])  # the unnamed half of Ada
    at.button(key=f"same_suggest_{pair}").click()
    at.run()
    assert not at.exception
    assert f"Merged Person {f['ada2']} into Ada: 10 faces." in _success(at)
    assert at.query_params["person"] in (str(f["ada"]), [str(f["ada"])])  # the dialog shows who is left: Ada
    with Library.open(lib_dir) as lib:
        assert lib.person("Ada").size == 10

    at = _run("pages_people", person=f["eve1"])
    pair = f"{min(f['eve1'], f['eve2'])}_{max(f['eve1'], f['eve2'])}"
    at.button(key=f"different_suggest_{pair}").click()
    at.run()
    with Library.open(lib_dir) as lib:
        assert not lib.merge_suggestions(person=f["eve1"])
