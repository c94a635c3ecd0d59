"""Generated identity-like embeddings for the clustering and search scaling benchmarks.

K identities are Gaussian clusters on the unit sphere in `dim` (default 128) dimensions: each
identity has a random unit centre; each of its samples is centre + isotropic noise of total norm
about s (s drawn per identity from `spread`, default 0.40-0.65), then L2-normalised. Two samples of
one identity then have cosine about 1 / (1 + s^2), i.e. 0.70-0.86; two random centres in 128-d have
cosine ~ N(0, 1/128), i.e. about 0 +- 0.09. Identity sizes are geometric (p=0.25, mean ~4),
clipped to 1..20, so there are many people with one or two photos, as in a real photo library.

Deterministic by seed; float32; generated in chunks so 1M x 128 (512 MB) needs little more than
the output array. Also holds `run_child`, the bounded subprocess runner the bench scripts share.

    .venv/bin/python benchmarks/make_embeddings.py --n 10000 --check
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from typing import Any

import numpy as np

DIM = 128


def identity_sizes(n: int, rng: np.random.Generator, p: float = 0.25, max_size: int = 20) -> np.ndarray:
    """Geometric sizes in 1..max_size whose sum is exactly n (the last one truncated)."""
    sizes = []
    total = 0
    while total < n:
        chunk = np.minimum(rng.geometric(p, size=max(16, (n - total) // 3)), max_size)
        sizes.append(chunk)
        total += int(chunk.sum())
    s = np.concatenate(sizes)
    c = np.cumsum(s)
    k = int(np.searchsorted(c, n)) + 1
    s = s[:k].copy()
    s[-1] -= int(c[k - 1] - n)
    return s.astype(np.int64)


def make_embeddings(n: int, dim: int = DIM, seed: int = 0, spread: tuple[float, float] = (0.40, 0.65),
                    chunk: int = 65536) -> tuple[np.ndarray, np.ndarray]:
    """(X float32 (n, dim) unit rows, labels int64 (n,)); rows shuffled so identities interleave."""
    rng = np.random.default_rng(seed)
    sizes = identity_sizes(n, rng)
    k = sizes.size
    centres = rng.standard_normal((k, dim), dtype=np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    s = rng.uniform(spread[0], spread[1], size=k).astype(np.float32)
    labels = np.repeat(np.arange(k, dtype=np.int64), sizes)
    labels = labels[rng.permutation(n)]
    X = np.empty((n, dim), dtype=np.float32)
    scale = (s / np.sqrt(dim)).astype(np.float32)
    for a in range(0, n, chunk):
        b = min(n, a + chunk)
        lab = labels[a:b]
        blk = rng.standard_normal((b - a, dim), dtype=np.float32)
        blk *= scale[lab, None]
        blk += centres[lab]
        blk /= np.linalg.norm(blk, axis=1, keepdims=True)
        X[a:b] = blk
    return X, labels


def perturbed_queries(X: np.ndarray, m: int, seed: int = 1, noise: float = 0.3) -> np.ndarray:
    """m queries: random dataset rows plus noise of norm ~noise, re-normalised (a new photo of someone)."""
    rng = np.random.default_rng(seed)
    idx = rng.choice(X.shape[0], size=m, replace=False)
    Q = X[idx] + rng.standard_normal((m, X.shape[1]), dtype=np.float32) * np.float32(noise / np.sqrt(X.shape[1]))
    Q /= np.linalg.norm(Q, axis=1, keepdims=True)
    return np.ascontiguousarray(Q, dtype=np.float32)


def peak_rss_mb() -> float | None:
    """This process's peak resident set (VmHWM) in MB."""
    try:
        with open("/proc/self/status", encoding="utf-8") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    return None


def rss_mb() -> float | None:
    try:
        with open("/proc/self/status", encoding="utf-8") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    return None


def run_child(argv: list[str], budget_s: float) -> dict[str, Any]:
    """Run a child that prints one JSON object as its last stdout line; kill it at budget_s.

    Returns the child's JSON, or {"status": "> budget", "budget_s": ...} / {"status": "error", ...}.
    """
    t0 = time.perf_counter()
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        out, err = proc.communicate(timeout=budget_s)
    except subprocess.TimeoutExpired:
        try:
            os.killpg(proc.pid, 9)
        except ProcessLookupError:
            pass
        proc.communicate()
        return {"status": "> budget", "budget_s": budget_s, "wall_s": round(time.perf_counter() - t0, 1)}
    wall = round(time.perf_counter() - t0, 2)
    if proc.returncode != 0:
        return {"status": "error", "returncode": proc.returncode, "stderr_tail": err[-1500:], "wall_s": wall}
    lines = [ln for ln in out.strip().splitlines() if ln.strip()]
    try:
        res = json.loads(lines[-1])
    except (IndexError, ValueError):
        return {"status": "error", "stdout_tail": out[-1500:], "stderr_tail": err[-1500:], "wall_s": wall}
    res.setdefault("status", "ok")
    res["child_wall_s"] = wall
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=10000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", help="write X and labels to this .npz")
    ap.add_argument("--check", action="store_true", help="print within/between-identity cosine stats")
    a = ap.parse_args()
    t0 = time.perf_counter()
    X, y = make_embeddings(a.n, seed=a.seed)
    gen_s = time.perf_counter() - t0
    info: dict[str, Any] = {"n": a.n, "dim": X.shape[1], "identities": int(y.max() + 1), "gen_s": round(gen_s, 2),
                            "singletons": int((np.bincount(y) == 1).sum())}
    if a.check:
        rng = np.random.default_rng(123)
        order = np.argsort(y, kind="stable")
        ys = y[order]
        same = np.flatnonzero(ys[1:] == ys[:-1])[:20000]
        within = np.einsum("ij,ij->i", X[order[same]], X[order[same + 1]])
        i, j = rng.integers(0, a.n, 20000), rng.integers(0, a.n, 20000)
        keep = y[i] != y[j]
        between = np.einsum("ij,ij->i", X[i[keep]], X[j[keep]])
        q = lambda v: [round(float(x), 3) for x in np.percentile(v, [5, 50, 95])]  # noqa: E731
        info["within_cos_p5_p50_p95"] = q(within)
        info["between_cos_p5_p50_p95"] = q(between)
    if a.out:
        np.savez(a.out, X=X, labels=y)
    json.dump(info, sys.stdout)
    print()


if __name__ == "__main__":
    main()
