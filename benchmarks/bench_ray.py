"""Indexing with `--engine ray` on one machine: local engine vs Ray with 1 and 2 model workers.

    .venv/bin/python benchmarks/bench_ray.py [--dataset extended_yaleb_cropped_subset] [--limit 240]
        [--model face] [--rounds 3] [--json] [--no-results]

Starts a real Ray cluster on 127.0.0.1 the way tests/test_ray.py does (a head and a second node
joining it, one CPU each), then indexes the same N files (a temporary folder of symlinks to
../shared/data, nothing copied) into a fresh library per run: `Library.index` with the local engine
(Settings.workers = 2), and with `engine=RayOptions(workers=1)` and `RayOptions(workers=2)`, in
interleaved rounds whose order rotates. Times are whole `Library.index` calls (connecting to the
cluster, starting the actors and loading their models included); `steady images/s` leaves out the
time to the first written batch. Reported: medians, the ratio of medians Ray 2 workers / Ray 1
worker, and per-file stage costs (worker CPU-seconds for decode, detect and embed; driver seconds
for writing), the numbers docs/scale-out.md projects from. Every run must store the same items
with the same vectors as the first run, or the script fails.
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

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import SHARED_DATA, append_result, image_files, machine, median, print_json, ratio  # noqa: E402
from bench_face_workers import same_vectors, symlink_farm  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def run_index(folder: Path, model: str, config: str, address: str, tmp: Path) -> tuple[dict, dict]:
    """Index `folder` into a fresh library with one engine configuration; (timing, {path: vectors})."""
    from dataclasses import replace

    import numpy as np

    from peoplemap import Library
    from peoplemap.config import load_settings
    from peoplemap.engine_ray import RayOptions

    engine: object = "local" if config == "local" else RayOptions(address=address, workers=int(config[-1]))
    libdir = Path(tempfile.mkdtemp(prefix=f"lib-{config}-", dir=tmp))
    settings = replace(load_settings(), workers=2)
    first: list[tuple[float, int]] = []  # (seconds, files) at the first written batch
    t0 = 0.0

    def progress(stage: str, done: int, total) -> None:
        if stage == "index" and done and not first:
            first.append((time.perf_counter() - t0, done))

    with Library.open(libdir, create=True, settings=settings) as lib:
        lib.embedder(model).load()  # model load in the driver is the same for every engine
        t0 = time.perf_counter()
        s = lib.index(folder, model=model, engine=engine, progress=progress)
        wall = time.perf_counter() - t0
        ids, X = lib.vectors(model)
        row = {int(i): k for k, i in enumerate(ids)}
        by_path: dict[str, list] = {}
        for it in lib.items(model):
            by_path.setdefault(it.path, []).append(X[row[it.id]])
        vectors = {p: np.stack(v) for p, v in by_path.items()}
    n = s.files_seen
    first_s, first_files = first[0] if first else (wall, n)
    steady = (n - first_files) / max(1e-9, wall - first_s) if n > first_files else None
    st = s.stage_seconds
    per_file = {k: round(1000 * st[k] / n, 3) for k in ("decode", "detect", "embed", "write", "scan")
                if k in st and n}
    return ({"images_per_s": round(n / wall, 3), "seconds": round(wall, 3), "first_batch_s": round(first_s, 3),
             "steady_images_per_s": None if steady is None else round(steady, 3), "items": s.items_added,
             "ms_per_file": per_file, "stage_seconds": st}, vectors)


def driver_costs(n: int, dim: int = 128) -> dict:
    """What the driver of a Ray run spends per file, without a cluster: turning actor output into
    results (`_decode_rows`), planning and committing them (`_write_all`, the local run's batches),
    the library's bytes per item, and the memory the file list and diff take per file."""
    import json as _json
    import tracemalloc

    import numpy as np
    import pyarrow as pa

    from peoplemap import Library
    from peoplemap.config import load_settings
    from peoplemap.engine_ray import _decode_rows, _write_all
    from peoplemap.indexing import IndexSummary
    from peoplemap.indexing_work import Job
    from peoplemap.ingest import FileEntry

    class Generated:
        name, version, item_kind, decode_max_side = "generated", "1", "face", None

        def __init__(self, dim: int) -> None:
            self.dim = dim

        def describe(self) -> dict:
            return {"model": self.name}

    rng = np.random.default_rng(0)
    paths = [f"/photos/2024/{k // 1000:04d}/IMG_{k:08d}.jpg" for k in range(n)]
    tracemalloc.start()
    jobs = [Job(FileEntry(p, 3_000_000 + k, 1.7e9 + k), None) for k, p in enumerate(paths)]
    rows = [{"i": k, "path": p.encode()} for k, p in enumerate(paths)]
    known = {p: (k, 3_000_000 + k, 1.7e9 + k, 1) for k, p in enumerate(paths)}  # the diff's catalog view
    job_bytes = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    del rows, known
    X = rng.normal(size=(n, dim)).astype(np.float32)
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    tables = []
    for a in range(0, n, 32):
        b = min(n, a + 32)
        tables.append(pa.table({
            "i": pa.array(range(a, b), pa.int64()),
            "sha256": pa.array([f"{k:064x}" for k in range(a, b)], pa.string()),
            "width": pa.array([4000] * (b - a), pa.int64()), "height": pa.array([3000] * (b - a), pa.int64()),
            "format": pa.array(["JPEG"] * (b - a), pa.string()),
            "regions": pa.array([_json.dumps([[[1000, 800, 400, 400], 0.99]])] * (b - a), pa.string()),
            "vectors": pa.array([X[k].tobytes() for k in range(a, b)], pa.binary()),
            "reason": pa.array([None] * (b - a), pa.binary()),
            "decode_s": pa.array([0.0] * (b - a), pa.float64()),
            "detect_s": pa.array([0.0] * (b - a), pa.float64()),
            "embed_s": pa.array([0.0] * (b - a), pa.float64())}))
    with tempfile.TemporaryDirectory(prefix="peoplemap-ray-driver-") as tmp:
        lib = Library.open(Path(tmp) / "lib", create=True, settings=load_settings(cache_dir=tmp))
        e = Generated(dim)
        set_id = lib.ensure_vector_set(e, rebuild=False)
        t = time.perf_counter()
        decoded = [dec for tbl in tables for _i, dec, _s in _decode_rows(tbl, jobs, dim)]
        t_rows = time.perf_counter() - t
        stages = {"write": 0.0, "detect": 0.0}
        summary = IndexSummary(folder="/photos", model=e.name)
        t = time.perf_counter()
        _write_all(lib, set_id, e, iter(decoded), summary, stages, lambda *a: None, n)
        t_write = time.perf_counter() - t
        lib.catalog.conn().execute("PRAGMA wal_checkpoint(TRUNCATE)")
        size = sum(f.stat().st_size for f in (Path(tmp) / "lib").iterdir() if f.is_file())
        lib.close()
    return {"files": n, "dim": dim, "decode_rows_ms_per_file": round(1000 * t_rows / n, 4),
            "plan_and_write_ms_per_file": round(1000 * t_write / n, 4),
            "driver_ms_per_file": round(1000 * (t_rows + t_write) / n, 4),
            "driver_files_per_s": round(n / (t_rows + t_write)),
            "library_bytes_per_item": round(size / n), "file_list_and_diff_bytes_per_file": round(job_bytes / n)}


def ivfpq_costs(n: int) -> dict:
    """The chunked `ivfpq` search index on n generated 128-d identity vectors stored in a library:
    build time, index bytes per item, peak memory, query time and recall@10 against exact search."""
    import resource

    import faiss
    import numpy as np

    from bench_scale import _write
    from make_embeddings import make_embeddings
    from peoplemap import Library
    from peoplemap.config import load_settings
    from peoplemap.index_build import build_ivfpq

    X, _ = make_embeddings(n, seed=1)
    with tempfile.TemporaryDirectory(prefix="peoplemap-ivfpq-") as tmp:
        lib = Library.open(Path(tmp) / "lib", create=True, settings=load_settings(cache_dir=tmp))
        with lib.catalog.write() as c:
            set_id = c.execute("INSERT INTO vector_sets(model, version, dim, item_kind, description, "
                               "created_at) VALUES (?,?,?,?,?,?)",
                               ("generated-128", "1", 128, "face", "{}", time.time())).lastrowid
        ids = np.asarray(_write(lib, set_id, X, 0))
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        t = time.perf_counter()
        index = build_ivfpq(lib, "generated-128")
        build_s = time.perf_counter() - t
        after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        Q = X[np.random.default_rng(5).choice(n, 1000, replace=False)]
        flat = faiss.IndexFlatL2(128)
        flat.add(X)
        exact = ids[flat.search(Q, 10)[1]]
        t = time.perf_counter()
        found = index.search(Q, 10)[1]
        ms = 1000 * (time.perf_counter() - t) / len(Q)
        size = (Path(tmp) / "lib" / "indexes" / f"set-{set_id}.faiss").stat().st_size
        lib.close()
    recall = float(np.mean([len(set(a) & set(b)) / 10 for a, b in zip(exact.tolist(), found.tolist())]))
    ivf = faiss.extract_index_ivf(index._index.index)
    return {"n": n, "lists": int(ivf.nlist), "probed": int(ivf.nprobe), "build_s": round(build_s, 1),
            "index_bytes_per_item": round(size / n), "peak_rss_mb_before_build": round(before),
            "peak_rss_mb_after_build": round(after), "query_ms_batch_of_1000": round(ms, 3),
            "recall_at_10": round(recall, 4)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", default="extended_yaleb_cropped_subset", help="a set under ../shared/data")
    ap.add_argument("--limit", type=int, default=240, help="first N images in scan order (default 240)")
    ap.add_argument("--model", default="face")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--json", action="store_true", help="print the full JSON (default: summary)")
    ap.add_argument("--no-results", action="store_true", help="do not append to RESULTS.md")
    ap.add_argument("--driver", type=int, metavar="N", default=0,
                    help="only measure the driver's per-file costs on N generated results (no cluster)")
    ap.add_argument("--ivfpq", type=int, metavar="N", default=0,
                    help="only measure building the chunked ivfpq search index of N generated items")
    args = ap.parse_args()
    if args.ivfpq:
        res = {"benchmark": "bench_ray --ivfpq", **ivfpq_costs(args.ivfpq), "machine": machine(("ray",))}
        command = ".venv/bin/python benchmarks/bench_ray.py " + " ".join(shlex.quote(a) for a in sys.argv[1:])
        if not args.no_results:
            append_result("ivfpq search index built in shards from a library", res, command,
                          table=[{k: v for k, v in res.items() if k not in ("machine", "benchmark")}],
                          notes="index_build.build_ivfpq on N generated 128-d identity vectors "
                                "(make_embeddings.py) stored in a library; recall@10 against exact "
                                "search for 1000 stored vectors as queries.")
        print_json(res)
        return
    if args.driver:
        res = {"benchmark": "bench_ray --driver", **driver_costs(args.driver), "machine": machine(("ray",))}
        command = ".venv/bin/python benchmarks/bench_ray.py " + " ".join(shlex.quote(a) for a in sys.argv[1:])
        if not args.no_results:
            append_result("Ray engine: the driver's cost per file", res, command,
                          table=[{k: v for k, v in res.items() if k not in ("machine", "benchmark")}],
                          notes="Generated actor output (one 128-d face per file) turned into results and "
                                "committed by the driver as in a Ray run; no cluster. Library bytes per "
                                "item: the SQLite files after a checkpoint. File list and diff: Python "
                                "memory of the jobs, the Ray input rows and the catalog view per file.")
        print_json(res)
        return
    if args.rounds < 1 or args.limit < 1:
        raise SystemExit("--rounds and --limit must be positive")
    root = SHARED_DATA / args.dataset
    if not root.is_dir():
        raise SystemExit(f"dataset not found: {root}")
    files = [f for f in image_files(root, None) if f"{os.sep}_" not in f][:args.limit]
    sys.path.insert(0, str(REPO / "tests"))
    from test_ray import LocalRayCluster  # the tests' cluster: own process groups, cleaned up

    configs = ["local", "ray-1", "ray-2"]
    runs: dict[str, list[dict]] = {c: [] for c in configs}
    with tempfile.TemporaryDirectory(prefix="peoplemap-ray-bench-") as tmp_name:
        tmp = Path(tmp_name)
        farm = symlink_farm(files, tmp / "farm")
        t = time.perf_counter()
        with LocalRayCluster(nodes=2, cpus=1) as cluster:
            cluster_s = round(time.perf_counter() - t, 2)
            log(f"cluster of 2 nodes up in {cluster_s} s at {cluster.address}")
            warm = symlink_farm(files[:8], tmp / "warm")
            log(f"{args.dataset}: {len(files)} files, model {args.model}; warm-up")
            for c in configs:
                run_index(warm, args.model, c, cluster.address, tmp)
            reference = None
            for r in range(args.rounds):
                order = configs[r % 3:] + configs[:r % 3]
                for c in order:
                    gc.collect()
                    res, vectors = run_index(farm, args.model, c, cluster.address, tmp)
                    if reference is None:
                        reference = vectors
                    elif not same_vectors(reference, vectors):
                        raise SystemExit(f"{c} stored different items or vectors than the first run")
                    res["round"], res["position"] = r + 1, order.index(c)
                    runs[c].append(res)
                    log(f"round {r + 1}/{args.rounds} {c}: {res['images_per_s']} images/s "
                        f"({res['seconds']} s, first batch {res['first_batch_s']} s, {res['items']} items)")

    med = {c: median([x["images_per_s"] for x in v]) for c, v in runs.items()}
    steady = {c: median([x["steady_images_per_s"] for x in v]) for c, v in runs.items()}
    stage_ms = {c: {k: median([x["ms_per_file"].get(k) for x in v]) for k in v[0]["ms_per_file"]}
                for c, v in runs.items()}
    result = {
        "benchmark": "bench_ray", "dataset": args.dataset, "model": args.model, "images": len(files),
        "rounds": args.rounds, "items": runs["local"][0]["items"], "cluster": "2 nodes x 1 CPU, 127.0.0.1",
        "cluster_start_s": cluster_s,
        "images_per_s_median": {c: round(v, 2) for c, v in med.items()},
        "steady_images_per_s_median": {c: None if v is None else round(v, 2) for c, v in steady.items()},
        "ratio_ray2_over_ray1": ratio(med["ray-2"], med["ray-1"]),
        "steady_ratio_ray2_over_ray1": ratio(steady["ray-2"], steady["ray-1"]),
        "ratio_ray2_over_local": ratio(med["ray-2"], med["local"]),
        "ms_per_file_median": stage_ms,
        "machine": machine(("ray", "dlib-bin", "openvino")), "runs": runs,
    }
    table = [{"engine": c, "images/s (median)": round(med[c], 2),
              "steady images/s": None if steady[c] is None else round(steady[c], 2),
              "s (median)": median([x["seconds"] for x in runs[c]]),
              "first batch s": median([x["first_batch_s"] for x in runs[c]]),
              "decode ms/file": stage_ms[c].get("decode"), "detect ms/file": stage_ms[c].get("detect"),
              "embed ms/file": stage_ms[c].get("embed"), "write ms/file": stage_ms[c].get("write"),
              "ratio over ray-1": ratio(med[c], med["ray-1"])} for c in configs]
    command = ".venv/bin/python benchmarks/bench_ray.py " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    if not args.no_results:
        append_result("Ray engine on one machine: local vs Ray 1 and 2 workers", result, command, table=table,
                      notes=f"Library.index(model={args.model!r}) on {len(files)} images of {args.dataset}: "
                            "engine local (2 worker processes/threads) vs engine=RayOptions(workers=1|2) on a "
                            "2-node x 1-CPU Ray cluster on 127.0.0.1; interleaved rounds, medians. Stage "
                            "columns: local decode/detect/embed are what the local run reports (its "
                            "process workers fold detect and embed into decode_wait); for Ray they are "
                            "worker seconds per file.")
    print_json(result if args.json else {"machine": result["machine"], "table": table,
                                         "ratio_ray2_over_ray1": result["ratio_ray2_over_ray1"]})


if __name__ == "__main__":
    main()
