"""Search scaling: `VectorIndex` flat vs pq vs hnsw on generated identity embeddings of growing N.

Per (kind, N) one subprocess (own memory, killed at its budget): build seconds, index memory
(RSS growth over the build), single-query latency p50/p99 with one `search(q, 10)` call per query
as the app does (1,000 perturbed dataset points; stopped after --latency-seconds, the count is
reported), batch throughput (all queries in one call) and, for pq and hnsw, recall@10 against
exact search (hnsw also for each --ef-sweep efSearch). An hnsw build that the 100k build time predicts (x N/100k x 1.2) to exceed the budget is
skipped and the estimate reported. Writes benchmarks/plots/search_scaling.png.

    .venv/bin/python benchmarks/bench_search.py --budget 150 --max-seconds 600
    .venv/bin/python benchmarks/bench_search.py --ns 1000000 --kinds flat pq --budget 600
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import BENCH_DIR, append_result, machine, print_json  # noqa: E402
from make_embeddings import make_embeddings, peak_rss_mb, perturbed_queries, rss_mb, run_child  # noqa: E402

DEFAULT_NS = (10_000, 100_000, 1_000_000)
K = 10


def child(kind: str, n: int, n_queries: int, latency_s: float, seed: int,
          ef_sweep: tuple[int, ...] = (), hnsw: tuple[int, int] | None = None) -> None:
    import faiss
    import numpy as np

    from peoplemap import search as S

    if hnsw:  # try other build parameters than the library's
        S.HNSW_M, S.HNSW_EF_CONSTRUCTION = hnsw

    X, _ = make_embeddings(n, seed=seed)
    ids = np.arange(n, dtype=np.int64)
    Q = perturbed_queries(X, n_queries, seed=seed + 1)
    out: dict = {"kind": kind, "n": n, "queries": n_queries, "faiss_threads": faiss.omp_get_max_threads()}
    if kind != "flat":
        t0 = time.perf_counter()
        _, gt = faiss.knn(Q, X, K)  # exact neighbours (ids == row numbers)
        out["exact_knn_s"] = round(time.perf_counter() - t0, 3)
    if kind == "hnsw":
        out.update(M=S.HNSW_M, ef_construction=S.HNSW_EF_CONSTRUCTION, ef_search=S.HNSW_EF_SEARCH)
    if kind == "pq":
        out.update(k_factor=S.PQ_K_FACTOR)
    base = rss_mb()
    t0 = time.perf_counter()
    idx = S.VectorIndex.build(X, ids, kind=kind)
    out["build_s"] = round(time.perf_counter() - t0, 3)
    out["index_mem_mb"] = round(rss_mb() - base, 1)
    out["vectors_mb"] = round(X.nbytes / 2 ** 20, 1)
    idx.search(Q[0], K)  # warm-up
    lat = []
    t_end = time.perf_counter() + latency_s
    for q in Q:
        t0 = time.perf_counter()
        idx.search(q, K)
        lat.append(time.perf_counter() - t0)
        if time.perf_counter() > t_end:
            break
    lat_ms = np.array(lat) * 1000
    out["latency_queries"] = len(lat)
    out["latency_p50_ms"] = round(float(np.percentile(lat_ms, 50)), 3)
    out["latency_p99_ms"] = round(float(np.percentile(lat_ms, 99)), 3)
    t0 = time.perf_counter()
    _, got = idx.search(Q, K)
    batch_s = time.perf_counter() - t0
    out["batch_s"] = round(batch_s, 3)
    out["batch_qps"] = round(n_queries / batch_s, 1)
    if kind != "flat":
        hit = sum(len(set(g.tolist()) & set(t.tolist())) for g, t in zip(got, gt))
        out["recall_at_10"] = round(hit / (K * n_queries), 4)
    if kind == "hnsw":
        inner = faiss.downcast_index(idx._index.index)
        sweep = []
        for ef in ef_sweep:  # the latency/recall trade-off of efSearch on the same index
            inner.hnsw.efSearch = ef
            lat = []
            for q in Q[:300]:
                t0 = time.perf_counter()
                idx.search(q, K)
                lat.append(time.perf_counter() - t0)
            _, got = idx.search(Q, K)
            hit = sum(len(set(g.tolist()) & set(t.tolist())) for g, t in zip(got, gt))
            sweep.append({"ef_search": ef, "p50_ms": round(float(np.percentile(np.array(lat) * 1000, 50)), 3),
                          "recall_at_10": round(hit / (K * n_queries), 4)})
        out["ef_sweep"] = sweep
    out["peak_rss_mb"] = peak_rss_mb()
    print(json.dumps(out))


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(14, 4.2))
    for kind, mk in (("flat", "o-"), ("pq", "^-"), ("hnsw", "s-")):
        ok = [r for r in rows if r["kind"] == kind and r.get("status") == "ok"]
        if not ok:
            continue
        ns = [r["n"] for r in ok]
        axes[0].plot(ns, [r["latency_p50_ms"] for r in ok], mk, label=f"{kind} p50")
        axes[0].plot(ns, [r["latency_p99_ms"] for r in ok], mk.replace("-", ":"), label=f"{kind} p99")
        axes[1].plot(ns, [r["build_s"] for r in ok], mk, label=f"{kind} build")
        axes[2].plot(ns, [r["index_mem_mb"] for r in ok], mk, label=f"{kind} index memory")
        for r in ok:
            if kind != "flat" and "recall_at_10" in r:
                axes[0].annotate(f"R@10={r['recall_at_10']:.3f}", (r["n"], r["latency_p50_ms"]),
                                 textcoords="offset points", xytext=(4, -12), fontsize=8)
        for r in rows:
            if r["kind"] == kind and r.get("estimated_build_s"):
                axes[1].plot([r["n"]], [r["estimated_build_s"]], "x", color="red", ms=10,
                             label=f"{kind} build (estimated, not run)")
    axes[0].set(ylabel="ms per single-query search(q, 10)", title="single-query latency")
    axes[1].set(ylabel="seconds", title="index build")
    axes[2].set(ylabel="MB (RSS growth over build)", title="index memory")
    for a in axes:
        a.set(xscale="log", yscale="log", xlabel="N (vectors, 128-d)")
        a.grid(True, which="both", alpha=0.3)
        a.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--budget", type=float, default=150.0, help="seconds per (kind, N) run (default 150)")
    ap.add_argument("--max-seconds", type=float, default=900.0, help="whole script (default 900)")
    ap.add_argument("--ns", type=int, nargs="*", default=list(DEFAULT_NS))
    ap.add_argument("--queries", type=int, default=1000)
    ap.add_argument("--latency-seconds", type=float, default=30.0,
                    help="stop the single-query loop after this long (default 30)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--ef-sweep", type=int, nargs="*", default=[64, 128, 256, 512],
                    help="efSearch values to time and score on each HNSW index")
    ap.add_argument("--hnsw", type=int, nargs=2, metavar=("M", "EF_CONSTRUCTION"),
                    help="build HNSW with these instead of the library's parameters")
    ap.add_argument("--kinds", nargs="+", default=["flat", "pq", "hnsw"], choices=["flat", "pq", "hnsw"])
    ap.add_argument("--no-results", action="store_true")
    ap.add_argument("--child", nargs=2, metavar=("KIND", "N"), help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        child(a.child[0], int(a.child[1]), a.queries, a.latency_seconds, a.seed, tuple(a.ef_sweep),
              tuple(a.hnsw) if a.hnsw else None)
        return

    t_start = time.perf_counter()
    rows: list[dict] = []
    stopped: set[str] = set()
    hnsw_rate = None  # build seconds per vector at the largest N built so far
    for n in sorted(a.ns):
        for kind in a.kinds:
            left = a.max_seconds - (time.perf_counter() - t_start)
            if kind in stopped:
                rows.append({"kind": kind, "n": n, "status": "skipped (a smaller N exceeded the budget)"})
                continue
            if left < 5:
                rows.append({"kind": kind, "n": n, "status": "skipped (--max-seconds reached)"})
                continue
            budget = min(a.budget, left)
            if kind == "hnsw" and hnsw_rate is not None:
                est = hnsw_rate * n * 1.2  # HNSW insert cost grows ~log N; 1.2 per decade is generous
                if est > budget:
                    rows.append({"kind": kind, "n": n, "status": "skipped (estimated build > budget)",
                                 "estimated_build_s": round(est, 1), "budget_s": budget})
                    print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
                    continue
            argv = [sys.executable, __file__, "--child", kind, str(n), "--queries", str(a.queries),
                    "--latency-seconds", str(a.latency_seconds), "--seed", str(a.seed),
                    "--ef-sweep", *map(str, a.ef_sweep)] + (["--hnsw", *map(str, a.hnsw)] if a.hnsw else [])
            res = run_child(argv, budget)
            res.setdefault("kind", kind)
            res.setdefault("n", n)
            rows.append(res)
            print(json.dumps(res), file=sys.stderr, flush=True)
            if res.get("status") != "ok":
                stopped.add(kind)
            elif kind == "hnsw":
                hnsw_rate = res["build_s"] / n

    png = BENCH_DIR / "plots" / "search_scaling.png"
    try:
        plot(rows, png)
    except ImportError:
        png = None
    data = {"machine": machine(), "budget_s": a.budget, "max_seconds": a.max_seconds, "k": K,
            "queries": a.queries, "plot": str(png) if png else None,
            "generator": "make_embeddings.py (128-d identity clusters); queries = dataset rows + noise 0.3",
            "runs": rows}
    print_json(data)
    if not a.no_results:
        cmd = (f".venv/bin/python benchmarks/bench_search.py --budget {a.budget:g} "
               f"--max-seconds {a.max_seconds:g} --latency-seconds {a.latency_seconds:g} "
               f"--ns {' '.join(map(str, a.ns))} --kinds {' '.join(a.kinds)} "
               f"--ef-sweep {' '.join(map(str, a.ef_sweep))}" + (f" --hnsw {a.hnsw[0]} {a.hnsw[1]}" if a.hnsw else ""))
        table = [{"kind": r["kind"], "N": r["n"], "status": r.get("status"), "build_s": r.get("build_s"),
                  "est_build_s": r.get("estimated_build_s"), "index_mem_mb": r.get("index_mem_mb"),
                  "p50_ms": r.get("latency_p50_ms"), "p99_ms": r.get("latency_p99_ms"),
                  "lat_queries": r.get("latency_queries"), "batch_qps": r.get("batch_qps"),
                  "recall@10": r.get("recall_at_10"), "peak_rss_mb": r.get("peak_rss_mb"),
                  "efSearch: p50 ms / recall@10": "; ".join(
                      f"{e['ef_search']}: {e['p50_ms']} / {e['recall_at_10']}" for e in r.get("ef_sweep", []))}
                 for r in rows]
        notes = ("Generated identity embeddings (`make_embeddings.py`), one subprocess per (kind, N). "
                 "Latency: one `VectorIndex.search(q, 10)` call per query (input checks included). "
                 "index_mem_mb = RSS growth over `build` (flat copies the vectors; hnsw adds its graph). "
                 + (f"Plot: [plots/search_scaling.png](plots/search_scaling.png)\n\n"
                    f"![search scaling](plots/search_scaling.png)" if png else "No plot (matplotlib missing)."))
        append_result("Search scaling (bench_search.py)", data, cmd, table=table, notes=notes)


if __name__ == "__main__":
    main()
