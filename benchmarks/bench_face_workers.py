"""Face-mode indexing with one worker process vs two: does `face` use every core?

    .venv/bin/python benchmarks/bench_face_workers.py [--dataset extended_yaleb_cropped_subset]
        [--limit 240] [--rounds 3] [--workers 1,2] [--json] [--no-results]

The `face` model (dlib) holds the GIL and runs on one core, so `Library.index` spreads images over
`Settings.workers` spawned worker processes (each decodes, detects and embeds; only boxes and
vectors come back). With workers=1 everything runs in the indexing process. Each round indexes the
same N files (a temporary folder of symlinks to ../shared/data, nothing copied) into a fresh
temporary library once per worker count, the order rotating from round to round; the time is the
whole `Library.index` call: loading the models in the main process, spawning and initialising the
workers, and the work. Reported: median images/s per worker count and the ratio of medians
(target: workers=2 / workers=1 >= 1.7 on 2 cores). Every run must find the same faces with the same
vectors as the first run, or the script fails.
"""
from __future__ import annotations

import argparse
import gc
import os
import shlex
import sys
import tempfile
import time
from pathlib import Path

# Only light imports at module level: spawned workers import this module again as __mp_main__.
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import SHARED_DATA, append_result, image_files, machine, median, print_json, ratio  # noqa: E402

TARGET = 1.7


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def symlink_farm(files: list[str], dest: Path) -> Path:
    base = os.path.commonpath([os.path.dirname(f) for f in files])
    for f in files:
        link = dest / os.path.relpath(f, base)
        link.parent.mkdir(parents=True, exist_ok=True)
        os.symlink(f, link)
    return dest


def run_index(folder: Path, workers: int, tmp: Path) -> tuple[dict, dict]:
    """Index `folder` with the face model into a fresh library; (timing, {path: vectors})."""
    from dataclasses import replace

    import numpy as np

    from peoplemap import Library
    from peoplemap.config import load_settings

    libdir = Path(tempfile.mkdtemp(prefix=f"lib-w{workers}-", dir=tmp))
    settings = replace(load_settings(), workers=workers)
    with Library.open(libdir, create=True, settings=settings) as lib:
        t = time.perf_counter()
        s = lib.index(folder, model="face")
        wall = time.perf_counter() - t
        ids, X = lib.vectors("face")
        row = {int(i): k for k, i in enumerate(ids)}
        by_path: dict[str, list] = {}
        for it in lib.items("face"):
            by_path.setdefault(it.path, []).append(X[row[it.id]])
        vectors = {p: np.stack(v) for p, v in by_path.items()}
    n = s.files_seen
    return ({"images_per_s": round(n / wall, 3), "seconds": round(wall, 3), "items": s.items_added,
             "images_without_items": s.images_without_items, "skipped": len(s.skipped),
             "stage_seconds": s.stage_seconds}, vectors)


def same_vectors(a: dict, b: dict) -> bool:
    import numpy as np

    return a.keys() == b.keys() and all(a[p].shape == b[p].shape and np.allclose(a[p], b[p], atol=1e-5)
                                        for p in a)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", default="extended_yaleb_cropped_subset", help="a face set under ../shared/data")
    ap.add_argument("--limit", type=int, default=240, help="first N images in scan order (default 240)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--workers", default="1,2", help="worker counts to compare; the first is the baseline")
    ap.add_argument("--json", action="store_true", help="print the full JSON (default: summary)")
    ap.add_argument("--no-results", action="store_true", help="do not append to RESULTS.md")
    args = ap.parse_args()
    counts = [int(w) for w in args.workers.split(",")]
    if args.rounds < 1 or args.limit < 1 or len(counts) < 2 or min(counts) < 1:
        raise SystemExit("--rounds and --limit must be positive; --workers needs two or more counts >= 1")
    root = SHARED_DATA / args.dataset
    if not root.is_dir():
        raise SystemExit(f"dataset not found: {root}")
    files = [f for f in image_files(root, None) if f"{os.sep}_" not in f][:args.limit]

    runs: dict[int, list[dict]] = {w: [] for w in counts}
    with tempfile.TemporaryDirectory(prefix="peoplemap-face-workers-") as tmp_name:
        tmp = Path(tmp_name)
        farm = symlink_farm(files, tmp / "farm")
        log(f"{args.dataset}: {len(files)} files; warm-up (imports, model files into the page cache)")
        warm = symlink_farm(files[:4], tmp / "warm")
        run_index(warm, 1, tmp)
        reference = None
        for r in range(args.rounds):
            order = counts[r % len(counts):] + counts[:r % len(counts)]
            for w in order:
                gc.collect()
                res, vectors = run_index(farm, w, tmp)
                if reference is None:
                    reference = vectors
                elif not same_vectors(reference, vectors):
                    raise SystemExit(f"workers={w} found different faces or vectors than the first run")
                res["round"], res["position"] = r + 1, order.index(w)
                runs[w].append(res)
                log(f"round {r + 1}/{args.rounds} workers={w}: {res['images_per_s']} images/s "
                    f"({res['seconds']} s, {res['items']} faces)")

    med = {w: median([x["images_per_s"] for x in v]) for w, v in runs.items()}
    base = counts[0]
    result = {
        "benchmark": "bench_face_workers", "target_ratio": TARGET, "dataset": args.dataset,
        "images": len(files), "rounds": args.rounds, "faces": runs[base][0]["items"],
        "images_per_s_median": {str(w): round(v, 2) for w, v in med.items()},
        "ratio_over_workers_%d" % base: {str(w): ratio(med[w], med[base]) for w in counts[1:]},
        "machine": machine(("dlib-bin",)), "runs": {str(w): v for w, v in runs.items()},
    }
    table = [{"dataset": f"{args.dataset} ({len(files)} img)", "workers": w,
              "images/s (median)": round(med[w], 2), "s (median)": median([x["seconds"] for x in runs[w]]),
              f"ratio over workers={base}": ratio(med[w], med[base])} for w in counts]
    command = ".venv/bin/python benchmarks/bench_face_workers.py " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    if not args.no_results:
        append_result("Face-mode indexing: worker processes", result, command, table=table,
                      notes=f"Library.index(model='face') with Settings.workers = {counts}, interleaved rounds "
                            f"(rotating order), ratio of medians. Target: workers=2 / workers=1 >= {TARGET} "
                            "on 2 cores.")
    print_json(result if args.json else {"machine": result["machine"], "table": table})


if __name__ == "__main__":
    main()
