"""Bare-model throughput: intra-op threads vs batches run in parallel on single-thread sessions.

    .venv/bin/python benchmarks/bench_model_threads.py [--n 512] [--rounds 5] [--no-results]

Variants, interleaved on the same preprocessed CUHK01 batches of 32 (rotating order):
  intra-T   one session with T intra-op threads, batches one after another (what peoplemap does);
  data-P    P single-thread sessions, P Python threads each running its own batches at once
            (onnxruntime releases the GIL), i.e. parallelism across batches instead of inside ops.
Question answered: on a small or busy machine, which uses the cores better?
"""
from __future__ import annotations

import argparse
import os
import shlex
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import SHARED_DATA, append_result, image_files, machine, median, print_json, ratio  # noqa: E402

import numpy as np  # noqa: E402

from peoplemap.config import load_settings  # noqa: E402
from peoplemap.embed.mobilenetv2 import MobileNetV2Embedder  # noqa: E402
from peoplemap.embed.onnx_session import _new_session, default_threads  # noqa: E402
from peoplemap.ingest import read_image  # noqa: E402

BATCH = 32


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=512)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--no-results", action="store_true")
    args = ap.parse_args()
    cores = default_threads()
    emb = MobileNetV2Embedder(replace(load_settings(), batch_size=BATCH))
    emb.run_tensor(np.zeros((1, 3, 224, 224), np.float32))  # exports if not cached
    files = image_files(SHARED_DATA / "cuhk01_campus_first486", args.n)
    px = [read_image(p, min_side=224)[1].pixels for p in files]
    batches = [emb.preprocess(px[i:i + BATCH]) for i in range(0, len(px), BATCH)]
    path = str(emb.onnx_path)

    variants = {}
    for t in sorted({1, cores}):
        s = _new_session(path, t)
        variants[f"intra-{t}"] = (lambda s=s: [s.run(None, {"input": b}) for b in batches])
    if cores > 1:
        singles = [_new_session(path, 1) for _ in range(cores)]
        pool = ThreadPoolExecutor(max_workers=cores)

        def data_parallel() -> None:
            def worker(k: int) -> None:
                for b in batches[k::cores]:
                    singles[k].run(None, {"input": b})
            list(pool.map(worker, range(cores)))
        variants[f"data-{cores}"] = data_parallel
    for fn in variants.values():
        fn()  # warm-up
    names = list(variants)
    times: dict[str, list[float]] = {k: [] for k in names}
    for r in range(args.rounds):
        k0 = r % len(names)
        for k in names[k0:] + names[:k0]:
            t = time.perf_counter()
            variants[k]()
            times[k].append(time.perf_counter() - t)
    n = sum(len(b) for b in batches)
    rate = {k: round(n / median(v), 1) for k, v in times.items()}
    base = f"intra-{cores}"
    rows = [{"variant": k, "images/s": v, f"vs {base}": ratio(v, rate[base])} for k, v in rate.items()]
    data = {"benchmark": "bench_model_threads", "images": n, "batch": BATCH, "rounds": args.rounds,
            "cores": cores, "images_per_s_median": rate, "table": rows,
            "seconds": {k: [round(x, 3) for x in v] for k, v in times.items()}, "machine": machine()}
    if not args.no_results:
        command = ".venv/bin/python benchmarks/bench_model_threads.py " + " ".join(shlex.quote(a) for a in sys.argv[1:])
        append_result("Bare model: intra-op threads vs parallel single-thread sessions", data, command,
                      table=rows, notes="Same preprocessed CUHK01 batches of 32, interleaved, medians.")
    print_json({"machine": data["machine"], "table": rows})


if __name__ == "__main__":
    main()
