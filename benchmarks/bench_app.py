"""The app at 100k items: People, Clusters and Search pages timed in headless Chromium.

    .venv/bin/python benchmarks/bench_app.py                 # 3,200 and 100,000 items, 3 rounds
    .venv/bin/python benchmarks/bench_app.py --items 100000 --rounds 5 --no-results

Builds (once, then reused from --dir) a library per --items size: generated 384x384 JPEGs, each a
4x4 grid of 96-pixel "faces" (one person's 4x4 colour layout plus noise), indexed with
`Library.index` and `benchgrid`, a fast fake face model registered here (a grid cell is a face, its
vector the cell shrunk to 4x4 RGB, 48-d). People have geometric sizes (mean ~6.5: ~13k people at
100k items). `Library.cluster` runs as usual (HDBSCAN over a kNN graph at this size, cannot-link,
label storage, people, the saved model for search). The FAISS index is built once, before timing.

Each round starts the app (through a wrapper that registers benchgrid) with the thumbnail cache
deleted and times, from `page.goto` in a new tab (a new session) until the first screen is drawn:
  index_page          the Index page: the floor set by Streamlit itself
  people_cold         People page, first grid of thumbnails loaded; no thumbnail cached anywhere
  people_warm         the same again (thumbnails in memory and on disk)
  people_open_person  then a click on the largest person's View until its items and forms show
  clusters_cold       Clusters page, metrics and the map drawn (first visit: the map is computed)
  clusters_all_cold   ... and every gallery thumbnail of its first page loaded
  clusters_warm, clusters_all_warm   the same again
  search_page         Search page, uploader shown
  search_first        a photo uploaded until its hits show (the index and clustering model load)
  search_again        another photo
  people_restart, clusters_restart   after an app restart: thumbnails from disk only
  index_new_browser, people_new_browser   in a new browser profile (Streamlit's files downloaded)
and reports medians, the map's drawn point count, the People page's tiles and pager, the Clusters
page's thumbnails, the thumbnail cache's size and how many thumbnails a restart rewrote. Appends
a section to RESULTS.md unless --no-results.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import append_result, machine, median, print_json  # noqa: E402

MODEL = "benchgrid"
CELL = 96
GRID = 4
"""Images are GRID x GRID cells of CELL pixels; every cell is one face of one person."""
MEAN_SIZE = 6.5
MAX_SIZE = 150
NOISE = 10
DEFAULT_DIR = Path("/tmp/peoplemap-bench/app")
CHROMIUM = os.environ.get("PEOPLEMAP_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic",
                 "--no-proxy-server"]
PROXY_VARS = {"http_proxy", "https_proxy", "all_proxy", "no_proxy", "ftp_proxy"}
STEP_MS = 120_000
VIEWPORT = {"width": 1400, "height": 1000}


# -- the fake face model (the app process registers it too, by importing this module) ------------
def _register() -> None:
    from peoplemap.embed.base import ModelBase, l2_normalize
    from peoplemap.embed.registry import register
    from peoplemap.types import Region

    class GridFaces(ModelBase):
        """Every CELL x CELL cell of the image is a "face"; its vector is the cell shrunk to 4x4."""

        name = MODEL
        version = "1"
        dim = 48
        item_kind = "face"
        decode_max_side = None

        def __init__(self, **_: object):
            pass

        def describe(self) -> dict:
            return {"model": self.name, "version": self.version, "cell": CELL,
                    "preprocessing": "4x4 box resize"}

        def detect(self, image: np.ndarray) -> list:
            h, w = image.shape[:2]
            return [Region(box=(x, y, CELL, CELL)) for y in range(0, h - CELL + 1, CELL)
                    for x in range(0, w - CELL + 1, CELL)]

        def embed(self, crops) -> np.ndarray:
            out = np.stack([_small(c) for c in crops]) if len(crops) else np.zeros((0, 48))
            return l2_normalize(out.astype(np.float32))

    register(MODEL, "benchmark-only: 4x4 grid of 96-px faces, 4x4 colour embedding")(GridFaces)


def _small(pixels: np.ndarray) -> np.ndarray:
    """4x4 block means of an RGB crop minus mid-grey, as a 48-vector (what the model embeds)."""
    h, w = pixels.shape[0] // 4 * 4, pixels.shape[1] // 4 * 4
    a = pixels[:h, :w].astype(np.float32).reshape(4, h // 4, 4, w // 4, 3).mean(axis=(1, 3))
    return a.reshape(-1) - 127.5


_register()


# -- building the library ------------------------------------------------------------------------
def _plan(n_items: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(person of each item in build order, 4x4x3 layout of each person). Items of a person are
    spread over different images (round robin), so no photo holds one person twice."""
    rng = np.random.default_rng(seed)
    sizes = []
    total = 0
    while total < n_items:
        s = int(min(MAX_SIZE, rng.geometric(1 / MEAN_SIZE)))
        s = min(s, n_items - total)
        sizes.append(s)
        total += s
    person = np.repeat(np.arange(len(sizes)), sizes)
    per_image = GRID * GRID
    n_images = math.ceil(n_items / per_image)
    slot = np.arange(n_items)
    order = np.empty(n_items, dtype=np.int64)  # item k of the plan goes to image k % n, cell k // n
    order[(slot % n_images) * per_image + slot // n_images] = slot
    layouts = rng.integers(20, 236, size=(len(sizes), 4, 4, 3)).astype(np.float32)
    return person[order], layouts


def _write_images(args: tuple[Path, int, int, np.ndarray, np.ndarray, int]) -> None:
    from PIL import Image

    folder, start, stop, persons, layouts, seed = args
    per_image = GRID * GRID
    for i in range(start, stop):
        path = folder / f"{i // 1000:03d}" / f"img_{i:05d}.jpg"
        if path.exists():
            continue
        rng = np.random.default_rng(seed * 1_000_003 + i)
        img = np.full((GRID * CELL, GRID * CELL, 3), 127, np.int16)
        for k, p in enumerate(persons[i * per_image:(i + 1) * per_image]):
            y, x = (k // GRID) * CELL, (k % GRID) * CELL
            img[y:y + CELL, x:x + CELL] = np.kron(layouts[p], np.ones((CELL // 4, CELL // 4, 1)))
        img += rng.integers(-NOISE, NOISE + 1, size=img.shape, dtype=np.int16)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(tmp, "JPEG", quality=85)
        os.replace(tmp, path)


def build(folder: Path, n_items: int, seed: int, workers: int) -> dict:
    """The library under folder/lib (made once for these parameters, then reused)."""
    from peoplemap.library import Library

    spec = {"items": n_items, "seed": seed, "cell": CELL, "grid": GRID, "mean_size": MEAN_SIZE,
            "max_size": MAX_SIZE, "noise": NOISE, "version": 2}
    marker = folder / "build.json"
    lib_dir = folder / "lib"
    if marker.exists() and json.loads(marker.read_text()).get("spec") == spec:
        return json.loads(marker.read_text())
    shutil.rmtree(folder, ignore_errors=True)
    photos = folder / "photos"
    photos.mkdir(parents=True)
    persons, layouts = _plan(n_items, seed)
    per_image = GRID * GRID
    n_images = math.ceil(n_items / per_image)
    t0 = time.perf_counter()
    step = math.ceil(n_images / (4 * workers))
    jobs = [(photos, a, min(n_images, a + step), persons, layouts, seed)
            for a in range(0, n_images, step)]
    if workers > 1:
        from concurrent.futures import ProcessPoolExecutor

        with ProcessPoolExecutor(workers) as pool:
            list(pool.map(_write_images, jobs))
    else:
        for j in jobs:
            _write_images(j)
    t_images = time.perf_counter() - t0

    lib = Library.open(lib_dir, create=True)
    t0 = time.perf_counter()
    summary = lib.index(photos, model=MODEL)
    t_index = time.perf_counter() - t0

    t0 = time.perf_counter()
    cs = lib.cluster(model=MODEL)
    t_cluster = time.perf_counter() - t0
    people = lib.people(MODEL)
    info = {
        "spec": spec,
        "library": str(lib_dir),
        "images": n_images,
        "items": summary.items_added,
        "people": len(people),
        "clusters": cs.n_clusters,
        "unsorted": cs.n_noise,
        "largest_person": people[0].size if people else 0,
        "expected_people": int((np.bincount(persons, minlength=len(layouts)) >= 2).sum()),
        "photos_mb": round(sum(f.stat().st_size for f in photos.rglob("*.jpg")) / 2 ** 20, 1),
        "library_mb": round(sum(f.stat().st_size for f in lib_dir.rglob("*") if f.is_file())
                            / 2 ** 20, 1),
        "build_seconds": {"images": round(t_images, 1), "index": round(t_index, 1),
                          "cluster": round(t_cluster, 1)},
    }
    lib.close()
    marker.write_text(json.dumps(info, indent=2))
    return info


def search_index(folder: Path) -> dict:
    """Load (or, the first time, build and save) the library's FAISS index, as the first search
    would: timed here once, so the app's search timings are those of a library searched before."""
    from peoplemap.library import Library
    from peoplemap.searching import vector_index

    lib = Library.open(folder / "lib")
    try:
        s = lib.vector_set(MODEL)
        path = lib.path / "indexes" / f"set-{s.id}.faiss"
        before = path.stat().st_mtime_ns if path.exists() else None
        t0 = time.perf_counter()
        idx = vector_index(lib, s)
        seconds = round(time.perf_counter() - t0, 2)
        built = before is None or path.stat().st_mtime_ns != before
        return {"kind": idx.kind, "built_now": built, "seconds": seconds}
    finally:
        lib.close()


# -- the app ---------------------------------------------------------------------------------------
WRAPPER = """import runpy, sys
sys.path.insert(0, {bench!r})
import bench_app  # registers the benchgrid model in the app's process
runpy.run_path({app!r}, run_name="__main__")
"""


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _no_proxy_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k.lower() not in PROXY_VARS}


class App:
    """The Streamlit app over the bench library, as a child process (via a wrapper script that
    registers the bench model first)."""

    def __init__(self, folder: Path, port: int):
        from peoplemap.ui import launch

        self.lib = folder / "lib"
        self.log = folder / "streamlit.log"
        wrapper = folder / "app_with_benchgrid.py"
        wrapper.write_text(WRAPPER.format(bench=str(Path(__file__).resolve().parent),
                                          app=str(launch.APP)))
        self.port = port
        self.url = f"http://127.0.0.1:{self.port}"
        cmd = [str(wrapper) if c == str(launch.APP) else c
               for c in launch.app_command(str(self.lib), port=self.port, address="127.0.0.1")]
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT,
                                         env=_no_proxy_env())
        self._wait_healthy(60)

    def _wait_healthy(self, deadline_s: float) -> None:
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        deadline = time.monotonic() + deadline_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the app exited:\n{self.log.read_text()[-3000:]}")
            try:
                with opener.open(self.url + "/_stcore/health", timeout=2) as r:
                    if r.status == 200:
                        return
            except OSError:
                pass
            try:
                self.proc.wait(timeout=0.2)
            except subprocess.TimeoutExpired:
                pass
        self.stop()
        raise RuntimeError(f"the app did not start in {deadline_s} s:\n"
                           f"{self.log.read_text()[-3000:]}")

    def rss_mb(self) -> float | None:
        try:
            for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    return round(int(line.split()[1]) / 1024, 1)
        except OSError:
            pass
        return None

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=15)


# -- browser timings -------------------------------------------------------------------------------
IMAGES_LOADED = """n => { const im = [...document.querySelectorAll(
    '[data-testid="stMain"] [data-testid="stImage"] img')];
    return im.length >= n && im.slice(0, n).every(i => i.complete && i.naturalWidth > 0); }"""
MAP_POINTS = """() => { const gd = document.querySelector(
    '[data-testid="stPlotlyChart"] .js-plotly-plot');
    if (!gd || !gd.data || !gd.querySelector('.main-svg')) return 0;
    const n = x => !x ? 0 : x.bdata !== undefined
        ? atob(x.bdata).length / parseInt(x.dtype.slice(1)) : x.length;
    return gd.data.reduce((k, t) => k + n(t.x), 0); }"""
"""Points in the drawn map: numpy arrays reach plotly.js as base64 ("bdata") typed arrays."""


class _Tab:
    """A new tab (a new app session) in the shared browser context, closed afterwards."""

    def __init__(self, ctx):
        self.page = ctx.new_page()
        self.page.set_default_timeout(STEP_MS)

    def __enter__(self):
        return self.page

    def __exit__(self, *exc: object) -> None:
        self.page.close()


def _index(ctx, url: str) -> float:
    """The Index page (no library reads beyond counts): the floor set by Streamlit itself."""
    with _Tab(ctx) as pg:
        t0 = time.perf_counter()
        pg.goto(url + "/index")
        pg.get_by_text("Folder to index").wait_for()
        pg.wait_for_function(
            "() => !document.querySelector('[data-testid=\"stStatusWidgetRunningIcon\"]')")
        return time.perf_counter() - t0


def _people(ctx, url: str, n_tiles: int, open_first: bool = False) -> tuple[float, dict]:
    """Seconds to the People grid; with open_first, also the seconds from clicking the first
    person's View button until its items (and the merge, split, forget forms) are shown."""
    with _Tab(ctx) as pg:
        t0 = time.perf_counter()
        pg.goto(url + "/people")
        pg.wait_for_function(IMAGES_LOADED, arg=n_tiles, polling="raf")
        s = time.perf_counter() - t0
        main = pg.locator('[data-testid="stMain"]')
        pg.wait_for_function(
            "() => !document.querySelector('[data-testid=\"stStatusWidgetRunningIcon\"]')")
        views = main.get_by_role("button", name="View", exact=True)
        seen: dict[str, Any] = {"tiles": views.count(),
                                "pager": main.get_by_text("People page", exact=True).count() > 0}
        if open_first:
            t0 = time.perf_counter()
            views.first.click()
            person = pg.get_by_role("dialog")  # a person opens in a dialog over the grid
            person.get_by_role("button", name="Split selected").wait_for()
            person.locator('[data-testid="stExpander"] summary',
                           has_text="Forget this person").wait_for()
            pg.wait_for_function(IMAGES_LOADED, arg=n_tiles + 2, polling="raf")
            pg.wait_for_function(
                "() => !document.querySelector('[data-stale=\"true\"], "
                "[data-testid=\"stStatusWidgetRunningIcon\"]')")
            seen["open_s"] = time.perf_counter() - t0
        return s, seen


def _clusters(ctx, url: str, n_thumbs: int) -> tuple[float, float, int, int]:
    """(seconds to the map, seconds to all n_thumbs gallery thumbnails, points drawn, thumbnails
    shown)."""
    with _Tab(ctx) as pg:
        t0 = time.perf_counter()
        pg.goto(url + "/clusters")
        pg.wait_for_function(MAP_POINTS, polling="raf")
        t_map = time.perf_counter() - t0
        pg.wait_for_function(IMAGES_LOADED, arg=n_thumbs, polling="raf")
        t_all = time.perf_counter() - t0
        points = int(pg.evaluate(MAP_POINTS))
        n_img = pg.locator('[data-testid="stMain"] [data-testid="stImage"] img').count()
        return t_map, t_all, points, n_img


def _search(ctx, url: str, queries: list[Path]) -> tuple[float, list[float]]:
    """(seconds to the uploader, seconds per query until its hits are shown)."""
    with _Tab(ctx) as pg:
        t0 = time.perf_counter()
        pg.goto(url + "/search")
        upload = pg.locator('[data-testid="stFileUploader"] input[type="file"]')
        upload.wait_for(state="attached")
        t_page = time.perf_counter() - t0
        out = []
        for q in queries:
            t0 = time.perf_counter()
            upload.set_input_files(str(q))
            # the top hit of a photo in the library is a face of that photo
            pg.locator('[data-testid="stMarkdownContainer"]',
                       has_text=f"#1 · {q.parent.name}/{q.name}").first.wait_for()
            pg.wait_for_function(IMAGES_LOADED, arg=3, polling="raf")
            pg.wait_for_function(
                "() => !document.querySelector('[data-stale=\"true\"], "
                "[data-testid=\"stStatusWidgetRunningIcon\"]')")
            out.append(time.perf_counter() - t0)
        return t_page, out


def _clusters_thumbs(lib_dir: Path) -> int:
    """Thumbnails on the Clusters page's first page: its galleries and the unsorted one."""
    from peoplemap.library import Library
    from peoplemap.ui.pages_clusters import CLUSTERS_PER_PAGE, MAX_THUMBS

    with Library.open(lib_dir) as lib:
        shown = [c.size for c in lib.clusters(MODEL)[:CLUSTERS_PER_PAGE]]
        shown.append(len(lib.unsorted(MODEL)))
    return sum(min(n, MAX_THUMBS) for n in shown)


def _thumb_cache(lib: Path) -> dict:
    files = list((lib / "thumbnails").glob("*.jpg"))
    return {"files": len(files), "kb": round(sum(f.stat().st_size for f in files) / 1024, 1)}


def _mtimes(lib: Path) -> dict[str, int]:
    return {f.name: f.stat().st_mtime_ns for f in (lib / "thumbnails").glob("*.jpg")}


def run_round(browser, folder: Path, info: dict, r: int, port: int) -> dict:
    """One round on one library: a new app with no thumbnail cache, then again after a restart."""
    from peoplemap.ui.pages_people import PEOPLE_PER_PAGE

    lib = folder / "lib"
    photos = sorted((folder / "photos").rglob("*.jpg"))
    n_tiles = min(PEOPLE_PER_PAGE, info["people"])
    n_thumbs = info["clusters_page_thumbs"]
    url = f"http://127.0.0.1:{port}"
    shutil.rmtree(lib / "thumbnails", ignore_errors=True)
    row: dict[str, Any] = {"items": info["items"], "round": r + 1}
    ctx = browser.new_context(viewport=VIEWPORT)
    try:
        app = App(folder, port)
        try:
            row["index_new_browser"] = _index(ctx, url)  # downloads Streamlit's own files
            row["index_page"] = _index(ctx, url)
            row["people_cold"], seen = _people(ctx, url, n_tiles)
            row["people_tiles"], row["people_pager"] = seen["tiles"], seen["pager"]
            row["thumbs_after_people"] = _thumb_cache(lib)["files"]
            row["people_warm"], seen = _people(ctx, url, n_tiles, open_first=True)
            row["people_open_person"] = seen["open_s"]
            (row["clusters_cold"], row["clusters_all_cold"], row["map_points"],
             row["clusters_thumbs"]) = _clusters(ctx, url, n_thumbs)
            row["clusters_warm"], row["clusters_all_warm"], _, _ = _clusters(ctx, url, n_thumbs)
            queries = [photos[(r * 7 + 3) % len(photos)], photos[(r * 11 + 5) % len(photos)]]
            row["search_page"], (row["search_first"], row["search_again"]) = _search(
                ctx, url, queries)
            row["app_rss_mb"] = app.rss_mb()
        finally:
            app.stop()
        before = _mtimes(lib)
        app = App(folder, port)  # same port: the browser's cache of Streamlit's files still holds
        try:
            row["people_restart"], _ = _people(ctx, url, n_tiles)
            row["clusters_restart"], row["clusters_all_restart"], _, _ = _clusters(
                ctx, url, n_thumbs)
            fresh = browser.new_context(viewport=VIEWPORT)
            try:
                row["people_new_browser"], _ = _people(fresh, url, n_tiles)
            finally:
                fresh.close()
        finally:
            app.stop()
    finally:
        ctx.close()
    after = _mtimes(lib)
    row["thumbs_rewritten_after_restart"] = sum(1 for k, v in before.items() if after.get(k) != v)
    row["thumb_cache"] = _thumb_cache(lib)
    for k, v in row.items():
        if isinstance(v, float):
            row[k] = round(v, 3)
    print(json.dumps(row), file=sys.stderr, flush=True)
    return row


TIMED = ["index_new_browser", "index_page", "people_cold", "people_warm", "people_restart",
         "people_new_browser", "people_open_person", "clusters_cold", "clusters_warm",
         "clusters_restart", "clusters_all_cold", "clusters_all_warm", "clusters_all_restart",
         "search_page", "search_first", "search_again"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--items", type=int, nargs="+", default=[3_200, 100_000],
                    help="library sizes, rounded up to whole photos of 16 faces (default: a small "
                         "library for reference and the 100k one)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--dir", type=Path, default=DEFAULT_DIR, help="libraries and photos (reused)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1,
                    help="processes generating the images")
    ap.add_argument("--build-only", action="store_true")
    ap.add_argument("--no-results", action="store_true", help="do not append to RESULTS.md")
    args = ap.parse_args()

    libs = []
    for items in args.items:
        n_items = math.ceil(items / (GRID * GRID)) * GRID * GRID  # whole photos: every cell a face
        folder = args.dir / f"items{n_items}-seed{args.seed}"
        info = build(folder, n_items, args.seed, args.workers)
        info["search_index"] = search_index(folder)
        info["clusters_page_thumbs"] = _clusters_thumbs(folder / "lib")
        print(json.dumps(info), file=sys.stderr, flush=True)
        libs.append((folder, info))
    if args.build_only:
        print_json([info for _f, info in libs])
        return

    from playwright.sync_api import sync_playwright

    from peoplemap.ui.pages_clusters import MAP_POINTS as MAP_LIMIT

    rows: dict[int, list[dict]] = {info["items"]: [] for _f, info in libs}
    port = _free_port()  # one origin for every app start, so the browser's HTTP cache stays valid
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS,
                                    env=_no_proxy_env())
        try:
            for r in range(args.rounds):  # sizes interleaved, so load on the machine hits both
                for folder, info in libs:
                    rows[info["items"]].append(run_round(browser, folder, info, r, port))
        finally:
            browser.close()

    sizes = {}
    for folder, info in libs:
        rs = rows[info["items"]]
        sizes[info["items"]] = {
            "library": info,
            "median_s": {k: round(median([r[k] for r in rs]), 3) for k in TIMED},
            "map_points": sorted({r["map_points"] for r in rs}),
            "people_tiles": sorted({r["people_tiles"] for r in rs}),
            "people_pager": all(r["people_pager"] for r in rs),
            "clusters_thumbs": sorted({r["clusters_thumbs"] for r in rs}),
            "thumb_cache_after_round": rs[-1]["thumb_cache"],
            "thumbs_rewritten_after_restart": [r["thumbs_rewritten_after_restart"] for r in rs],
            "app_rss_mb": median([r["app_rss_mb"] for r in rs]),
            "runs": rs,
        }
    data = {
        "machine": machine(extra_packages=("streamlit", "plotly", "playwright")),
        "rounds": args.rounds,
        "map_points_limit": MAP_LIMIT,
        "target": "People page first screen < 2 s at 100k items",
        "sizes": sizes,
    }
    print_json(data)
    if args.no_results:
        return
    table = []
    for k in TIMED:
        row: dict[str, Any] = {"page (median s)": k}
        for n, d in sizes.items():
            row[f"{n} items"] = d["median_s"][k]
        table.append(row)
    big = sizes[max(sizes)]
    lib_lines = "; ".join(
        f"{n}: {d['library']['images']} photos, {d['library']['people']} people, "
        f"{d['library']['unsorted']} unsorted, built in {d['library']['build_seconds']}"
        for n, d in sizes.items())
    notes = (
        f"Libraries of generated 384x384 JPEGs holding 16 faces each ({lib_lines}). Headless "
        f"Chromium via playwright, {VIEWPORT['width']}x{VIEWPORT['height']}; each time is from "
        f"`page.goto` in a new tab (a new app session; the browser already holds Streamlit's own "
        f"files, except in `*_new_browser`) until the page's first screen is drawn: the People "
        f"grid's thumbnails loaded, the Clusters map drawn (`clusters_all_*`: every gallery "
        f"thumbnail of its first page loaded too), the Search uploader shown, a query's hits "
        f"shown. "
        f"`*_cold`: new app process, thumbnail cache deleted; `*_warm`: second visit; "
        f"`*_restart`: new app process, thumbnails on disk. {args.rounds} rounds, sizes "
        f"interleaved; medians. At {max(sizes)} items: the map draws {big['map_points']} points "
        f"(limit {MAP_LIMIT}); People shows {big['people_tiles']} tiles a page with a pager; the "
        f"Clusters page {big['clusters_thumbs']} thumbnails; the thumbnail cache after a round "
        f"holds {big['thumb_cache_after_round']['files']} files, "
        f"{big['thumb_cache_after_round']['kb']} KiB; thumbnails rewritten after a restart: "
        f"{big['thumbs_rewritten_after_restart']}; app RSS {big['app_rss_mb']} MB. The FAISS "
        f"index is built once before timing ({big['library']['search_index']}), as a library "
        f"searched before would have it. Target: People first screen < 2 s.")
    cmd = ".venv/bin/python benchmarks/bench_app.py"
    if args.items != ap.get_default("items"):
        cmd += " --items " + " ".join(str(n) for n in args.items)
    if args.rounds != ap.get_default("rounds"):
        cmd += f" --rounds {args.rounds}"
    append_result("App at scale (bench_app.py)", data, cmd, table=table, notes=notes)


if __name__ == "__main__":
    main()
