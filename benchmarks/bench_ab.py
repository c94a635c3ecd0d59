"""Two versions of peoplemap on the same workloads, interleaved (A B A B ...), medians and ratios.

    git worktree add /tmp/pm-a <commit>          # the version to compare against
    .venv/bin/python benchmarks/bench_ab.py --a /tmp/pm-a/src --b src --rounds 2 \
        --workload index-mobilenet index-face scale-100k

Each run is a fresh subprocess whose PYTHONPATH puts that version's `src` first, so both use the
same venv and the same workload code (this file); the machine is shared, so only ratios taken in
one interleaved run mean anything. Workloads:
- index-mobilenet: `Library.index` of cuhk01 (1,944 PNGs) with mobilenetv2, images/s
- index-face: `Library.index` of extended_yaleb_cropped_subset (719 faces) with the face model, images/s
- index-celeba: `Library.index` of celeba_wild_dev (1,222 in-the-wild photos) with the face model, images/s
- cluster-faces: the default clustering with the face model's distances (`Clusterer("default",
  link_distance=0.32, merge_distance=0.345)`) of 33,000 generated unit vectors: 3,000 people of 10
  noisy faces and 3,000 strangers, seconds
- scale-100k / scale-1m: bench_scale.py's child at N = 100k / 1M generated identity vectors:
  write, `Library.cluster`, `assign_new` 1%, search index build and search p50
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from common import SHARED_DATA, append_result, machine, median, print_json  # noqa: E402

INDEX_CHILD = """
import json, sys, tempfile, time
from pathlib import Path
from peoplemap import Library
folder, model = sys.argv[1], sys.argv[2]
with tempfile.TemporaryDirectory() as tmp:
    lib = Library.open(Path(tmp) / "lib", create=True)
    t = time.perf_counter()
    s = lib.index(folder, model=model)
    dt = time.perf_counter() - t
    print(json.dumps({"images_per_s": round(s.files_seen / dt, 2), "seconds": round(dt, 2),
                      "items": s.items_added}))
"""

CLUSTER_CHILD = """
import json, time
import numpy as np
from peoplemap.cluster import Clusterer
rng = np.random.default_rng(0)
people = rng.normal(size=(3000, 128))
people /= np.linalg.norm(people, axis=1, keepdims=True)
Z = np.vstack([np.repeat(people, 10, 0) + 0.022 * rng.normal(size=(30000, 128)), rng.normal(size=(3000, 128))])
Z = (Z / np.linalg.norm(Z, axis=1, keepdims=True)).astype(np.float32)
t = time.perf_counter()
m = Clusterer("default", link_distance=0.32, merge_distance=0.345).fit(Z)
print(json.dumps({"cluster_s": round(time.perf_counter() - t, 2), "clusters": m.n_clusters_}))
"""

WORKLOADS = {
    "index-mobilenet": ("index", "cuhk01_campus_first486", "mobilenetv2"),
    "index-face": ("index", "extended_yaleb_cropped_subset", "face"),
    "index-celeba": ("index", "celeba_wild_dev", "face"),
    "cluster-faces": ("cluster", None, None),
    "scale-100k": ("scale", 100_000, None),
    "scale-1m": ("scale", 1_000_000, None),
}
SCALE_KEYS = ("write_s", "cluster_s", "assign_s", "search_build_s", "search_p50_ms", "search_p99_ms",
              "bcubed_f", "peak_rss_max_mb")


def run_once(src: str, workload: str, budget: float) -> dict:
    kind, arg, model = WORKLOADS[workload]
    env = {**os.environ, "PYTHONPATH": str(Path(src).resolve())}
    if kind == "index":
        cmd = [sys.executable, "-c", INDEX_CHILD, str(SHARED_DATA / arg), model]
    elif kind == "cluster":
        cmd = [sys.executable, "-c", CLUSTER_CHILD]
    else:
        cmd = [sys.executable, str(HERE / "bench_scale.py"), "--child", str(arg)]
    with tempfile.TemporaryDirectory():
        t = time.perf_counter()
        p = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=budget, cwd=HERE.parent)
    if p.returncode != 0:
        raise SystemExit(f"{workload} with {src} failed:\n{p.stderr[-3000:]}")
    last = [line for line in p.stdout.splitlines() if line.startswith("{")][-1]
    out = json.loads(last)
    if kind == "scale":
        out = {k: out[k] for k in SCALE_KEYS if k in out}
    out["wall_s"] = round(time.perf_counter() - t, 1)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--a", required=True, help="the baseline's src folder")
    ap.add_argument("--b", default="src", help="the version measured (default: this checkout's src)")
    ap.add_argument("--workload", nargs="+", default=["index-mobilenet", "index-face", "scale-100k"],
                    choices=list(WORKLOADS))
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--budget", type=float, default=1800.0, help="seconds per run")
    ap.add_argument("--no-results", action="store_true")
    a = ap.parse_args()
    report = {}
    for w in a.workload:
        runs: dict[str, list[dict]] = {"a": [], "b": []}
        for r in range(a.rounds):
            for side, src in (("a", a.a), ("b", a.b)):
                res = run_once(src, w, a.budget)
                runs[side].append(res)
                print(json.dumps({"workload": w, "round": r + 1, "side": side, **res}), file=sys.stderr,
                      flush=True)
        keys = [k for k in runs["a"][0] if isinstance(runs["a"][0][k], (int, float))]
        med = {side: {k: median([x[k] for x in rs if k in x]) for k in keys} for side, rs in runs.items()}
        report[w] = {"a": med["a"], "b": med["b"],
                     "b_over_a": {k: round(med["b"][k] / med["a"][k], 3) for k in keys if med["a"][k]},
                     "runs": runs}
    data = {"machine": machine(), "a": a.a, "b": a.b, "rounds": a.rounds, "report": report}
    print_json({w: {k: v for k, v in r.items() if k != "runs"} for w, r in report.items()})
    if not a.no_results:
        table = [{"workload": w, "metric": k, "A (median)": r["a"][k], "B (median)": r["b"][k],
                  "B / A": r["b_over_a"].get(k)} for w, r in report.items() for k in r["a"]]
        append_result("A/B: two versions interleaved (bench_ab.py)", data,
                      f".venv/bin/python benchmarks/bench_ab.py --a {a.a} --b {a.b} --rounds {a.rounds} "
                      f"--workload {' '.join(a.workload)}", table=table,
                      notes="A B A B in one run; medians; B / A > 1 means B is larger (faster for "
                            "images_per_s, slower for seconds).")


if __name__ == "__main__":
    main()
