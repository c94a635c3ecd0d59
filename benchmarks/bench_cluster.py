"""Clustering scaling: `Clusterer(profile).fit(X)` on generated identity embeddings of growing N.

Each (profile, N) runs in its own subprocess (so its peak RSS is its own, read from VmHWM, and it
can be killed at its budget). N grows until a run exceeds its budget or the script's
--max-seconds would be passed; every size after a "> budget" run is skipped for that profile.
Reports fit seconds (data generation excluded), peak RSS, BCubed P/R/F against the generating
labels, n_clusters and the noise fraction. Writes benchmarks/plots/cluster_scaling.png.

    .venv/bin/python benchmarks/bench_cluster.py --max-seconds 600 --budget 120
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import BENCH_DIR, append_result, machine, print_json  # noqa: E402
from make_embeddings import make_embeddings, peak_rss_mb, rss_mb, run_child  # noqa: E402

DEFAULT_NS = (1_000, 3_000, 10_000, 30_000, 100_000, 300_000, 1_000_000)
SEED_NS = (1_000, 3_000, 10_000)


def child(profile: str, n: int, seed: int, algorithm: str = "auto") -> None:
    import numpy as np

    from peoplemap.cluster import Clusterer
    from peoplemap.evaluate import bcubed_prf
    from peoplemap.types import NOISE

    import hdbscan  # noqa: F401  (imported before timing: fit imports it lazily)
    import sklearn.decomposition  # noqa: F401

    X, y = make_embeddings(n, seed=seed)
    base = rss_mb()
    t0 = time.perf_counter()
    c = Clusterer(profile, algorithm=algorithm).fit(X)
    fit_s = time.perf_counter() - t0
    p, r, f = bcubed_prf(y, c.labels_)
    out = {"profile": profile, "algorithm": c.params_["algorithm"], "n": n, "identities": int(y.max() + 1), "fit_s": round(fit_s, 3),
           "peak_rss_mb": peak_rss_mb(), "rss_before_fit_mb": base,
           "bcubed_p": round(p, 4), "bcubed_r": round(r, 4), "bcubed_f": round(f, 4),
           "n_clusters": int(c.n_clusters_), "noise_fraction": round(float(np.mean(c.labels_ == NOISE)), 4)}
    print(json.dumps(out))


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a1, a2) = plt.subplots(1, 2, figsize=(11, 4.2))
    for prof, mk in (("default", "o-"), ("seed", "s--")):
        ok = [r for r in rows if r["profile"] == prof and r.get("status") == "ok"]
        if not ok:
            continue
        ns = [r["n"] for r in ok]
        a1.plot(ns, [r["fit_s"] for r in ok], mk, label=f"{prof} profile")
        a2.plot(ns, [r["peak_rss_mb"] for r in ok], mk, label=f"{prof} profile")
        over = [r for r in rows if r["profile"] == prof and r.get("status") == "> budget"]
        for r in over:
            a1.plot([r["n"]], [r["budget_s"]], "x", color="red", ms=10)
            a1.annotate(f"> {r['budget_s']:g} s", (r["n"], r["budget_s"]), textcoords="offset points",
                        xytext=(-20, 6), color="red", fontsize=8)
    ok = [r for r in rows if r.get("status") == "ok" and r["profile"] == "default"]
    if len(ok) >= 2:
        import numpy as np
        ns = np.array([r["n"] for r in ok], float)
        ts = np.array([r["fit_s"] for r in ok], float)
        ref = ts[-1] * (ns / ns[-1]) ** 2
        a1.plot(ns, ref, ":", color="gray", label="O(N^2) through last point")
    a1.set(xscale="log", yscale="log", xlabel="N (vectors, 128-d)", ylabel="fit seconds",
           title="Clusterer.fit time")
    a2.set(xscale="log", yscale="log", xlabel="N (vectors, 128-d)", ylabel="peak RSS MB (whole process)",
           title="Clusterer.fit peak memory")
    for a in (a1, a2):
        a.grid(True, which="both", alpha=0.3)
        a.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--budget", type=float, default=120.0, help="seconds per run (default 120)")
    ap.add_argument("--max-seconds", type=float, default=900.0, help="whole script (default 900)")
    ap.add_argument("--ns", type=int, nargs="*", default=list(DEFAULT_NS))
    ap.add_argument("--seed-ns", type=int, nargs="*", default=list(SEED_NS))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--algorithm", default="auto",
                    help="Clusterer algorithm for the default profile: auto (exact HDBSCAN up to 5,000 "
                         "points, kNN graph above), best (exact), knn-graph")
    ap.add_argument("--no-results", action="store_true")
    ap.add_argument("--child", nargs=2, metavar=("PROFILE", "N"), help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        child(a.child[0], int(a.child[1]), a.seed, a.algorithm)
        return

    t_start = time.perf_counter()
    rows: list[dict] = []
    plan = [("seed", n) for n in a.seed_ns] + [("default", n) for n in a.ns]
    stopped: set[str] = set()
    for prof, n in plan:
        left = a.max_seconds - (time.perf_counter() - t_start)
        if prof in stopped:
            rows.append({"profile": prof, "n": n, "status": "skipped (a smaller N exceeded the budget)"})
            continue
        if left < 5:
            rows.append({"profile": prof, "n": n, "status": "skipped (--max-seconds reached)"})
            continue
        budget = min(a.budget, left)
        res = run_child([sys.executable, __file__, "--child", prof, str(n), "--seed", str(a.seed),
                         "--algorithm", a.algorithm if prof == "default" else "auto"], budget)
        res.setdefault("profile", prof)
        res.setdefault("n", n)
        rows.append(res)
        print(json.dumps(res), file=sys.stderr, flush=True)
        if res.get("status") != "ok":
            stopped.add(prof)

    png = BENCH_DIR / "plots" / ("cluster_scaling.png" if a.algorithm == "auto" else f"cluster_scaling-{a.algorithm}.png")
    try:
        plot(rows, png)
    except ImportError:
        png = None
    data = {"machine": machine(extra_packages=("hdbscan", "scikit-learn")), "budget_s": a.budget,
            "max_seconds": a.max_seconds, "seed": a.seed, "plot": str(png) if png else None,
            "generator": "make_embeddings.py: geometric identity sizes 1..20, within cos ~0.7-0.86, 128-d",
            "runs": rows}
    print_json(data)
    if not a.no_results:
        cmd = (f".venv/bin/python benchmarks/bench_cluster.py --budget {a.budget:g} --max-seconds {a.max_seconds:g}"
               f" --ns {' '.join(map(str, a.ns))} --seed-ns {' '.join(map(str, a.seed_ns))} --algorithm {a.algorithm}")
        table = [{"profile": r["profile"], "algorithm": r.get("algorithm"), "N": r["n"], "status": r.get("status"), "fit_s": r.get("fit_s"),
                  "peak_rss_mb": r.get("peak_rss_mb"), "bcubed_f": r.get("bcubed_f"),
                  "bcubed_p": r.get("bcubed_p"), "bcubed_r": r.get("bcubed_r"),
                  "n_clusters": r.get("n_clusters"), "identities": r.get("identities"),
                  "noise_fraction": r.get("noise_fraction")} for r in rows]
        notes = ("Generated identity embeddings (`make_embeddings.py`), one subprocess per run, fit time only; "
                 "peak RSS is the whole child process (Python + numpy + data + fit). "
                 + (f"Plot: [plots/cluster_scaling.png](plots/cluster_scaling.png)\n\n"
                    f"![cluster scaling](plots/cluster_scaling.png)" if png else "No plot (matplotlib missing)."))
        append_result("Clustering scaling (bench_cluster.py)", data, cmd, table=table, notes=notes)


if __name__ == "__main__":
    main()
