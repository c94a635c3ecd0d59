"""A library of N identity embeddings end to end: write, cluster, place 1% new items, search, memory.

The issue's scale targets, measured through the real `Library` (SQLite catalog, clustering run,
people, incremental assignment, saved search index), one subprocess per N so each has its own
peak memory (VmHWM, reset between stages through /proc/self/clear_refs):

1. **write**: N generated 128-d identity vectors (`make_embeddings.py`) stored as items of a
   vector set with the SQL statements indexing uses (one image per item, batches of 10k), i.e.
   indexing without the images; image decoding and the model are measured by bench_index.py.
2. **cluster**: `Library.cluster()` (reads the vectors back from SQLite, HDBSCAN over a kNN graph,
   labels, people). BCubed P/R/F against the generating identities.
3. **assign**: 1% more vectors (held-out samples of the same identities) written the same way,
   then `Library.assign_new()`: seconds, share placed, and how often the placed item's cluster is
   mostly its own identity.
4. **search**: `Library.index_for()` builds the saved index (flat or HNSW, chosen by size);
   single-query p50/p99 of `search(q, 10)` and recall@10 against exact search, on 1,000 perturbed
   dataset rows; then the 1% is added in place (timed).
5. **recluster** (with --recluster): a full re-cluster after naming the 50 largest people; how
   many names survive on a person whose items mostly stay the same.

    .venv/bin/python benchmarks/bench_scale.py --n 100000 1000000 --recluster-max 100000
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import append_result, machine, print_json  # noqa: E402
from make_embeddings import make_embeddings, peak_rss_mb, perturbed_queries, run_child  # noqa: E402

K = 10
MODEL = "generated-128"
TARGETS = {"cluster_100k_s": 60, "cluster_1m_s": 900, "peak_rss_mb": 4096, "search_p50_ms": 5.0,
           "recall_at_10": 0.98}


def _reset_peak() -> None:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass


def _write(lib, set_id: int, X, first_image: int) -> list[int]:
    """Store rows of X as one-item images, as indexing does; returns the item ids."""
    import numpy as np

    now = time.time()
    ids: list[int] = []
    for a in range(0, len(X), 10_000):
        blk = np.ascontiguousarray(X[a:a + 10_000], dtype="<f4")
        with lib.catalog.write() as c:
            for j, row in enumerate(blk):
                n = first_image + a + j
                image_id = c.execute(
                    "INSERT INTO images(path, sha256, size, mtime, width, height, format, added_at) "
                    "VALUES (?,?,?,?,?,?,?,?)",
                    (f"/generated/{n:08d}.jpg", f"{n:064x}", 1000, now, 112, 112, "JPEG", now)).lastrowid
                item_id = c.execute("INSERT INTO items(image_id, set_id, x, y, w, h, score) "
                                    "VALUES (?,?,?,?,?,?,?)", (image_id, set_id, 0, 0, 112, 112, 1.0)).lastrowid
                c.execute("INSERT INTO vectors(item_id, vector) VALUES (?, ?)", (item_id, row.tobytes()))
                c.execute("INSERT INTO processed(image_id, set_id, n_items) VALUES (?, ?, 1)",
                          (image_id, set_id))
                ids.append(item_id)
            c.execute("UPDATE vector_sets SET generation = generation + 1 WHERE id = ?", (set_id,))
    return ids


def child(n: int, seed: int, recluster: bool) -> None:
    import faiss
    import numpy as np

    from peoplemap import Library
    from peoplemap.config import load_settings
    from peoplemap.evaluate import bcubed_prf
    from peoplemap.types import NOISE

    m = n // 100
    X_all, y_all = make_embeddings(n + m, seed=seed)
    rng = np.random.default_rng(seed + 7)
    held = np.zeros(n + m, bool)
    held[rng.choice(n + m, m, replace=False)] = True
    X, y, X_new, y_new = X_all[~held], y_all[~held], X_all[held], y_all[held]
    del X_all
    out: dict = {"n": n, "new": m, "identities": int(np.unique(y).size)}
    peaks: dict = {}
    with tempfile.TemporaryDirectory(prefix="pm-scale-") as tmp:
        lib = Library.open(Path(tmp) / "lib", create=True, settings=load_settings(cache_dir=tmp))
        with lib.catalog.write() as c:
            set_id = c.execute(
                "INSERT INTO vector_sets(model, version, dim, item_kind, description, created_at) "
                "VALUES (?,?,?,?,?,?)", (MODEL, "1", 128, "face", json.dumps({"model": MODEL}), time.time())
            ).lastrowid

        _reset_peak()
        t0 = time.perf_counter()
        ids = np.asarray(_write(lib, set_id, X, 0), dtype=np.int64)
        out["write_s"] = round(time.perf_counter() - t0, 1)
        peaks["write"] = peak_rss_mb()
        truth = dict(zip(ids.tolist(), y.tolist()))
        del X

        _reset_peak()
        t0 = time.perf_counter()
        s = lib.cluster(model=MODEL)
        out["cluster_s"] = round(time.perf_counter() - t0, 1)
        out["cluster_fit_s"] = s.seconds
        out["algorithm"] = s.params.get("algorithm")
        peaks["cluster"] = peak_rss_mb()
        labels = lib.labels(MODEL)
        lab = np.asarray([labels[i] for i in ids.tolist()])
        p, r, f = bcubed_prf(y, lab)
        out.update(bcubed_p=round(p, 4), bcubed_r=round(r, 4), bcubed_f=round(f, 4),
                   n_clusters=s.n_clusters, noise_fraction=round(s.n_noise / n, 4))

        named = {}
        if recluster:
            for person in lib.people(MODEL)[:50]:
                lib.name_person(person.id, f"P{person.id}")
                named[f"P{person.id}"] = set(person.item_ids)

        _reset_peak()
        new_ids = np.asarray(_write(lib, set_id, X_new, n), dtype=np.int64)
        truth.update(zip(new_ids.tolist(), y_new.tolist()))
        t0 = time.perf_counter()
        a = lib.assign_new(MODEL)
        out["assign_s"] = round(time.perf_counter() - t0, 2)
        peaks["assign"] = peak_rss_mb()
        labels = lib.labels(MODEL)
        by_label: dict[int, list[int]] = {}
        for i in ids.tolist():
            if labels.get(i, NOISE) != NOISE:
                by_label.setdefault(labels[i], []).append(truth[i])
        majority = {k: max(set(v), key=v.count) for k, v in by_label.items()}
        placed = [i for i in new_ids.tolist() if labels.get(i, NOISE) != NOISE]
        right = sum(majority[labels[i]] == truth[i] for i in placed)
        out.update(assign_new=a.new_items, assign_placed=a.assigned,
                   assign_placed_fraction=round(a.assigned / max(1, a.new_items), 4),
                   assign_precision=round(right / max(1, len(placed)), 4))

        # search: the saved index over the first n, then grown in place by the 1%
        Q = perturbed_queries(np.asarray(lib.vectors(MODEL, ids=ids[:200_000].tolist())[1]), 1000, seed=seed + 1)
        _reset_peak()
        t0 = time.perf_counter()
        all_ids, V = lib.vectors(MODEL)
        first = np.isin(all_ids, ids)
        from peoplemap.search import VectorIndex

        idx = VectorIndex.build(V[first], all_ids[first])
        out["search_index_kind"] = idx.kind
        out["search_build_s"] = round(time.perf_counter() - t0, 1)
        peaks["search_build"] = peak_rss_mb()
        exact = faiss.IndexFlatL2(128)
        exact.add(np.ascontiguousarray(V[first]))
        _, gt = exact.search(Q, K)
        gt_ids = all_ids[first][gt]
        del exact
        lat = []
        got = []
        for q in Q:
            t1 = time.perf_counter()
            _, hit = idx.search(q, K)
            lat.append(time.perf_counter() - t1)
            got.append(hit[0])
        lat_ms = np.asarray(lat) * 1000
        out["search_p50_ms"] = round(float(np.percentile(lat_ms, 50)), 3)
        out["search_p99_ms"] = round(float(np.percentile(lat_ms, 99)), 3)
        out["recall_at_10"] = round(sum(len(set(g.tolist()) & set(t.tolist())) for g, t in zip(got, gt_ids))
                                    / (K * len(Q)), 4)
        t0 = time.perf_counter()
        idx.add(V[~first], all_ids[~first])
        out["search_add_1pct_s"] = round(time.perf_counter() - t0, 2)
        del V, idx

        if recluster:
            _reset_peak()
            t0 = time.perf_counter()
            lib.cluster(model=MODEL)
            out["recluster_s"] = round(time.perf_counter() - t0, 1)
            peaks["recluster"] = peak_rss_mb()
            kept = 0
            for person in lib.people(MODEL):
                if person.name in named:
                    before = named[person.name]
                    overlap = len(before & set(person.item_ids)) / len(before | set(person.item_ids))
                    kept += overlap >= 0.5
            out["names_kept"] = f"{kept}/{len(named)}"
        lib.close()
    out["peak_rss_mb"] = peaks
    out["peak_rss_max_mb"] = max(v for v in peaks.values() if v is not None)
    print(json.dumps(out))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, nargs="+", default=[100_000, 1_000_000])
    ap.add_argument("--recluster-max", type=int, default=100_000,
                    help="also time a full re-cluster (and check names) up to this N")
    ap.add_argument("--budget", type=float, default=1800.0, help="seconds per N")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-results", action="store_true")
    ap.add_argument("--child", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--recluster", action="store_true", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        child(a.child, a.seed, a.recluster)
        return
    rows = []
    for n in a.n:
        argv = [sys.executable, __file__, "--child", str(n), "--seed", str(a.seed)]
        if n <= a.recluster_max:
            argv.append("--recluster")
        res = run_child(argv, a.budget)
        res.setdefault("n", n)
        rows.append(res)
        print(json.dumps(res), file=sys.stderr, flush=True)
    data = {"machine": machine(extra_packages=("hdbscan", "scikit-learn")), "targets": TARGETS,
            "generator": "make_embeddings.py: geometric identity sizes 1..20, within cos ~0.7-0.86, 128-d",
            "runs": rows}
    print_json(data)
    if not a.no_results:
        cmd = ("benchmarks/bench_scale.py --n " + " ".join(map(str, a.n))
               + f" --recluster-max {a.recluster_max}")
        table = [{"N": r["n"], "write s": r.get("write_s"), "cluster s": r.get("cluster_s"),
                  "BCubed F": r.get("bcubed_f"), "noise": r.get("noise_fraction"),
                  "assign 1% s": r.get("assign_s"), "placed": r.get("assign_placed_fraction"),
                  "placed right": r.get("assign_precision"), "index": r.get("search_index_kind"),
                  "index build s": r.get("search_build_s"), "p50 ms": r.get("search_p50_ms"),
                  "recall@10": r.get("recall_at_10"), "add 1% s": r.get("search_add_1pct_s"),
                  "re-cluster s": r.get("recluster_s"), "names kept": r.get("names_kept"),
                  "peak RSS MB": r.get("peak_rss_max_mb"), "status": r.get("status", "ok")}
                 for r in rows]
        notes = ("One subprocess per N; peak RSS is the largest per-stage VmHWM (reset between stages). "
                 f"Targets: {json.dumps(TARGETS)}.")
        append_result("Scale: a library of N identity embeddings (bench_scale.py)", data,
                      f".venv/bin/python {cmd}", table=table, notes=notes)


if __name__ == "__main__":
    main()
