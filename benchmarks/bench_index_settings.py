"""`Library.index` under different Settings (decode workers, onnxruntime threads, batch size), interleaved.

    .venv/bin/python benchmarks/bench_index_settings.py [--dataset cuhk01|jpeg12mp] [--limit N]
        [--rounds 3] [--variant default --variant workers=1,threads=1 ...] [--json] [--no-results]

Each variant indexes the same N files into a fresh temporary library; variants run one after
another in an order that rotates every round. Reports median images/s, the ratio to the first
variant, and median stage seconds. Same datasets and symlink folder as bench_index.py.
"""
from __future__ import annotations

import argparse
import os
import shlex
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_index import STAGES, dataset_files, log, symlink_farm, warm_page_cache  # noqa: E402
from common import append_result, machine, median, print_json, ratio  # noqa: E402

from peoplemap import Library  # noqa: E402
from peoplemap.config import Settings, load_settings  # noqa: E402

DEFAULT_VARIANTS = ["default", "workers=1", "threads=1", "workers=1,threads=1", "workers=3,threads=1"]


def parse_variant(text: str) -> dict[str, int]:
    if text == "default":
        return {}
    out = {}
    for part in text.split(","):
        key, _, value = part.partition("=")
        if key not in ("workers", "threads", "batch_size") or not value.isdigit():
            raise SystemExit(f"bad variant {text!r}: use default or workers=N,threads=N,batch_size=N")
        out[key] = int(value)
    return out


def index_once(folder: Path, n: int, settings: Settings, tmp_root: Path) -> dict:
    libdir = Path(tempfile.mkdtemp(prefix="lib-", dir=tmp_root))
    try:
        with Library.open(libdir, create=True, settings=settings) as lib:
            t = time.perf_counter()
            s = lib.index(folder, model="mobilenetv2")
            wall = time.perf_counter() - t
    finally:
        shutil.rmtree(libdir, ignore_errors=True)
    if s.items_added != n:
        raise RuntimeError(f"indexed {s.items_added} of {n}")
    return {"images_per_s": round(n / wall, 2), "seconds": round(wall, 3), "stage_seconds": s.stage_seconds}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", default="jpeg12mp", choices=["cuhk01", "jpeg12mp"])
    ap.add_argument("--limit", type=int, default=None)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--variant", action="append", help=f"repeatable; default {DEFAULT_VARIANTS}")
    ap.add_argument("--jpeg-count", type=int, default=200)
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--no-results", action="store_true")
    args = ap.parse_args()
    variants = args.variant or DEFAULT_VARIANTS
    settings = {v: load_settings(**parse_variant(v)) for v in variants}

    files = dataset_files(args.dataset, args.limit, args.jpeg_count)
    n = len(files)
    runs: dict[str, list[dict]] = {v: [] for v in variants}
    with tempfile.TemporaryDirectory(prefix="peoplemap-bench-") as tmp:
        root = Path(tmp)
        farm = symlink_farm(files, root / "farm")
        warm = symlink_farm(files[:8], root / "warm")
        warm_page_cache(files)
        for v in variants:  # load each variant's onnxruntime session before timing
            index_once(warm, len(files[:8]), settings[v], root)
        for r in range(args.rounds):
            k = r % len(variants)
            for v in variants[k:] + variants[:k]:
                res = index_once(farm, n, settings[v], root)
                runs[v].append(res)
                log(f"{args.dataset} round {r + 1}/{args.rounds} {v}: {res['images_per_s']} images/s "
                    f"{res['stage_seconds']}")

    base = median([x["images_per_s"] for x in runs[variants[0]]])
    rows = []
    for v in variants:
        med = median([x["images_per_s"] for x in runs[v]])
        st = {s: round(median([x["stage_seconds"].get(s, 0.0) for x in runs[v]]), 3) for s in STAGES}
        rows.append({"variant": v, "images/s": round(med, 2), f"vs {variants[0]}": ratio(med, base),
                     "stages s (scan/decode_wait/detect/embed/write)": "/".join(f"{st[s]:g}" for s in STAGES)})
    data = {"benchmark": "bench_index_settings", "dataset": args.dataset, "images": n,
            "rounds": args.rounds, "machine": machine(), "table": rows, "runs": runs}
    command = ".venv/bin/python benchmarks/bench_index_settings.py " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    if not args.no_results:
        append_result(f"Index settings on {args.dataset} ({n} images)", data, command, table=rows,
                      notes="Medians over rounds, variants interleaved (rotating order) in one process.")
    print_json(data if args.json else {"machine": data["machine"], "table": rows})


if __name__ == "__main__":
    main()
