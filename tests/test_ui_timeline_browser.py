"""The Timeline page in a real browser (headless Chromium): a person's photos by year and month,
from EXIF dates the test stamps on generated photos with exiftool; names come from face regions.
The Search page shows each hit's date and filters by it.
"""
from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Iterator

import pytest

from metadata_helpers import exiftool, make_photo, mwg_tags, write_tags
from test_ui_browser import (SERVER_START_S, _free_port, _images_loaded, _no_exceptions, _settled,
                             _shot, _stop, _wait_for, _wait_healthy, browser, page)  # noqa: F401 (fixtures)

expect = pytest.importorskip("playwright.sync_api").expect
SHORT_MS = 20_000

pytestmark = [pytest.mark.browser, pytest.mark.slow]

RED, BLUE = (220, 30, 30), (30, 30, 220)
ADA, BOB = (40, 50, 40, 48), (200, 60, 36, 44)
STAMPS = {  # photo -> (date taken, who is in it)
    "a1.jpg": ("2019:07:14 18:30:05", ["Ada"]),
    "a2.jpg": ("2019:07:20 09:00:00", ["Ada", "Bob"]),
    "a3.jpg": ("2019:08:02 12:00:00", ["Ada"]),
    "a4.jpg": ("2021:03:02 08:15:00", ["Ada"]),
    "a5.jpg": (None, ["Ada"]),
    "b1.jpg": ("2020:12:24 20:00:00", ["Bob"]),
}


WRAPPER = """import runpy, sys
sys.path.insert(0, {tests!r})
import metadata_helpers  # registers fakeface, for the search page
runpy.run_path({app!r}, run_name="__main__")
"""


@pytest.fixture(scope="module")
def timeline_app(tmp_path_factory) -> Iterator[tuple[str, dict[str, int], Path]]:
    from peoplemap.config import Settings
    from peoplemap.library import Library
    from peoplemap.ui import launch

    tmp_path = tmp_path_factory.mktemp("timeline")
    photos = tmp_path / "photos"
    photos.mkdir()
    for k, (name, (taken, who)) in enumerate(STAMPS.items()):
        faces = [f for f in ((ADA, RED, "Ada"), (BOB, BLUE, "Bob")) if f[2] in who]
        make_photo(photos / name, [(box, colour) for box, colour, _ in faces], seed=k)
        write_tags(photos / name, mwg_tags([(n, box) for box, _, n in faces], 320, 240))
        if taken:
            exiftool("-overwrite_original", f"-DateTimeOriginal={taken}", str(photos / name))
    lib_dir = tmp_path / "lib"
    with Library.open(lib_dir, create=True, settings=Settings(cache_dir=str(tmp_path / "c"), workers=1)) as lib:
        lib.index(photos, model="fakeface")
        ids = {p.name: p.id for p in lib.people()}
        assert set(ids) == {"Ada", "Bob"}
    wrapper = tmp_path / "app_with_fakeface.py"
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
        yield url, ids, photos
    finally:
        _stop(proc)


def test_timeline_by_year_and_month(timeline_app, page, tmp_path: Path) -> None:
    url, ids, _photos = timeline_app
    main = page.locator('[data-testid="stMain"]')
    page.goto(url + "/timeline")
    page.locator("h1", has_text="Timeline").wait_for()
    summary = main.get_by_text(re.compile(r"is in \d+ photos"))
    _wait_for(page, summary)
    _settled(page)
    # Ada, the person with the most photos, is shown first.
    expect(summary).to_have_text(re.compile(
        r"Ada is in 5 photos, taken from 14 July 2019 to 2 March 2021\. 1 photo without a date\."))
    expect(main.locator("h3")).to_have_count(3, timeout=SHORT_MS)
    headings = [h.strip() for h in main.locator("h3").all_inner_texts()]
    assert headings == ["2019 · 3 photos", "2021 · 1 photo", "No date · 1 photo"], headings
    for month in ("July 2019 · 2 photos", "August 2019 · 1 photo", "March 2021 · 1 photo"):
        expect(main.get_by_text(month, exact=True)).to_be_visible()
    images = main.locator('[data-testid="stImage"] img')
    _images_loaded(page, 5)
    expect(images).to_have_count(5)
    for day in ("14 July 2019", "20 July 2019", "2 August 2019", "2 March 2021"):
        expect(main.get_by_text(day, exact=True)).to_be_visible()
    _no_exceptions(page)
    _shot(page, tmp_path, "timeline-ada")

    # Leaving out undated photos.
    main.get_by_text("Photos without a date").click()
    expect(summary).to_have_text(re.compile(r"Ada is in 4 photos, taken from 14 July 2019 to 2 March 2021\.$"))
    expect(main.locator("h3", has_text="No date")).to_have_count(0)
    expect(images).to_have_count(4)

    # Another person, by link.
    page.goto(url + f"/timeline?person={ids['Bob']}")
    _wait_for(page, main.get_by_text(re.compile(r"Bob is in 2 photos")))
    _settled(page)
    expect(main.locator("h3")).to_have_count(2)
    headings = [h.strip() for h in main.locator("h3").all_inner_texts()]
    assert headings == ["2019 · 1 photo", "2020 · 1 photo"], headings
    expect(main.get_by_text("December 2020 · 1 photo", exact=True)).to_be_visible()
    _no_exceptions(page)
    _shot(page, tmp_path, "timeline-bob")


def test_search_shows_dates_and_filters_by_them(timeline_app, page, tmp_path: Path) -> None:
    url, _ids, photos = timeline_app
    main = page.locator('[data-testid="stMain"]')
    page.goto(url + "/search")
    page.locator("h1", has_text="Search").wait_for()
    page.locator('[data-testid="stFileUploader"] input[type="file"]').set_input_files(str(photos / "a1.jpg"))
    hits = main.locator('[data-testid="stMarkdownContainer"]', has_text=re.compile(r"^#\d+ · "))
    _wait_for(page, hits.first)
    _settled(page)
    expect(hits).to_have_count(7)  # every face in the library: Ada's 5 and Bob's 2
    expect(hits.filter(has_text="taken 14 July 2019")).to_have_count(1)
    expect(hits.filter(has_text="a5.jpg")).to_have_count(1)
    expect(hits.filter(has_text="a5.jpg").filter(has_text="taken")).to_have_count(0)  # no date
    main.get_by_text("Photos without a date").click()
    expect(hits).to_have_count(6)
    expect(hits.filter(has_text="a5.jpg")).to_have_count(0)
    _no_exceptions(page)
    _shot(page, tmp_path, "search-dates")
