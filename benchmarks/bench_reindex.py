"""Re-indexing an unchanged folder of 10,000 images: how long does the no-op take?

    .venv/bin/python benchmarks/bench_reindex.py [--n 10000] [--rounds 5] [--model mobilenetv2]
        [--json] [--no-results]

Generates N small distinct JPEGs (96x128, 100 per folder) in a temporary folder, indexes them once
with the model (mobilenetv2 by default; `--model fake` uses a 4x4-colour stand-in registered by this
script, for a quick run), then re-indexes the unchanged folder R times, two ways, interleaved:

  library  `Library.index(folder, model=...)` in this process (library already open): what the app
           and the Python API pay: model load check, folder scan, diff against the catalog;
  cli      `python -m peoplemap.cli index FOLDER --library L --model M` as a new process: what a
           user waits for, Python start and imports included.

Reported: the first index's rate, and the median and max seconds of each re-index (target: the CLI
median < 5 s). Every re-index must report N unchanged files and add nothing, or the script fails.
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import REPO_ROOT, append_result, machine, median, print_json  # noqa: E402

TARGET_S = 5.0
PER_FOLDER = 100


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def make_small_jpegs(root: Path, n: int, seed: int = 0) -> None:
    """n distinct 96x128 JPEGs (a random 4x3 colour field upsampled, plus noise), 100 per folder."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    for i in range(n):
        folder = root / f"d{i // PER_FOLDER:04d}"
        if i % PER_FOLDER == 0:
            folder.mkdir(parents=True, exist_ok=True)
        field = rng.integers(0, 256, (4, 3, 3)).astype(np.float32)
        img = np.kron(field, np.ones((32, 32, 1), np.float32)) + rng.normal(0, 6, (128, 96, 3))
        Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(folder / f"img{i:05d}.jpg", quality=85)


def register_fake() -> None:
    """`--model fake`: a whole-image 48-d model (the image shrunk to 4x4), no weights."""
    import numpy as np
    from PIL import Image

    from peoplemap.embed.base import ModelBase, l2_normalize
    from peoplemap.embed.registry import register

    class Fake(ModelBase):
        name, version, dim, item_kind, decode_max_side = "fake", "1", 48, "image", 64

        def __init__(self, settings: object = None, **_: object) -> None:
            pass

        def describe(self) -> dict:
            return {"model": self.name, "version": self.version}

        def embed(self, crops: list) -> "np.ndarray":
            out = np.array([np.asarray(Image.fromarray(c).resize((4, 4), Image.BOX), np.float32).ravel() - 127.5
                            for c in crops], np.float32).reshape(len(crops), 48)
            return l2_normalize(out)

    register("fake", "benchmark stand-in: 4x4 colour")(Fake)


def reindex_library(lib: object, folder: Path, model: str, n: int) -> dict:
    t = time.perf_counter()
    s = lib.index(folder, model=model)  # type: ignore[attr-defined]
    wall = time.perf_counter() - t
    if s.unchanged != n or s.items_added or s.new or s.changed or s.removed:
        raise SystemExit(f"re-index was not a no-op: {s.to_json()}")
    return {"seconds": round(wall, 4), "stage_seconds": s.stage_seconds}


def reindex_cli(folder: Path, libdir: Path, model: str, n: int) -> dict:
    cmd = [sys.executable, "-m", "peoplemap.cli", "index", str(folder), "--library", str(libdir),
           "--model", model, "--json"]
    t = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO_ROOT)
    wall = time.perf_counter() - t
    if proc.returncode != 0:
        raise SystemExit(f"peoplemap index failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    s = json.loads(proc.stdout)
    if s["unchanged"] != n or s["items_added"] or s["new"] or s["changed"]:
        raise SystemExit(f"CLI re-index was not a no-op: {s}")
    return {"seconds": round(wall, 4), "index_seconds": round(s["seconds"], 4)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=10_000, help="number of images (default 10000)")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--model", default="mobilenetv2", help="mobilenetv2 (default) or fake (no model)")
    ap.add_argument("--json", action="store_true", help="print the full JSON (default: summary)")
    ap.add_argument("--no-results", action="store_true", help="do not append to RESULTS.md")
    args = ap.parse_args()
    if args.n < 1 or args.rounds < 1:
        raise SystemExit("--n and --rounds must be positive")
    if args.model == "fake":
        register_fake()
        cli_ok = False  # the stand-in exists only in this process
    else:
        cli_ok = True
    from peoplemap import Library

    runs: dict[str, list[dict]] = {"library": [], "cli": []} if cli_ok else {"library": []}
    with tempfile.TemporaryDirectory(prefix="peoplemap-reindex-") as tmp_name:
        tmp = Path(tmp_name)
        folder, libdir = tmp / "photos", tmp / "lib"
        t = time.perf_counter()
        make_small_jpegs(folder, args.n)
        log(f"made {args.n} JPEGs in {time.perf_counter() - t:.1f} s; first index with {args.model}")
        with Library.open(libdir, create=True) as lib:
            t = time.perf_counter()
            first = lib.index(folder, model=args.model)
            first_s = time.perf_counter() - t
            if first.items_added != args.n:
                raise SystemExit(f"first index added {first.items_added} items, expected {args.n}")
            log(f"first index: {first_s:.1f} s ({args.n / first_s:.0f} images/s)")
            reindex_library(lib, folder, args.model, args.n)  # warm: page cache, imports, session
        for r in range(args.rounds):
            order = list(runs) if r % 2 == 0 else list(reversed(runs))
            for k in order:
                if k == "library":
                    with Library.open(libdir) as lib:
                        res = reindex_library(lib, folder, args.model, args.n)
                else:
                    res = reindex_cli(folder, libdir, args.model, args.n)
                res["round"] = r + 1
                runs[k].append(res)
                log(f"round {r + 1}/{args.rounds} {k}: {res['seconds']} s")

    secs = {k: [x["seconds"] for x in v] for k, v in runs.items()}
    result = {
        "benchmark": "bench_reindex", "target_s": TARGET_S, "images": args.n, "model": args.model,
        "rounds": args.rounds, "first_index_s": round(first_s, 2),
        "first_index_images_per_s": round(args.n / first_s, 1),
        "reindex_s_median": {k: round(median(v), 3) for k, v in secs.items()},
        "reindex_s_max": {k: round(max(v), 3) for k, v in secs.items()},
        "machine": machine(("openvino",)), "runs": runs,
    }
    table = [{"images": args.n, "model": args.model, "re-index": k, "median s": round(median(v), 3),
              "max s": round(max(v), 3), "target s": TARGET_S} for k, v in secs.items()]
    command = ".venv/bin/python benchmarks/bench_reindex.py " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    if not args.no_results:
        append_result("Re-indexing an unchanged folder", result, command, table=table,
                      notes="Median over rounds of re-indexing the unchanged folder: in-process "
                            "(Library.index on an opened library) and as a new `peoplemap index` process "
                            f"(Python start and imports included). Target: < {TARGET_S} s for 10k images.")
    print_json(result if args.json else {"machine": result["machine"], "table": table,
                                         "first_index_images_per_s": result["first_index_images_per_s"]})


if __name__ == "__main__":
    main()
