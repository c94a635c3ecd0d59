"""Would a metric learned from the user's answers recognise the faces they never touched better?

    .venv/bin/python benchmarks/bench_metric.py --library LIB --folder LABELED_FOLDER [--json]

LIB is a library the user has answered questions in (e.g. after `bench_review.py FOLDER --library
LIB --max-actions 60`). From its confirmed faces (grouped by person) a linear metric is fitted: the
inverse square root of the within-person scatter, regularised by lam x its mean eigenvalue (the
classic whitening of within-class variation, as in LDA / Mahalanobis metric learning). It is
judged where it matters, on faces the answers did not touch: leave-one-out rank-1 of the labeled
photos' main faces (as `peoplemap eval` picks them: eval_runner.photo_subjects) that
are neither confirmed nor rejected, raw vectors against the learned metric. Issue: corrections
improve the machine "where it measurably helps".
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_placement import main_faces  # noqa: E402
from common import print_json  # noqa: E402

LAMBDAS = (0.1, 0.3, 1.0, 3.0)


def within_person_metric(X: np.ndarray, groups: list[np.ndarray], lam: float) -> np.ndarray:
    """(d, d) W with X @ W whitening the scatter of the rows of each group around its mean."""
    D = np.vstack([X[g] - X[g].mean(0) for g in groups if len(g) >= 2])
    Sw = D.T @ D / len(D)
    w, V = np.linalg.eigh(Sw + lam * np.trace(Sw) / len(Sw) * np.eye(len(Sw)))
    return V @ np.diag(w ** -0.5) @ V.T


def rank1(Y: np.ndarray, labels: np.ndarray, queries: np.ndarray) -> float:
    """Leave-one-out rank-1 over the rows `queries` (each with another row of its label)."""
    Y = Y / np.linalg.norm(Y, axis=1, keepdims=True)
    S = Y[queries] @ Y.T
    S[np.arange(len(queries)), queries] = -np.inf
    return float(np.mean(labels[S.argmax(axis=1)] == labels[queries]))


def run(library: Path, folder: Path) -> dict:
    from peoplemap import Library

    lib = Library.open(library)
    root = str(folder.resolve())
    s = lib.vector_set()
    ids, X = lib.vectors()
    X = X.astype(np.float64)
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    row = {int(i): k for k, i in enumerate(ids)}
    truth = main_faces(lib, root)  # item id -> identity of each labeled photo's main face
    main_rows = np.array([row[item] for item in truth])
    labels = np.full(len(ids), None, dtype=object)
    for item, who in truth.items():
        labels[row[item]] = who
    item, person, confirmed = lib.store.people.membership_arrays(s.id)
    groups: dict[int, list[int]] = {}
    for i, p in zip(item[confirmed], person[confirmed]):
        groups.setdefault(int(p), []).append(row[int(i)])
    touched = {row[int(i)] for i in item[confirmed]} | {row[i] for i, _p in lib.store.people.rejected(s.id)}
    counts = {lab: int((labels[main_rows] == lab).sum()) for lab in set(labels[main_rows])}
    queries = np.array([r for r in main_rows if r not in touched and counts[labels[r]] > 1])
    gallery = np.sort(main_rows)  # every main face is searched; queries are rows of it
    qpos = np.searchsorted(gallery, queries)
    out = {"library": str(library), "confirmed_faces": int(confirmed.sum()),
           "people_with_confirmed_faces": len(groups), "rejections": len(lib.store.people.rejected(s.id)),
           "held_out_queries": int(len(queries)),
           "rank1_raw": round(rank1(X[gallery], labels[gallery], qpos), 4), "rank1_learned": {}}
    confirmed_groups = [np.array(g) for g in groups.values()]
    if sum(len(g) >= 2 for g in confirmed_groups) == 0:
        out["note"] = "no person has two confirmed faces: nothing to learn from"
        return out
    for lam in LAMBDAS:
        W = within_person_metric(X, confirmed_groups, lam)
        out["rank1_learned"][str(lam)] = round(rank1(X[gallery] @ W, labels[gallery], qpos), 4)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--library", type=Path, required=True)
    ap.add_argument("--folder", type=Path, required=True)
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    out = run(a.library, a.folder)
    if a.json:
        print(json.dumps(out))
    else:
        print_json(out)


if __name__ == "__main__":
    main()
