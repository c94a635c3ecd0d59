"""The app on a library of a few thousand items shows a page of things, never everything.

3,200 face items (200 generated photos of 16 "faces", 400 people of 8, the `fakefaces` model of
test_ui_people_browser) are indexed and clustered for real. Checked without a browser: the Clusters
page's grouping matches lib.clusters()/lib.unsorted(), the map reads only its sample of vectors, and
item tiles are rendered once, then read from memory or disk; a face in a large JPEG is cut from a
reduced decode. In headless Chromium (the app sampling its map to 500 points and listing at most 50
people to merge into): the People page shows one page of 24 tiles with a pager, the Clusters page
one page of galleries and a map of exactly 500 points, the tiles written to thumbnails/ are reused,
not rewritten, by a new session and after a restart of the app, and a person is merged into
another by typing its number.
"""
from __future__ import annotations

import io
import math
import re
import subprocess
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import numpy as np
import pytest
from PIL import Image
from playwright.sync_api import expect

from peoplemap import people
from peoplemap.library import Library
from peoplemap.ui import pages_clusters, pages_people, thumbs
from test_ui_browser import (SERVER_START_S, _free_port, _images_loaded, _no_exceptions, _stop,
                             _wait_healthy, browser, page)  # noqa: F401 (fixtures)
from test_ui_people_browser import STRIP

pytestmark = [pytest.mark.browser]

MODEL = "fakefaces"  # registered by importing test_ui_people_browser
PEOPLE, PER_PERSON, FACES = 400, 8, 16
ITEMS = PEOPLE * PER_PERSON
MAP_LIMIT = 500
"""The app under test samples its map to this many points (its default is above ITEMS)."""

MERGE_CHOICES = 50
"""The app under test lists at most this many people to merge into (fewer than PEOPLE)."""

WRAPPER = """import runpy, sys
sys.path.insert(0, {tests!r})
import test_ui_people_browser  # registers fakefaces
from peoplemap.ui import pages_clusters, pages_people
pages_clusters.MAP_POINTS = {points}
pages_people.MERGE_CHOICES = {merge}
runpy.run_path({app!r}, run_name="__main__")
"""

MAP_POINTS_JS = """() => { const gd = document.querySelector(
    '[data-testid="stPlotlyChart"] .js-plotly-plot');
    if (!gd || !gd.data || !gd.querySelector('.main-svg')) return 0;
    const n = x => !x ? 0 : x.bdata !== undefined
        ? atob(x.bdata).length / parseInt(x.dtype.slice(1)) : x.length;
    return gd.data.reduce((k, t) => k + n(t.x), 0); }"""
"""Points drawn in the map (numpy arrays reach plotly.js as base64 "bdata" typed arrays)."""


def _make_photos(folder: Path, seed: int = 0) -> None:
    """Each photo: FACES strips of STRIP pixels, each a different person's 4x4 colour layout plus
    noise; a person's PER_PERSON faces are spread over PER_PERSON photos."""
    rng = np.random.default_rng(seed)
    layouts = rng.integers(0, 256, size=(PEOPLE, 4, 4, 3)).astype(np.float32)
    person = np.repeat(np.arange(PEOPLE), PER_PERSON)
    n_photos = ITEMS // FACES
    folder.mkdir(parents=True)
    for i in range(n_photos):
        strips = [np.kron(layouts[person[k * n_photos + i]], np.ones((20, STRIP // 4, 1)))
                  for k in range(FACES)]
        img = np.concatenate(strips, axis=1) + rng.normal(0, 6, (80, FACES * STRIP, 3))
        Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(
            folder / f"photo{i:04d}.jpg", quality=90)


@pytest.fixture(scope="module")
def scale_library(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("scale")
    _make_photos(root / "photos")
    with Library.open(root / "lib", create=True) as lib:
        s = lib.index(root / "photos", model=MODEL)
        assert s.items_added == ITEMS
        lib.cluster(model=MODEL)
        assert len(lib.people(MODEL)) > 10 * pages_people.PEOPLE_PER_PAGE
        assert len(lib.clusters(MODEL)) > 10 * pages_clusters.CLUSTERS_PER_PAGE
    return root / "lib"


# -- without a browser -------------------------------------------------------------------------
def test_cluster_groups_match_the_library(scale_library: Path) -> None:
    with Library.open(scale_library) as lib:
        c = lib.clustering(MODEL)
        generation = lib.vector_set(MODEL).generation
        g = pages_clusters._groups(str(scale_library), MODEL, c.id, generation)
        clusters = lib.clusters(MODEL)
        assert g.ids.tolist() == [ci.id for ci in clusters]
        assert g.sizes.tolist() == [ci.size for ci in clusters]
        assert all(g.items_of(k, ITEMS) == ci.item_ids for k, ci in enumerate(clusters))
        assert all(g.items_of(k, 3) == ci.item_ids[:3] for k, ci in enumerate(clusters))
        assert g.unsorted.tolist() == lib.unsorted(MODEL)


def test_map_reads_only_its_sample(scale_library: Path, monkeypatch) -> None:
    with Library.open(scale_library) as lib:
        all_ids, all_X = lib.vectors(MODEL)

        real = Library.vectors

        def no_full_read(self, *a, ids=None, **k):
            if ids is None:
                raise AssertionError("the map must not read every vector")
            assert len(ids) <= MAP_LIMIT
            return real(self, *a, ids=ids, **k)

        monkeypatch.setattr(Library, "vectors", no_full_read)
        ids, X = pages_clusters._sample_vectors(lib, MODEL, MAP_LIMIT)
        assert len(ids) == MAP_LIMIT and len(set(ids.tolist())) == MAP_LIMIT
        assert np.all(np.diff(ids) > 0)
        pos = np.searchsorted(all_ids, ids)
        assert np.array_equal(all_ids[pos], ids)
        assert np.array_equal(all_X[pos], X)  # each id with its own vector
        monkeypatch.setattr(Library, "vectors", real)
        everything, _ = pages_clusters._sample_vectors(lib, MODEL, ITEMS + 1)
        assert np.array_equal(everything, all_ids)


def test_item_tiles_are_rendered_once(scale_library: Path, monkeypatch) -> None:
    renders: list[str] = []
    real = thumbs._render

    def counting(path, box, size, square):
        renders.append(path)
        return real(path, box, size, square)

    def tiles_40() -> dict[str, int]:  # this test's size: the browser test's tiles are 96 and 128
        return {f.name: f.stat().st_mtime_ns for f in (scale_library / "thumbnails").glob("*-40-*")}

    monkeypatch.setattr(thumbs, "_render", counting)
    with Library.open(scale_library) as lib:
        items = lib.items(MODEL)[:20]
        first = thumbs.item_thumbnails(lib, items, size=40)
        assert len(renders) == 20
        files = tiles_40()
        assert sorted(int(n.split("-")[0]) for n in files) == [it.id for it in items]
        assert all(re.fullmatch(r"\d+-40-[0-9a-f]{10}\.jpg", n) for n in files)
        assert thumbs.item_thumbnails(lib, items, size=40) == first  # from memory
        thumbs._memory.clear()
        assert thumbs.item_thumbnails(lib, items, size=40) == first  # from disk
        assert len(renders) == 20
        assert tiles_40() == files
        assert Image.open(io.BytesIO(first[0])).size == (40, 40)


def test_face_in_a_large_photo_is_cut_from_a_reduced_decode(tmp_path: Path) -> None:
    big = np.zeros((1200, 1600, 3), np.uint8)
    big[:, :] = (0, 0, 255)
    big[300:700, 400:800] = (255, 0, 0)  # the "face"
    path = tmp_path / "big.jpg"
    Image.fromarray(big).save(path, quality=90)
    box = (400, 300, 400, 400)
    assert thumbs._min_side_for_box(str(path), box, 96) == math.ceil(1200 * 96 / 400)
    assert thumbs._min_side_for_box(str(path), (0, 0, 50, 50), 96) is None  # too small to reduce
    tile = Image.open(io.BytesIO(thumbs._render(str(path), box, 96, square=True)))
    assert tile.size == (96, 96)
    r, g, b = tile.getpixel((48, 48))
    assert r > 200 and g < 60 and b < 60


# -- in a browser ------------------------------------------------------------------------------
@contextmanager
def _serve(lib_dir: Path, folder: Path) -> Iterator[str]:
    from peoplemap.ui import launch

    wrapper = folder / "app_at_scale.py"
    wrapper.write_text(WRAPPER.format(tests=str(Path(__file__).parent), app=str(launch.APP),
                                      points=MAP_LIMIT, merge=MERGE_CHOICES))
    port = _free_port()
    cmd = [str(wrapper) if c == str(launch.APP) else c
           for c in launch.app_command(str(lib_dir), port=port, address="127.0.0.1")]
    log = folder / "streamlit.log"
    with open(log, "ab") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_healthy(url, proc, log, SERVER_START_S)
        yield url
    finally:
        _stop(proc)


def _tiles(lib_dir: Path) -> dict[str, int]:
    return {f.name: f.stat().st_mtime_ns for f in (lib_dir / "thumbnails").glob("*.jpg")}


def _people_page(page, url: str) -> None:
    page.goto(url + "/people")
    main = page.locator('[data-testid="stMain"]')
    expect(main.get_by_role("button", name="View", exact=True)).to_have_count(
        pages_people.PEOPLE_PER_PAGE)
    _images_loaded(page, pages_people.PEOPLE_PER_PAGE)


def test_pages_show_one_page_and_reuse_tiles(scale_library: Path, page, tmp_path: Path) -> None:
    per_page = pages_people.PEOPLE_PER_PAGE
    with Library.open(scale_library) as lib:
        n_people = len(lib.people(MODEL))
        clusters = lib.clusters(MODEL)
        n_unsorted = len(lib.unsorted(MODEL))
    for f in _tiles(scale_library):
        (scale_library / "thumbnails" / f).unlink()
    main = page.locator('[data-testid="stMain"]')

    with _serve(scale_library, tmp_path) as url:
        # People: one page of tiles and a pager over the rest; a tile file for each tile shown.
        _people_page(page, url)
        n_pages = math.ceil(n_people / per_page)
        expect(main.get_by_role("combobox", name="People page")).to_have_value(
            f"1 of {n_pages}: 1–{per_page}")
        expect(main.locator('[data-testid="stImage"] img')).to_have_count(per_page)
        tiles = _tiles(scale_library)
        # a cover is each person's best face: its few best-ranked faces' tiles are measured
        assert per_page <= len(tiles) <= people.COVER_FINALISTS * per_page
        _no_exceptions(page)

        # A new session: the same tiles, none rendered again.
        page.reload()
        _people_page(page, url)
        assert _tiles(scale_library) == tiles

        # Clusters: a map of the sample only, and one page of galleries of at most MAX_THUMBS.
        page.goto(url + "/clusters")
        page.wait_for_function(MAP_POINTS_JS)
        assert page.evaluate(MAP_POINTS_JS) == MAP_LIMIT
        expect(main.get_by_text(f"Map: a random {MAP_LIMIT:,} of the {ITEMS:,} faces")).to_have_count(1)
        shown = clusters[:pages_clusters.CLUSTERS_PER_PAGE]
        headings = main.locator("h3", has_text=re.compile(r"^(Person \d+|Unsorted) · \d+ faces?$"))
        expect(headings).to_have_count(len(shown) + (1 if n_unsorted else 0))
        expect(headings.first).to_have_text(re.compile(rf"^Person \d+ · {shown[0].size} faces$"))
        n_clusters_pages = math.ceil(len(clusters) / pages_clusters.CLUSTERS_PER_PAGE)
        expect(main.get_by_role("combobox", name="Clusters page")).to_have_value(
            f"1 of {n_clusters_pages}: clusters 1–{pages_clusters.CLUSTERS_PER_PAGE}")
        n_thumbs = (sum(min(c.size, pages_clusters.MAX_THUMBS) for c in shown)
                    + min(n_unsorted, pages_clusters.MAX_THUMBS))
        expect(main.locator('[data-testid="stImage"] img')).to_have_count(n_thumbs)
        _images_loaded(page, n_thumbs)
        _no_exceptions(page)
        people_tiles, tiles = tiles, _tiles(scale_library)
        assert len(tiles) == len(people_tiles) + n_thumbs  # gallery tiles (96 px) are not People's (128)
        assert all(tiles[f] == t for f, t in people_tiles.items())

    # After a restart of the app: every tile is read from thumbnails/, none rewritten.
    with _serve(scale_library, tmp_path) as url:
        _people_page(page, url)
        page.goto(url + "/clusters")
        _images_loaded(page, n_thumbs)
        _no_exceptions(page)
        assert _tiles(scale_library) == tiles

        # With more people than MERGE_CHOICES, "Merge into" takes a typed number or name.
        with Library.open(scale_library) as lib:
            first, target = lib.people(MODEL)[:2]
        _people_page(page, url)
        main.get_by_role("button", name="View", exact=True).first.click()
        dialog = page.get_by_role("dialog")
        dialog.get_by_text(re.compile(rf"^Person {first.id} · {first.size} faces$")).wait_for()
        expect(dialog.get_by_role("combobox", name=re.compile("Merge into"))).to_have_count(0)
        field = dialog.get_by_role("textbox", name="Merge into…")
        merge = dialog.get_by_role("button", name="Merge", exact=True)
        field.fill("nobody")
        merge.click()
        expect(dialog.locator('[data-testid="stAlertContentError"]')).to_contain_text(
            "no person 'nobody'")
        field.fill(f"Person {target.id}")  # as its tile shows it
        merge.click()
        expect(dialog.locator('[data-testid="stAlertContentSuccess"]')).to_have_text(
            f"Merged Person {first.id} into Person {target.id}: {first.size + target.size} faces.")
        _no_exceptions(page)
    with Library.open(scale_library) as lib:
        merged = lib.person(target.id, MODEL)
        assert sorted(merged.item_ids) == sorted(first.item_ids + target.item_ids)
