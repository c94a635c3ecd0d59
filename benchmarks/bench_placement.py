"""New photos never join the wrong person: how precisely new faces are placed with existing people.

    .venv/bin/python benchmarks/bench_placement.py ../shared/data/celeba_wild_dev [--library DIR] [--json]

Protocol (per seed, 3 seeds): a fifth of the identities are held out entirely, and a fifth of the
other identities' photos too. The rest is clustered as `peoplemap cluster` does (default profile,
two faces of one photo never together); then the held-out photos' faces are placed with
`peoplemap.cluster.assign`, the rule `index` uses for new items and `search` for "belongs to":
- with the clustering's radius rule alone (before), and
- capped by the model's match distance (`Model.match_distance`, the face model's MATCH_DISTANCE).
Scored on each photo's main face (as `peoplemap eval` picks it: eval_runner.photo_subjects):
- unknown placed: share of the faces of held-out people placed with anyone (target <= 2%);
- known right: share of new faces of people in the library placed with the right one (>= 80%).
The folder is indexed with the default face model into --library (default: a temporary folder).
"""
from __future__ import annotations

import argparse
import collections
import json
import os
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import append_result, machine  # noqa: E402


def main_faces(lib, root: str) -> dict[int, str]:
    """item id -> identity of each labeled photo's main face."""
    photos = {}
    for image_id, path, _sha in lib.store.images.under(root):
        parts = os.path.relpath(path, root).split(os.sep)
        if len(parts) >= 2 and not parts[0].startswith("_"):
            photos[image_id] = parts[0]
    from peoplemap.eval_runner import photo_subjects

    return {it.id: photos[img] for img, it in photo_subjects(lib, photos).items()}


def run(folder: Path, library: Path, seeds: int = 3) -> dict:
    from peoplemap import Library
    from peoplemap.cluster import Clusterer, assign
    from peoplemap.types import NOISE

    root = str(folder.resolve())
    lib = Library.open(library, create=True)
    lib.index(root)
    model = lib.embedder(lib.vector_set().model)
    items = lib.items()
    ids, X = lib.vectors()
    pos = {int(i): k for k, i in enumerate(ids)}
    truth = main_faces(lib, root)
    identities = sorted(set(truth.values()))
    rules = {"radius rule": None, f"radius + match distance {model.match_distance}": model.match_distance}
    scores: dict[str, list[tuple[float, float]]] = {r: [] for r in rules}
    for seed in range(seeds):
        rng = np.random.default_rng(seed)
        held = set(rng.choice(identities, len(identities) // 5, replace=False).tolist())
        image_ident = {it.image_id: truth[it.id] for it in items if it.id in truth}
        new_images = {img for img, ident in image_ident.items() if ident in held or rng.random() < 0.2}
        first = np.array([pos[it.id] for it in items if it.image_id not in new_images])
        new = np.array([pos[it.id] for it in items if it.image_id in new_images])
        by_image = collections.defaultdict(list)
        for k, r in enumerate(first):
            by_image[items[r].image_id].append(k)
        est = Clusterer("default").fit(X[first].copy(),
                                       cannot_link=[g for g in by_image.values() if len(g) > 1])
        majority = {}
        for c in set(est.labels_.tolist()) - {NOISE}:
            votes = collections.Counter(truth.get(int(ids[first[k]]), "someone else")
                                        for k in np.where(est.labels_ == c)[0])
            majority[c] = votes.most_common(1)[0][0]
        for name, cap in rules.items():
            unknown = unknown_placed = known = known_right = 0
            for r, a in zip(new, assign(est, X[new], max_distance=cap)):
                t = truth.get(int(ids[r]))
                if t is None:
                    continue
                if t in held:
                    unknown += 1
                    unknown_placed += a.cluster is not None
                else:
                    known += 1
                    known_right += a.cluster is not None and majority.get(a.cluster) == t
            scores[name].append((unknown_placed / max(unknown, 1), known_right / max(known, 1)))
    lib.close()
    return {"folder": root, "identities": len(identities), "faces": len(ids), "seeds": seeds,
            "rules": {name: {"unknown_placed": round(float(np.mean([u for u, _ in v])), 4),
                             "known_right": round(float(np.mean([k for _, k in v])), 4),
                             "per_seed": [[round(u, 4), round(k, 4)] for u, k in v]}
                      for name, v in scores.items()},
            "targets": {"unknown_placed": "<= 0.02", "known_right": ">= 0.80"}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("folder", type=Path)
    ap.add_argument("--library", type=Path, help="library to (re)use; default: a temporary one")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--no-results", action="store_true")
    a = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="peoplemap-placement-") as tmp:
        out = run(a.folder, a.library or Path(tmp) / "lib", a.seeds)
    if a.json:
        print(json.dumps(out))
    else:
        for name, r in out["rules"].items():
            print(f"{name}: unknown placed {r['unknown_placed']:.3f}, known right {r['known_right']:.3f}")
    if not a.no_results:
        table = [{"set": Path(out["folder"]).name, "rule": name, "unknown placed": r["unknown_placed"],
                  "known placed right": r["known_right"]} for name, r in out["rules"].items()]
        append_result("Placement of new faces (bench_placement.py)", {"machine": machine(), **out},
                      f".venv/bin/python benchmarks/bench_placement.py {a.folder}", table=table,
                      notes="Targets: unknown placed <= 0.02, known placed right >= 0.80.")


if __name__ == "__main__":
    main()
