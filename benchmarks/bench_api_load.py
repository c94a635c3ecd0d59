"""Load on the HTTP API: clients searching while an index job adds photos.

    .venv/bin/python benchmarks/bench_api_load.py [--clients 8] [--seconds 60] [--new 1000]
        [--base 200] [--size 320x240] [--json] [--no-results]

Starts a real `peoplemap serve` process on a free 127.0.0.1 port over a new library, indexes and
clusters BASE generated photos through the API, then runs CLIENTS threads, each with its own
HTTP connection, sending POST /search (a photo of the library, k=10) back to back for SECONDS;
a few seconds in, an index job adds NEW more photos. The model is the tests' fast "fake" model
(a 4x4-colour whole-image embedding, registered in the server through PEOPLEMAP_TEST_PLUGINS), so
what is measured is the service (HTTP, upload checks, decoding, the search index growing while
items land, SQLite reads beside a writer), not a neural network.

Reported: requests and failures (any answer but 200, any transport error; none is expected),
"database is locked" seen in answers or the server's log, search latency p50/p95/p99/max over
the whole run and while the index job ran, the index job's time and items, and the server's
resident memory after warm-up, at the end and at its peak (the job's worker is a process of its
own and not counted). Bounded: the run stops after SECONDS (+ the job's end, at most 10 min).
"""
from __future__ import annotations

import argparse
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import REPO_ROOT, append_result, machine, print_json  # noqa: E402

TESTS = Path(REPO_ROOT) / "tests"
JOB_DEADLINE_S = 600


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_mb(pid: int, field: str = "VmRSS") -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    return float("nan")


def pct(xs: list[float], q: float) -> float:
    if not xs:
        return float("nan")
    s = sorted(xs)
    return s[min(len(s) - 1, int(round(q / 100 * (len(s) - 1))))]


def start_server(lib: Path, root: Path, logf: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(TESTS), env.get("PYTHONPATH", "")])
    env["PEOPLEMAP_TEST_PLUGINS"] = "conftest"
    env["PEOPLEMAP_DEFAULT_MODEL"] = "fake"
    proc = subprocess.Popen([sys.executable, "-m", "peoplemap.cli", "serve", "--library", str(lib),
                             "--root", str(root), "--port", str(port)],
                            env=env, stdout=open(logf, "wb"), stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    end = time.monotonic() + 120
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise SystemExit(f"server exited: {logf.read_text()[-3000:]}")
        try:
            if httpx.get(url + "/health", timeout=2).status_code == 200:
                return proc, url
        except httpx.TransportError:
            pass
        time.sleep(0.1)  # polling interval
    proc.kill()
    raise SystemExit("server did not start within 120 s")


def run_job(client: httpx.Client, kind: str, body: dict) -> dict:
    r = client.post(f"/jobs/{kind}", json=body)
    r.raise_for_status()
    return wait_job(client, r.json()["id"])


def wait_job(client: httpx.Client, job_id: int, on_poll=None) -> dict:
    end = time.monotonic() + JOB_DEADLINE_S
    while time.monotonic() < end:
        j = client.get(f"/jobs/{job_id}").json()
        if on_poll:
            on_poll(j)
        if j["status"] not in ("running", "cancelling"):
            if j["status"] != "done":
                raise SystemExit(f"job failed: {j}")
            return j
        time.sleep(0.25)  # polling interval
    raise SystemExit(f"job {job_id} still running after {JOB_DEADLINE_S} s")


class Searcher(threading.Thread):
    """One client: back-to-back searches on its own connection until `stop_at`."""

    def __init__(self, url: str, queries: list[bytes], stop_at: float, seed: int):
        super().__init__(daemon=True)
        self.url, self.queries, self.stop_at = url, queries, stop_at
        self.rng = random.Random(seed)
        self.samples: list[tuple[float, float]] = []  # (start, seconds) of each 200 answer
        self.failures: list[str] = []
        self.locked = 0

    def run(self) -> None:
        with httpx.Client(base_url=self.url, timeout=60) as c:
            while time.monotonic() < self.stop_at:
                q = self.rng.choice(self.queries)
                t0 = time.monotonic()
                try:
                    r = c.post("/search?k=10", files={"image": ("q.jpg", q)})
                except httpx.HTTPError as e:
                    self.failures.append(f"{type(e).__name__}: {e}")
                    continue
                dt = time.monotonic() - t0
                if "database is locked" in r.text:
                    self.locked += 1
                if r.status_code == 200 and r.json() and r.json()[0]["hits"]:
                    self.samples.append((t0, dt))
                else:
                    self.failures.append(f"{r.status_code}: {r.text[:200]}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--new", type=int, default=1000, help="photos the index job adds")
    ap.add_argument("--base", type=int, default=200, help="photos indexed before the load")
    ap.add_argument("--size", default="320x240", help="generated photo size WxH (multiples of 4)")
    ap.add_argument("--index-after", type=float, default=3.0, help="seconds of load before the job")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--no-results", action="store_true", help="do not append to RESULTS.md")
    args = ap.parse_args()
    sys.path.insert(0, str(TESTS))
    from conftest import make_person_images

    w, h = (int(v) for v in args.size.split("x"))
    tmp = Path(tempfile.mkdtemp(prefix="peoplemap-api-load-"))
    root = tmp / "photos"
    log(f"generating {args.base} + {args.new} photos of {w}x{h} under {root}")
    make_person_images(root / "base", n_people=max(1, args.base // 10), per_person=10, size=(w, h),
                       seed=1)
    make_person_images(root / "new", n_people=max(1, args.new // 10), per_person=10, size=(w, h),
                       seed=2)
    queries = [p.read_bytes() for p in sorted((root / "base").rglob("*.jpg"))[:50]]
    logf = tmp / "server.log"
    proc, url = start_server(tmp / "lib", root, logf)
    log(f"server pid {proc.pid} on {url}")
    result: dict = {}
    try:
        with httpx.Client(base_url=url, timeout=120) as c:
            base_job = run_job(c, "index", {"folder": "base"})
            run_job(c, "cluster", {"min_cluster_size": 3})
            for q in queries[:20]:  # warm-up: search index built, code paths loaded
                c.post("/search?k=10", files={"image": ("q.jpg", q)}).raise_for_status()
            rss0 = rss_mb(proc.pid)
            log(f"base indexed ({base_job['result']['items_added']} items); server RSS {rss0:.0f} MB;"
                f" {args.clients} clients for {args.seconds:.0f} s")
            t_start = time.monotonic()
            stop_at = t_start + args.seconds
            clients = [Searcher(url, queries, stop_at, seed=i) for i in range(args.clients)]
            for t in clients:
                t.start()
            rss_samples = [rss0]
            time.sleep(args.index_after)  # let the load settle before the job starts
            r = c.post("/jobs/index", json={"folder": "new"})
            r.raise_for_status()
            job_t0 = time.monotonic()
            job = wait_job(c, r.json()["id"], on_poll=lambda _j: rss_samples.append(rss_mb(proc.pid)))
            job_t1 = time.monotonic()
            log(f"index job done in {job_t1 - job_t0:.1f} s: {job['result']['items_added']} items")
            while time.monotonic() < stop_at:
                rss_samples.append(rss_mb(proc.pid))
                time.sleep(0.5)  # sampling interval
            for t in clients:
                t.join(timeout=120)
            rss_end = rss_mb(proc.pid)
            rss_peak = rss_mb(proc.pid, "VmHWM")
            info = c.get("/library").json()
        samples = [s for t in clients for s in t.samples]
        lat = [dt * 1000 for _t0, dt in samples]
        during = [dt * 1000 for t0, dt in samples if job_t0 <= t0 <= job_t1]
        failures = [f for t in clients for f in t.failures]
        server_log = logf.read_text(errors="replace")
        result = {
            "machine": machine(["fastapi", "uvicorn", "httpx"]),
            "clients": args.clients, "seconds": args.seconds, "photo_size": f"{w}x{h}",
            "base_photos": args.base, "new_photos": args.new,
            "requests": len(samples) + len(failures), "ok": len(samples),
            "failed": len(failures), "failure_examples": failures[:5],
            "database_locked": sum(t.locked for t in clients) + server_log.count("database is locked"),
            "server_tracebacks": server_log.count("Traceback"),
            "throughput_rps": round(len(samples) / args.seconds, 1),
            "latency_ms": {"p50": round(pct(lat, 50), 1), "p95": round(pct(lat, 95), 1),
                           "p99": round(pct(lat, 99), 1), "max": round(max(lat), 1)},
            "latency_during_index_ms": {"n": len(during), "p50": round(pct(during, 50), 1),
                                        "p99": round(pct(during, 99), 1)},
            "index_job_s": round(job_t1 - job_t0, 1),
            "index_job_items": job["result"]["items_added"],
            "library_items_after": info["items"],
            "server_rss_mb": {"after_warmup": round(rss0, 1), "end": round(rss_end, 1),
                              "peak": round(max(rss_peak, max(rss_samples)), 1),
                              "growth": round(rss_end - rss0, 1)},
        }
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
    print_json(result) if args.json else log(str(result))
    ok = result["failed"] == 0 and result["database_locked"] == 0 and \
        result["library_items_after"] == args.base + args.new
    if not args.no_results:
        row = {"clients": args.clients, "seconds": args.seconds, "requests": result["requests"],
               "failed": result["failed"], "db locked": result["database_locked"],
               "p50 ms": result["latency_ms"]["p50"], "p99 ms": result["latency_ms"]["p99"],
               "p99 ms during index": result["latency_during_index_ms"]["p99"],
               "index 1k s": result["index_job_s"],
               "RSS MB warm/end/peak": "{after_warmup}/{end}/{peak}".format(**result["server_rss_mb"])}
        append_result("API load: searches while an index job runs (bench_api_load.py)", result,
                      " ".join([".venv/bin/python benchmarks/bench_api_load.py", *sys.argv[1:]]), table=[row])
    if not ok:
        raise SystemExit("FAILED: failed requests, 'database is locked', or items missing")


if __name__ == "__main__":
    main()
