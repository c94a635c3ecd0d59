"""The Streamlit app in a real browser: headless Chromium, driven with Playwright, against a real server.

One walk through the app on a real folder (../shared/data/dlib_johns, read in place): the empty pages,
indexing from the Index page, clustering, the Clusters galleries and map, the People grid and naming a
person there, and a photo search whose top hit is the uploaded photo itself, under that person's name.
Screenshots of each page go to tmp_path and /tmp/peoplemap-ui-*.png.
"""
from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Iterator

import pytest

from conftest import shared_set

expect = pytest.importorskip("playwright.sync_api").expect
PlaywrightError = pytest.importorskip("playwright.sync_api").Error

pytestmark = [pytest.mark.browser, pytest.mark.slow]

CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic",
                 "--no-proxy-server"]
PROXY_VARS = {"http_proxy", "https_proxy", "all_proxy", "no_proxy", "ftp_proxy"}
SERVER_START_S = 60
INDEX_S = 240  # the first use of mobilenetv2 exports it to ONNX before indexing
STEP_MS = 60_000
K = 10


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _no_proxy_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k.lower() not in PROXY_VARS}


def _wait_healthy(url: str, proc: subprocess.Popen, log: Path, deadline_s: float) -> None:
    # An opener without proxies: the health check must reach 127.0.0.1 whatever the environment says.
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    deadline = time.monotonic() + deadline_s
    last = ""
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"the app exited with code {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with opener.open(url + "/_stcore/health", timeout=2) as r:
                if r.status == 200:
                    return
        except OSError as e:
            last = str(e)
        proc_wait = min(0.2, max(0.0, deadline - time.monotonic()))
        try:
            proc.wait(timeout=proc_wait)  # returns early only if the server died
        except subprocess.TimeoutExpired:
            pass
    pytest.fail(f"the app did not answer /_stcore/health within {deadline_s}s ({last}):\n"
                f"{log.read_text()[-3000:]}")


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=15)


@pytest.fixture(scope="session")
def library_dir(tmp_path_factory) -> Path:
    """Where the app's library lives (created by the app on first use)."""
    return tmp_path_factory.mktemp("ui") / "lib"


@pytest.fixture(scope="session")
def app_url(library_dir: Path) -> Iterator[str]:
    """A running app over a new, empty library in a temporary folder."""
    from peoplemap.ui.launch import start_app

    log = library_dir.parent / "streamlit.log"
    port = _free_port()
    # This flow checks the whole-image model (fast); the face model has its own tests.
    env = {**os.environ, "PEOPLEMAP_DEFAULT_MODEL": "mobilenetv2"}
    with open(log, "wb") as out:
        proc = start_app(str(library_dir), port=port, address="127.0.0.1", env=env,
                         stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_healthy(url, proc, log, SERVER_START_S)
        yield url
    finally:
        _stop(proc)
        print(f"streamlit log: {log}")


@pytest.fixture(scope="module")
def browser():
    # Module scope: test_ui_people_browser imports this fixture, and Playwright's sync API allows
    # one running instance per thread, so each module's browser closes before the next one starts.
    from playwright import sync_api
    exe = os.environ.get("PEOPLEMAP_CHROMIUM") or shutil.which("chromium") or None
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=exe, headless=True, args=CHROMIUM_ARGS,
                              env=_no_proxy_env())
        try:
            yield b
        finally:
            b.close()


@pytest.fixture
def page(browser):
    ctx = browser.new_context(viewport={"width": 1400, "height": 1000})
    pg = ctx.new_page()
    pg.set_default_timeout(STEP_MS)
    expect.set_options(timeout=STEP_MS)
    try:
        yield pg
    finally:
        ctx.close()


# -- helpers -----------------------------------------------------------------------------------
def _painted(page) -> None:
    """Wait until every image has loaded and two frames have been drawn since."""
    page.wait_for_function("() => [...document.images].every(i => i.complete)")
    page.evaluate("() => new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)))")


def _shot(page, tmp_path: Path, name: str) -> None:
    """Screenshot the whole page. Streamlit scrolls inside its main area, so the viewport is made
    as tall as that content for the shot, then put back."""
    _painted(page)
    size = page.viewport_size
    height = page.evaluate(
        "() => Math.max(...[...document.querySelectorAll('[data-testid=\"stMain\"], "
        "[data-testid=\"stMainBlockContainer\"]')].map(e => e.scrollHeight), 0)")
    page.set_viewport_size({"width": size["width"], "height": min(max(size["height"], height + 80),
                                                                  6000)})
    _painted(page)
    data = page.screenshot(full_page=True)
    page.set_viewport_size(size)
    (tmp_path / f"{name}.png").write_bytes(data)
    Path(f"/tmp/peoplemap-ui-{name}.png").write_bytes(data)


def _main(page):
    return page.locator('[data-testid="stMain"]')


def _go(page, title: str) -> None:
    page.locator('[data-testid="stSidebarNav"] a', has_text=title).first.click()
    _heading(page, title)


def _settled(page) -> None:
    """Wait until the app's script run is over: nothing left from the previous run, no run icon.
    Call it after waiting for something the run draws, so that the run has surely started."""
    page.wait_for_function(
        "() => !document.querySelector('[data-stale=\"true\"], "
        "[data-testid=\"stStatusWidgetRunningIcon\"]')")


def _images_loaded(page, n: int) -> None:
    """The first n images of the main area have loaded real pixels."""
    page.wait_for_function(
        "n => { const im = [...document.querySelectorAll('[data-testid=\"stMain\"] "
        "[data-testid=\"stImage\"] img')]; return im.length >= n && "
        "im.slice(0, n).every(i => i.complete && i.naturalWidth > 0); }", arg=n)


def _heading(page, title: str, timeout: float = STEP_MS) -> None:
    page.locator("h1", has_text=re.compile(rf"^\s*{title}\s*$")).first.wait_for(timeout=timeout)


def _wait_for(page, locator, timeout_s: float = STEP_MS / 1000) -> None:
    """Wait for locator, or fail at once with the message of an error box that shows up instead."""
    error = page.locator('[data-testid="stAlertContentError"], [data-testid="stException"]')
    locator.or_(error).first.wait_for(timeout=timeout_s * 1000)
    if not locator.count() and error.count():
        pytest.fail(f"the app showed an error: {error.first.inner_text()}")


def _no_exceptions(page) -> None:
    exc = page.locator('[data-testid="stException"]')
    assert exc.count() == 0, exc.first.inner_text()


def _metric(page, label: str) -> str:
    m = _main(page).locator('[data-testid="stMetric"]', has_text=label).first
    return m.locator('[data-testid="stMetricValue"]').inner_text().strip()


def _files_in(folder: Path) -> list[Path]:
    """Files the scanner sees: everything but names starting with '.'."""
    out = []
    for root, dirs, files in os.walk(folder):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        out.extend(Path(root, f) for f in files if not f.startswith("."))
    return out


# -- the walk ----------------------------------------------------------------------------------
def test_index_cluster_browse_search(app_url: str, library_dir: Path, page, tmp_path: Path) -> None:
    photos = shared_set("dlib_johns")
    files = _files_in(photos)
    not_images = [f for f in files if f.suffix.lower() not in {".jpg", ".jpeg", ".png"}]
    assert [f.name for f in not_images] == ["SOURCE.txt"], not_images

    # An empty library: every page explains itself instead of failing.
    page.goto(app_url)
    _heading(page, "Index")
    page.get_by_text("is empty: index a folder to start").wait_for()
    _go(page, "Clusters")
    page.get_by_text("The library is empty").wait_for()
    _go(page, "Search")
    page.get_by_text("The library is empty").wait_for()
    _no_exceptions(page)
    _shot(page, tmp_path, "0-empty-search")

    # Index the folder from the Index page; clustering is left for its own button.
    _go(page, "Index")
    page.get_by_label("Folder to index", exact=True).fill(str(photos))
    page.get_by_label("Folder to index", exact=True).press("Enter")
    auto = page.get_by_label("Cluster right after indexing", exact=True)
    for attempt in range(3):  # the rerun from Enter can replace the checkbox under the click
        _settled(page)
        try:
            auto.uncheck(force=True)
            break
        except PlaywrightError:
            if attempt == 2:
                raise
    assert not auto.is_checked()
    page.get_by_role("button", name="Index folder").click()
    _wait_for(page, _main(page).locator('[data-testid="stMetric"]', has_text="Files seen"),
              INDEX_S)
    assert _metric(page, "Files seen") == str(len(files))
    assert _metric(page, "New") == str(len(files))  # SOURCE.txt is new too, and skipped
    assert _metric(page, "Removed") == "0"
    n_items = int(_metric(page, "Photos added"))  # the whole-image model's items are photos
    assert n_items == len(files) - len(not_images)  # one whole-image item per photo
    table = _main(page).locator('[data-testid="stTable"]')
    row = table.locator("tr", has_text="SOURCE.txt")
    assert "not an image" in row.inner_text()
    _no_exceptions(page)
    _shot(page, tmp_path, "1-index")

    # Not clustered yet: the Clusters page says so and offers the button.
    _go(page, "Clusters")
    page.get_by_text("not clustered yet").wait_for()
    expect(_main(page).get_by_role("button", name="Cluster", exact=True)).to_be_visible()

    # Cluster from the Index page (the index summary is still there), with the default profile.
    _go(page, "Index")
    assert _metric(page, "Files seen") == str(len(files))
    page.get_by_role("button", name="Cluster", exact=True).click()
    _wait_for(page, page.get_by_text(re.compile(r"Grouped \d+ photos into \d+ (person|people)")))
    _no_exceptions(page)

    # Clusters: counts, galleries with real thumbnails, unsorted, and the map.
    _go(page, "Clusters")
    main = _main(page)
    main.locator('[data-testid="stPlotlyChart"]').first.wait_for()
    assert _metric(page, "Photos") == str(n_items)
    n_clusters, n_unsorted = int(_metric(page, "Clusters")), int(_metric(page, "Unsorted"))
    assert n_clusters >= 1 and n_clusters * 2 + n_unsorted <= n_items
    # each group is shown as its person ("Person 12"), never as a cluster number
    headings = main.locator("h3", has_text=re.compile(r"^(Person \d+|Unsorted) · \d+ photos?$"))
    expect(headings).to_have_count(min(n_clusters, 10) + (1 if n_unsorted else 0))
    thumbs = main.locator('[data-testid="stImage"] img')
    # every cluster has at least 2 items, so the page shows at least that many thumbnails
    expect(thumbs.nth(min(n_items, 2 * min(n_clusters, 10)) - 1)).to_be_attached()
    _images_loaded(page, 5)
    _no_exceptions(page)
    _shot(page, tmp_path, "2-clusters")

    # People: one tile per person (a person per cluster so far), each with a real thumbnail.
    _go(page, "People")
    views = main.get_by_role("button", name="View", exact=True)
    expect(views).to_have_count(min(n_clusters, 24))
    _images_loaded(page, min(n_clusters, 24))
    # Open the largest person and name it; its photos show with tick boxes for a split.
    first_label = main.locator('[data-testid="stMarkdownContainer"] strong').first.inner_text()
    assert re.fullmatch(r"Person \d+", first_label), first_label
    views.first.click()
    dialog = page.get_by_role("dialog")
    detail = dialog.get_by_text(re.compile(rf"^{first_label} · \d+ photos?$"))
    detail.wait_for()
    _settled(page)
    size = int(re.search(r"· (\d+) photo", detail.inner_text()).group(1))
    expect(dialog.get_by_role("checkbox", name=re.compile(r"^#\d+$"))).to_have_count(min(size, 48))
    _images_loaded(page, min(n_clusters, 24))
    _shot(page, tmp_path, "people-detail")
    # thumbnails are built once and kept in the library folder
    assert len(list((library_dir / "thumbnails").glob("*.jpg"))) >= min(n_clusters, 24)
    dialog.get_by_label("Name", exact=True).fill("Test Person")
    dialog.get_by_role("button", name="Save name").click()
    _wait_for(page, page.get_by_role("dialog").get_by_text(f"Named {first_label} “Test Person”."))
    _no_exceptions(page)

    page.get_by_role("dialog").get_by_role("button", name="Close").click()
    expect(page.get_by_role("dialog")).to_have_count(0)
    page.wait_for_url(lambda u: "person=" not in u)  # the app has heard of it: no person to reopen

    # After a reload (a new session) the name is stored: on the People grid and on Clusters.
    page.reload()
    _heading(page, "People")
    expect(main.locator('[data-testid="stMarkdownContainer"] strong').first).to_have_text(
        "Test Person")
    _images_loaded(page, min(n_clusters, 24))
    _no_exceptions(page)
    _shot(page, tmp_path, "people")
    _go(page, "Clusters")
    main.locator("h3", has_text=re.compile(r"^Test Person · \d+ photos?$")).wait_for()

    # Search with a photo of that person: it must come back first, as itself, under the new name.
    from peoplemap.library import Library

    with Library.open(library_dir) as lib:
        person = lib.person("Test Person")
        assert person.size == size
        query = Path(sorted(it.path for it in lib.items(ids=person.item_ids))[0])
    _go(page, "Search")
    page.locator('[data-testid="stFileUploader"] input[type="file"]').set_input_files(str(query))
    top = main.locator('[data-testid="stMarkdownContainer"]', has_text=re.compile(r"#1 · "))
    _wait_for(page, top, INDEX_S)
    assert query.name in top.first.inner_text()
    assert "Test Person" in top.first.inner_text()
    assert float(re.search(r"similarity ([\d.]+)", top.first.inner_text()).group(1)) >= 0.99
    hits = main.locator('[data-testid="stMarkdownContainer"]', has_text=re.compile(r"^#\d+ · "))
    expect(hits).to_have_count(K)
    expect(main.get_by_text("similarity")).to_have_count(K)
    expect(main.locator('[data-testid="stImage"] img')).to_have_count(K + 1)  # hits + the query
    # who the photo is, said once (the hits below carry their own names)
    expect(main.locator('[data-testid="stMarkdownContainer"]', has_text=re.compile(
        r"^(This is Test Person\.|Probably Test Person: a guess.*)$"))).to_have_count(1)
    _no_exceptions(page)
    _shot(page, tmp_path, "3-search")

    # A file that is not an image, under an image name: a readable error, not a traceback.
    page.locator('[data-testid="stFileUploader"] input[type="file"]').set_input_files(
        {"name": "not-a-photo.jpg", "mimeType": "image/jpeg", "buffer": b"hello, not a JPEG"})
    err = main.locator('[data-testid="stAlertContentError"]')
    err.first.wait_for()
    assert "not an image" in err.first.inner_text()
    _no_exceptions(page)
    _shot(page, tmp_path, "4-search-error")
