"""Indexing speed: the seed design's pipeline vs `peoplemap index` vs the bare model, interleaved.

    .venv/bin/python benchmarks/bench_index.py [--dataset cuhk01|jpeg12mp|all] [--limit N]
        [--rounds 3] [--no-design] [--json] [--no-results]

For each dataset and each round, four things run one after the other (never at the same time),
the order rotating from round to round so none always goes first:

  design     the design's pipeline (benchmarks/design_pipeline.py in the TensorFlow venv):
             cv2.imread + resize, then one Keras predict() per image in a ThreadPoolExecutor;
  peoplemap  Library.index(folder, model="mobilenetv2") into a fresh temporary library
             (scan, read + sha256, decode, embed, SQLite writes), ONNX model cache warm;
             then the same folder again, unchanged (the re-index time);
  bare_ort   MobileNetV2Embedder.run_tensor on already-preprocessed (32, 3, 224, 224) batches in
             onnxruntime fp32 (runtime=onnxruntime): the model alone, as the design's successor
             first ran it; the target's yardstick;
  bare_ov    the same tensors in the runtime and precision peoplemap uses by default (OpenVINO,
             bf16 where the CPU has it natively): the ceiling for the index run.

Targets: peoplemap/design >= 10 and peoplemap/bare_ort >= 0.77. Also reported: peoplemap/bare_ov
(how close the index comes to its own model), the runtime and precision that ran, and the cosine
between the bare_ov and bare_ort vectors of the same images.

Datasets: cuhk01 = ../shared/data/cuhk01_campus_first486 (1944 small 60x160 PNGs, read in place);
jpeg12mp = synthetic 4000x3000 JPEGs made once by make_jpegs.py under /tmp/peoplemap-bench. The N
files are the first N in scan order; all pipelines read them through one temporary folder of
symlinks (nothing is copied). Prints JSON and appends a section to benchmarks/RESULTS.md.
"""
from __future__ import annotations

import argparse
import gc
import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import (BENCH_DIR, SHARED_DATA, append_result, image_files, machine,  # noqa: E402
                    median, print_json, ratio)
from make_jpegs import DEFAULT_OUT as JPEG_DIR, ensure_jpegs  # noqa: E402

import numpy as np  # noqa: E402

from peoplemap import Library  # noqa: E402
from peoplemap.config import load_settings  # noqa: E402
from peoplemap.embed.mobilenetv2 import MobileNetV2Embedder  # noqa: E402
from peoplemap.ingest import read_image  # noqa: E402

DESIGN_PY = BENCH_DIR / ".venv-design" / "bin" / "python"
DESIGN_SCRIPT = BENCH_DIR / "design_pipeline.py"
STAGES = ("scan", "decode_wait", "detect", "prepare", "embed", "embed_wait", "write")
TARGETS = {"peoplemap_vs_design": 10.0, "peoplemap_vs_bare_onnxruntime": 0.77}
BATCH = 32


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def dataset_files(name: str, limit: int | None, jpeg_count: int) -> list[str]:
    if name == "cuhk01":
        root = SHARED_DATA / "cuhk01_campus_first486"
        if not root.is_dir():
            raise SystemExit(f"dataset not found: {root}")
        return image_files(root, limit)
    if name == "jpeg12mp":
        n = jpeg_count if limit is None else min(limit, jpeg_count)
        log(f"jpeg12mp: making sure {n} synthetic JPEGs exist in {JPEG_DIR}")
        return [str(p) for p in ensure_jpegs(JPEG_DIR, n)]
    raise SystemExit(f"unknown dataset {name!r}; choose cuhk01, jpeg12mp or all")


def symlink_farm(files: list[str], dest: Path) -> Path:
    """dest/<relative path> -> original file, for every file: the N files as one folder, no copies."""
    base = os.path.commonpath([os.path.dirname(f) for f in files])
    for f in files:
        link = dest / os.path.relpath(f, base)
        link.parent.mkdir(parents=True, exist_ok=True)
        os.symlink(f, link)
    return dest


def warm_page_cache(files: list[str]) -> int:
    total = 0
    for f in files:
        with open(f, "rb") as fh:
            total += len(fh.read())
    return total


# ---- the three contenders ------------------------------------------------------------------------
def run_design(folder: Path, n: int) -> dict:
    t = time.perf_counter()
    proc = subprocess.run([str(DESIGN_PY), str(DESIGN_SCRIPT), str(folder), "--limit", str(n), "--json"],
                          capture_output=True, text=True, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
    wall = time.perf_counter() - t
    if proc.returncode != 0:
        raise RuntimeError(f"design pipeline failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    out = json.loads(proc.stdout[proc.stdout.index("{"):])
    if out["images"] != n:
        raise RuntimeError(f"design pipeline read {out['images']} images, expected {n}")
    return {"images_per_s": out["images_per_s"], "seconds": out["seconds"], "load_s": out["load_s"],
            "extract_s": out["extract_s"], "process_wall_s": round(wall, 2),
            "versions": out["machine"]["packages"]}


def run_peoplemap(folder: Path, n: int, tmp_root: Path) -> dict:
    libdir = Path(tempfile.mkdtemp(prefix="lib-", dir=tmp_root))
    try:
        with Library.open(libdir, create=True) as lib:
            t = time.perf_counter()
            s = lib.index(folder, model="mobilenetv2")
            wall = time.perf_counter() - t
            if s.items_added != n or s.skipped:
                raise RuntimeError(f"peoplemap indexed {s.items_added} items of {n}; skipped {s.skipped[:3]}")
            t = time.perf_counter()
            again = lib.index(folder, model="mobilenetv2")
            rewall = time.perf_counter() - t
            if again.unchanged != n or again.items_added:
                raise RuntimeError(f"re-index was not a no-op: {again.to_json()}")
    finally:
        shutil.rmtree(libdir, ignore_errors=True)
    return {"images_per_s": round(n / wall, 2), "seconds": round(wall, 3),
            "summary_seconds": round(s.seconds, 3), "stage_seconds": s.stage_seconds,
            "reindex_s": round(rewall, 4), "reindex_stage_seconds": again.stage_seconds}


def prepare_bare(files: list[str]) -> tuple[dict[str, MobileNetV2Embedder], list[np.ndarray], dict]:
    """Decode as the index does (draft decoding to >= 224) and preprocess, outside any timing.

    Returns the two bare contenders (onnxruntime fp32; peoplemap's default runtime and precision),
    the tensors, and what the default runs with plus the cosine of its vectors to onnxruntime's.
    """
    settings = replace(load_settings(), batch_size=BATCH)
    models = {"bare_ort": MobileNetV2Embedder(replace(settings, runtime="onnxruntime", precision="fp32"))}
    default = MobileNetV2Embedder(settings)
    default.load()
    info = {k: v for k, v in default.describe().items() if k in ("runtime", "runtime_version", "precision", "threads")}
    if info["runtime"] != "onnxruntime":
        models["bare_ov"] = default
    batches = []
    for i in range(0, len(files), BATCH):
        pixels = [read_image(f, min_side=default.decode_max_side, settings=settings)[1].pixels
                  for f in files[i:i + BATCH]]
        batches.append(default.preprocess(pixels))
    outs = {k: np.concatenate([m.embed_preprocessed(b) for b in batches]) for k, m in models.items()}  # warm-up
    if "bare_ov" in outs:
        cos = (outs["bare_ov"] * outs["bare_ort"]).sum(axis=1)
        info["cosine_to_onnxruntime_fp32"] = {"min": round(float(cos.min()), 4),
                                              "median": round(float(np.median(cos)), 4)}
    return models, batches, info


def run_bare(emb: MobileNetV2Embedder, batches: list[np.ndarray], n: int) -> dict:
    t = time.perf_counter()
    for b in batches:
        emb.run_tensor(b)
    wall = time.perf_counter() - t
    return {"images_per_s": round(n / wall, 2), "seconds": round(wall, 3)}


# ---- one dataset -----------------------------------------------------------------------------------
def bench_dataset(name: str, files: list[str], rounds: int, design: bool, tmp_root: Path) -> dict:
    n = len(files)
    farm = symlink_farm(files, tmp_root / f"farm-{name}")
    nbytes = warm_page_cache(files)
    log(f"{name}: {n} files, {nbytes / 1e6:.1f} MB; preparing bare-model tensors")
    models, batches, runtime = prepare_bare(files)
    log(f"{name}: peoplemap runs {runtime}")
    # peoplemap warm-up: one small index so the ONNX session and imports are loaded before timing.
    warm = symlink_farm(files[:8], tmp_root / f"warm-{name}")
    run_peoplemap(warm, len(files[:8]), tmp_root)

    names = (["design"] if design else []) + ["peoplemap", *models]
    runs: dict[str, list[dict]] = {k: [] for k in names}
    for r in range(rounds):
        order = names[r % len(names):] + names[:r % len(names)]
        for k in order:
            gc.collect()
            log(f"{name} round {r + 1}/{rounds}: {k} ...")
            if k == "design":
                res = run_design(farm, n)
            elif k == "peoplemap":
                res = run_peoplemap(farm, n, tmp_root)
            else:
                res = run_bare(models[k], batches, n)
            res["round"], res["position"] = r + 1, order.index(k)
            runs[k].append(res)
            log(f"    {k}: {res['images_per_s']} images/s ({res['seconds']} s)")
    del batches

    med = {k: median([x["images_per_s"] for x in v]) for k, v in runs.items()}
    pm = runs["peoplemap"]
    stage_med = {s: round(median([x["stage_seconds"].get(s, 0.0) for x in pm]), 3) for s in STAGES}
    own = "bare_ov" if "bare_ov" in runs else "bare_ort"
    bare_s = median([x["seconds"] for x in runs[own]])
    result = {
        "dataset": name, "images": n, "megabytes": round(nbytes / 1e6, 1), "rounds": rounds,
        "runtime": runtime,
        "images_per_s_median": {k: round(v, 2) for k, v in med.items()},
        "ratio_peoplemap_over_design": ratio(med.get("peoplemap"), med.get("design")),
        "ratio_peoplemap_over_bare_onnxruntime": ratio(med["peoplemap"], med["bare_ort"]),
        "ratio_peoplemap_over_bare_own_runtime": ratio(med["peoplemap"], med[own]),
        "peoplemap_seconds_median": round(median([x["seconds"] for x in pm]), 3),
        "peoplemap_stage_seconds_median": stage_med,
        "peoplemap_embed_minus_bare_model_s": round(stage_med["embed"] - bare_s, 3),
        "reindex_unchanged_s_median": round(median([x["reindex_s"] for x in pm]), 4),
        "runs": runs,
    }
    if "design" in runs:
        result["design_load_s_median"] = median([x["load_s"] for x in runs["design"]])
        result["design_extract_s_median"] = median([x["extract_s"] for x in runs["design"]])
    return result


def table_rows(results: list[dict]) -> list[dict]:
    rows = []
    for d in results:
        m = d["images_per_s_median"]
        st = d["peoplemap_stage_seconds_median"]
        rt = d["runtime"]
        rows.append({
            "dataset": f"{d['dataset']} ({d['images']} img)",
            "runtime": f"{rt['runtime']} {rt['precision']}",
            "design img/s": m.get("design"), "peoplemap img/s": m["peoplemap"],
            "bare onnxruntime img/s": m["bare_ort"], "bare own runtime img/s": m.get("bare_ov", m["bare_ort"]),
            "peoplemap/design": d["ratio_peoplemap_over_design"],
            "peoplemap/bare onnxruntime": d["ratio_peoplemap_over_bare_onnxruntime"],
            "peoplemap/bare own runtime": d["ratio_peoplemap_over_bare_own_runtime"],
            "index s": d["peoplemap_seconds_median"],
            "stages s (" + "/".join(STAGES) + ")": "/".join(f"{st[s]:g}" for s in STAGES),
            "re-index s": d["reindex_unchanged_s_median"],
        })
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", default="all", choices=["cuhk01", "jpeg12mp", "all"])
    ap.add_argument("--limit", type=int, default=None, help="first N images of each dataset")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--no-design", action="store_true", help="skip the TensorFlow design pipeline")
    ap.add_argument("--jpeg-count", type=int, default=200, help="synthetic 12 MP JPEGs (default 200)")
    ap.add_argument("--json", action="store_true", help="print the full JSON (default: summary JSON)")
    ap.add_argument("--no-results", action="store_true", help="do not append to RESULTS.md")
    args = ap.parse_args()
    if args.rounds < 1 or (args.limit is not None and args.limit < 1):
        raise SystemExit("--rounds and --limit must be positive")
    design = not args.no_design
    if design and not DESIGN_PY.exists():
        raise SystemExit(f"{DESIGN_PY} is missing: make the TensorFlow venv (README.md) or pass --no-design")

    names = ["cuhk01", "jpeg12mp"] if args.dataset == "all" else [args.dataset]
    results = []
    with tempfile.TemporaryDirectory(prefix="peoplemap-bench-") as tmp:
        for name in names:
            files = dataset_files(name, args.limit, args.jpeg_count)
            results.append(bench_dataset(name, files, args.rounds, design, Path(tmp)))

    data = {"benchmark": "bench_index", "targets": TARGETS, "batch": BATCH,
            "settings": {k: v for k, v in load_settings().__dict__.items()
                         if k in ("threads", "workers", "batch_size", "runtime", "precision")},
            "machine": machine(("openvino",)), "datasets": results}
    command = ".venv/bin/python benchmarks/bench_index.py " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    if not args.no_results:
        append_result("Indexing speed: design pipeline vs peoplemap index vs bare model", data, command,
                      table=table_rows(results),
                      notes="Medians over rounds, run interleaved in one process (rotating order). "
                            "Targets: peoplemap/design >= 10, peoplemap/bare onnxruntime >= 0.77. "
                            "'own runtime' = the runtime and precision peoplemap ran with (column runtime).")
    if args.json:
        print_json(data)
    else:
        print_json({"machine": data["machine"], "table": table_rows(results)})


if __name__ == "__main__":
    main()
