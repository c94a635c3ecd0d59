"""Load: many searches at once against one Library, and many requests at once against the app.

- 1,000 searches (image bytes) from 8 threads against one in-process Library of 2,000 generated
  images (fake model, clustered): no errors, k hits each, and RSS growth after a warm-up below
  SEARCH_RSS_LIMIT_MB;
- the app (peoplemap.ui.launch.start_app on 127.0.0.1, a small mobilenetv2 library): 50 concurrent
  GETs of the main page and 50 of /_stcore/health, then concurrent browser sessions each uploading
  a photo on the Search page; every request answered, every session shows its hits, and the
  server's RSS growth stays below APP_RSS_LIMIT_MB.
"""
from __future__ import annotations

import io
import os
import re
import shutil
import subprocess
import threading
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import make_person_images
from peoplemap import Library
from peoplemap.config import Settings
from test_crash import make_jpegs

N_LIBRARY = 2000
N_SEARCHES = 1000
N_THREADS = 8
K = 10
SEARCH_RSS_LIMIT_MB = 100
N_GETS = 50
N_BROWSER_SESSIONS = 6
APP_RSS_LIMIT_MB = 150
"""Growth of the app server's RSS across the load, measured after a first search loaded the model."""


def rss_mb(pid: int | str = "self") -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise KeyError("VmRSS")


def _jpeg(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, "JPEG", quality=90)
    return buf.getvalue()


def test_parallel_searches_in_process(tmp_path: Path, settings: Settings) -> None:
    photos = tmp_path / "photos"
    files = make_jpegs(photos, N_LIBRARY, size=32, seed=3)
    rng = np.random.default_rng(9)
    queries = [_jpeg(rng.integers(0, 256, (48, 40, 3), dtype=np.uint8)) for _ in range(3)]
    queries.append(files[17].read_bytes())  # one that is in the library: it must come back first
    s = Settings(cache_dir=settings.cache_dir, batch_size=64)
    with Library.open(tmp_path / "lib", create=True, settings=s) as lib:
        summary = lib.index(photos, model="fake")
        assert summary.items_added == N_LIBRARY
        from threadpoolctl import threadpool_limits

        # Setup only: one OpenMP thread makes HDBSCAN's many small neighbour queries several
        # times faster on a busy 2-core machine. The searches below run with the defaults.
        with threadpool_limits(limits=1, user_api="openmp"):
            lib.cluster()
        errors: list[BaseException] = []
        served = [0]
        lock = threading.Lock()

        def one(i: int) -> None:
            q = queries[i % len(queries)]
            try:
                res = lib.search(q, k=K)
                assert len(res) == 1 and len(res[0].hits) == K
                d = [h.distance for h in res[0].hits]
                assert d == sorted(d)
                if q is queries[-1]:
                    assert res[0].hits[0].path == str(files[17]) and d[0] < 1e-3
                with lock:
                    served[0] += 1
            except BaseException as e:  # noqa: BLE001
                with lock:
                    errors.append(e)

        with ThreadPoolExecutor(N_THREADS) as pool:
            list(pool.map(one, range(100)))  # warm-up: FAISS index, cluster model, connections
            before = rss_mb()
            list(pool.map(one, range(N_SEARCHES)))
        after = rss_mb()
    assert not errors, repr(errors[0])
    assert served[0] == 100 + N_SEARCHES
    print(f"{N_SEARCHES} searches from {N_THREADS} threads: RSS {before:.0f} -> {after:.0f} MB")
    assert after - before < SEARCH_RSS_LIMIT_MB


@pytest.fixture
def app(tmp_path: Path, settings: Settings, monkeypatch):
    """The app on a free 127.0.0.1 port over a small clustered mobilenetv2 library."""
    from test_ui_browser import _free_port, _stop, _wait_healthy
    from peoplemap.ui.launch import start_app

    photos = tmp_path / "photos"
    make_person_images(photos, n_people=4, per_person=5)
    lib_dir = tmp_path / "lib"
    with Library.open(lib_dir, create=True, settings=settings) as lib:
        lib.index(photos, model="mobilenetv2")
        lib.cluster(min_cluster_size=2)
    monkeypatch.setenv("PEOPLEMAP_CACHE_DIR", settings.cache_dir)
    port = _free_port()
    log = tmp_path / "streamlit.log"
    with open(log, "wb") as out:
        proc = start_app(str(lib_dir), port=port, address="127.0.0.1", stdout=out,
                         stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_healthy(url, proc, log, 60)
        yield url, proc, photos
    finally:
        _stop(proc)


@pytest.mark.slow
@pytest.mark.browser
def test_concurrent_requests_to_the_app(app) -> None:
    sync_api = pytest.importorskip("playwright.sync_api")
    from test_ui_browser import CHROMIUM_ARGS, _no_proxy_env

    url, proc, photos = app
    queries = sorted(photos.rglob("*.jpg"))
    hit_re = re.compile(r"^#\d+ · ")

    def search_in(page, query: Path) -> None:
        page.locator('[data-testid="stFileUploader"] input[type="file"]').set_input_files(str(query))

    def wait_hits(page, query: Path) -> None:
        main = page.locator('[data-testid="stMain"]')
        top = main.locator('[data-testid="stMarkdownContainer"]', has_text=re.compile(r"#1 · "))
        top.first.wait_for()
        assert query.name in top.first.inner_text()  # an indexed photo finds itself first
        sync_api.expect(main.locator('[data-testid="stMarkdownContainer"]', has_text=hit_re)
                        ).to_have_count(K, timeout=60_000)
        assert page.locator('[data-testid="stException"]').count() == 0

    def open_search(browser):
        page = browser.new_context().new_page()
        page.set_default_timeout(120_000)
        page.goto(url + "/search")
        page.locator("h1", has_text="Search").first.wait_for()
        return page

    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=os.environ.get("PEOPLEMAP_CHROMIUM")
                                    or shutil.which("chromium") or None,
                                    headless=True, args=CHROMIUM_ARGS, env=_no_proxy_env())
        try:
            first = open_search(browser)  # warm-up: the server loads the model once
            search_in(first, queries[0])
            wait_hits(first, queries[0])
            before = rss_mb(proc.pid)

            # 50 + 50 plain HTTP requests at once
            opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))

            def get(path: str) -> tuple[int, int]:
                with opener.open(url + path, timeout=60) as r:
                    return r.status, len(r.read())

            with ThreadPoolExecutor(N_GETS) as pool:
                answers = list(pool.map(get, ["/"] * N_GETS + ["/_stcore/health"] * N_GETS))
            assert all(status == 200 and size > 0 for status, size in answers), answers

            # browser sessions searching at the same time: uploads first, then wait for each
            pages = [open_search(browser) for _ in range(N_BROWSER_SESSIONS)]
            chosen = [queries[(3 * i + 1) % len(queries)] for i in range(N_BROWSER_SESSIONS)]
            for page, q in zip(pages, chosen):
                search_in(page, q)
            for page, q in zip(pages, chosen):
                wait_hits(page, q)
            after = rss_mb(proc.pid)
        finally:
            browser.close()
    assert proc.poll() is None
    print(f"app: {len(answers)} HTTP requests and {N_BROWSER_SESSIONS + 1} browser searches served; "
          f"server RSS {before:.0f} -> {after:.0f} MB")
    assert after - before < APP_RSS_LIMIT_MB
