"""Kill -9 in the middle of an index run: the library stays whole and the next run finishes the job.

`peoplemap index` runs in a child process on a generated folder (600 images, batches of 16) with the
real mobilenetv2 model. The test polls the SQLite file through a read-only connection and sends
SIGKILL once at least two batches are committed. Then: the database passes integrity_check, every
committed image has its items and every item its vector, the FAISS index built from the library
holds exactly the item ids; a second run redoes at most one batch, and ends with the same counts
(and vectors) as a clean single run.
"""
from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from peoplemap import Library
from peoplemap.config import Settings
from peoplemap.embed.registry import create_embedder

pytestmark = pytest.mark.slow

N_IMAGES = 600
BATCH = 16
KILL_AFTER = 2 * BATCH
"""Committed images (two batches) to wait for before the SIGKILL."""
START_DEADLINE_S = 120


def make_jpegs(folder: Path, n: int, size: int = 256, seed: int = 0) -> list[Path]:
    """n distinct smooth JPEGs (no two share content, so no vectors are reused by hash)."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        base = rng.integers(0, 256, size=(8, 8, 3)).astype(np.float32)
        img = np.kron(base, np.ones((size // 8, size // 8, 1)))
        img = np.clip(img + rng.normal(0, 4, img.shape), 0, 255).astype(np.uint8)
        p = folder / f"sub{i % 7}" / f"img{i:04d}.jpg"
        p.parent.mkdir(exist_ok=True)
        Image.fromarray(img).save(p, quality=85)
        out.append(p)
    return out


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("crash") / "photos"
    make_jpegs(d, N_IMAGES)
    return d


def child_env(settings: Settings) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PEOPLEMAP_")}
    env.update(PEOPLEMAP_CACHE_DIR=settings.cache_dir, PEOPLEMAP_BATCH_SIZE=str(BATCH))
    return env


def committed(db: Path) -> int:
    """Images whose batch is committed, read through a read-only connection (0 before the file exists)."""
    if not db.exists():
        return 0
    try:
        con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
        try:
            return con.execute("SELECT COUNT(*) FROM processed").fetchone()[0]
        finally:
            con.close()
    except sqlite3.OperationalError:  # schema not created yet
        return 0


def check_whole(lib: Library) -> dict[str, int]:
    """The library after a crash: consistent to the last committed batch."""
    cat = lib.catalog
    assert cat.one("PRAGMA integrity_check")[0] == "ok"
    assert cat.query("PRAGMA foreign_key_check") == []
    n_images = cat.one("SELECT COUNT(*) FROM images")[0]
    n_processed = cat.one("SELECT COUNT(*) FROM processed")[0]
    n_items = cat.one("SELECT COUNT(*) FROM items")[0]
    n_vectors = cat.one("SELECT COUNT(*) FROM vectors")[0]
    assert n_vectors == n_items
    assert n_images == n_processed  # an image row is written in the same transaction as its items
    assert cat.one("SELECT COUNT(*) FROM items i LEFT JOIN vectors v ON v.item_id = i.id "
                   "WHERE v.item_id IS NULL")[0] == 0
    # every processed image has exactly the items it claims (one whole-image item here)
    bad = cat.query("SELECT p.image_id, p.n_items, (SELECT COUNT(*) FROM items i WHERE "
                    "i.image_id = p.image_id AND i.set_id = p.set_id) AS n FROM processed p "
                    "WHERE n != p.n_items OR n != 1")
    assert bad == []
    assert cat.one("SELECT COUNT(*) FROM vectors WHERE length(vector) != 4 * 1280")[0] == 0
    ids, X = lib.vectors("mobilenetv2")
    assert np.isfinite(X).all() and np.allclose(np.linalg.norm(X, axis=1), 1.0, atol=1e-3)
    index_ids = np.sort(lib.index_for("mobilenetv2").ids())
    assert np.array_equal(index_ids, np.sort(ids))
    return dict(images=n_images, items=n_items)


def vectors_by_path(lib: Library) -> dict[str, np.ndarray]:
    ids, X = lib.vectors("mobilenetv2")
    row = {int(i): k for k, i in enumerate(ids)}
    return {it.path: X[row[it.id]] for it in lib.items("mobilenetv2")}


def test_sigkill_mid_index_then_resume(folder: Path, tmp_path: Path, settings: Settings) -> None:
    # Export the model here, so the child spends its time indexing, not exporting.
    create_embedder("mobilenetv2", settings=settings).load()
    lib_dir = tmp_path / "lib"
    db = lib_dir / "library.sqlite"
    cmd = [sys.executable, "-m", "peoplemap.cli", "index", str(folder), "--library", str(lib_dir),
           "--model", "mobilenetv2"]
    log = tmp_path / "first-run.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=child_env(settings))
    try:
        deadline = time.monotonic() + START_DEADLINE_S
        while committed(db) < KILL_AFTER:
            assert proc.poll() is None, f"index ended before the kill:\n{log.read_text()[-3000:]}"
            assert time.monotonic() < deadline, "no two batches committed in time"
            try:
                proc.wait(timeout=0.05)
            except subprocess.TimeoutExpired:
                pass
        proc.send_signal(signal.SIGKILL)
        assert proc.wait(timeout=30) == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()

    done_before = committed(db)  # what really got committed, batches that landed after the poll included
    assert KILL_AFTER <= done_before < N_IMAGES, "the kill did not land mid-run"
    assert done_before % BATCH == 0, f"{done_before} images committed: not whole batches"
    lib = Library.open(lib_dir, settings=settings)
    try:
        counts = check_whole(lib)
        assert counts["images"] == done_before
        status = lib.catalog.query("SELECT status FROM runs WHERE kind='index'")
        assert len(status) == 1 and status[0][0] != "done"  # the killed run never finished
    finally:
        lib.close()

    # The second run picks up where the first stopped.
    second = subprocess.run(cmd + ["--json"], capture_output=True, text=True, timeout=300,
                            env=child_env(settings))
    assert second.returncode == 0, second.stderr[-3000:]
    s = json.loads(second.stdout)
    processed = s["new"] + s["changed"]
    print(f"killed after {done_before}/{N_IMAGES} images; the second run processed {processed}")
    assert processed <= (N_IMAGES - done_before) + BATCH  # at most one batch redone
    assert s["unchanged"] + processed == N_IMAGES == s["files_seen"]
    assert s["skipped"] == [] and s["removed"] == 0

    # The same library as one clean run.
    with Library.open(lib_dir, settings=settings) as resumed, \
            Library.open(tmp_path / "clean", create=True,
                         settings=Settings(cache_dir=settings.cache_dir, batch_size=BATCH)) as clean:
        clean.index(folder, model="mobilenetv2")
        got, want = check_whole(resumed), check_whole(clean)
        assert got == want == dict(images=N_IMAGES, items=N_IMAGES)
        a, b = vectors_by_path(resumed), vectors_by_path(clean)
        assert a.keys() == b.keys()
        cos = np.array([float(a[p] @ b[p]) for p in a])
        assert cos.min() > 0.9999, f"vectors differ from a clean run: min cosine {cos.min()}"
