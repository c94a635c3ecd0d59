"""Throughput of the mobilenetv2 embedder: bare model, preprocessing, and embed() end to end.

    python benchmarks/bench_embed.py [--data DIR] [--n 512] [--batch 32] [--repeats 7] [--threads 0]

Prints one JSON object with median and best rates. Images are decoded once with PIL before timing
(decode is timed separately); the ONNX export, if not cached yet, happens before timing.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from dataclasses import replace
from pathlib import Path
from typing import Callable

import numpy as np
from PIL import Image

from peoplemap.config import load_settings
from peoplemap.embed.mobilenetv2 import MobileNetV2Embedder
from peoplemap.embed.onnx_session import default_threads

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "cuhk01_campus_first486"
SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp"}


def timed(fn: Callable[[], object], repeats: int) -> tuple[float, float]:
    """(median, best) seconds; best is the steadier figure on a machine shared with other jobs."""
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times), min(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--n", type=int, default=512)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--threads", type=int, default=0)
    args = ap.parse_args()

    files = sorted(p for p in args.data.rglob("*") if p.suffix.lower() in SUFFIXES)[: args.n]
    t = time.perf_counter()
    images = [np.asarray(Image.open(p).convert("RGB")) for p in files]
    decode_s = time.perf_counter() - t

    settings = replace(load_settings(), batch_size=args.batch, threads=args.threads)
    emb = MobileNetV2Embedder(settings)
    t = time.perf_counter()
    emb.embed(images[:1])  # export (first run only) and session load
    first_use_s = time.perf_counter() - t

    x = emb.preprocess(images[: args.batch])
    emb.run_tensor(x)  # warm-up
    model_s = timed(lambda: emb.run_tensor(x), args.repeats)
    outer = max(1, args.repeats // 2)
    prep_s = timed(lambda: emb.preprocess(images), outer)
    embed_s = timed(lambda: emb.embed(images), outer)
    rate = lambda n, s: {"median": round(n / s[0], 1), "best": round(n / s[1], 1)}  # noqa: E731

    sizes = [im.shape[:2] for im in images]
    print(json.dumps({
        "model": emb.name, "version": emb.version,
        "images": len(images), "data": str(args.data),
        "image_hw_median": [int(np.median([s[0] for s in sizes])), int(np.median([s[1] for s in sizes]))],
        "batch": args.batch, "threads": args.threads or default_threads(), "cpu_count": os.cpu_count(),
        "cpu": platform.processor() or platform.machine(),
        "first_use_s": round(first_use_s, 3),
        "decode_img_per_s": round(len(images) / decode_s, 1),
        "model_img_per_s": rate(args.batch, model_s),
        "model_ms_per_batch_median": round(model_s[0] * 1000, 2),
        "preprocess_img_per_s": rate(len(images), prep_s),
        "embed_img_per_s": rate(len(images), embed_s),
        "repeats": args.repeats,
    }, indent=2))


if __name__ == "__main__":
    main()
