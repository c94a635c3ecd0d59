"""Face quality on in-the-wild sets, from an indexed library's stored vectors (no re-indexing).

    .venv/bin/peoplemap index ../shared/data/celeba_wild_dev --library /tmp/cw.lib
    .venv/bin/python benchmarks/bench_faces.py --library /tmp/cw.lib --folder ../shared/data/celeba_wild_dev
    .venv/bin/python benchmarks/bench_faces.py --library /tmp/lfw.lib --folder ../shared/data/lfw_devtest

Reports, as `peoplemap eval` scores them (one face per labeled photo, eval_runner.photo_subjects:
the confident face nearest the photo's centre in face widths): photos without a face, leave-one-out rank-1 / mAP, BCubed F of each clustering profile over the
scored faces and over ALL labeled photos (a photo without a face is a group of its own), the
clustering of every face found (clusters spanning >= 5 identities: proven false detections), and,
where the folder has LFW's `pairsDevTest.txt`, verification accuracy on its pairs at the face
model's fixed thresholds (match distance, dlib's 0.6 = 0.41 on unit vectors) and at the best
threshold for those pairs (an optimistic bound), and with LFW's 10-fold protocol (each fold's
threshold chosen on the other nine: the protocol's figure).
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from common import print_json  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--library", required=True)
    ap.add_argument("--folder", required=True)
    ap.add_argument("--profiles", nargs="+", default=["default", "chinese-whispers"])
    args = ap.parse_args()

    from peoplemap import Library
    from peoplemap import evaluate
    from peoplemap.cluster import Clusterer, profile_distances
    from peoplemap.embed.face import DIM, MATCH_DISTANCE, dlib_part
    from peoplemap.eval_runner import all_items_report, all_photos_report, photo_subjects
    from peoplemap.types import NOISE

    lib = Library.open(args.library)
    root = os.path.realpath(args.folder)
    ident = {}
    for image_id, path, _sha in lib.store.images.under(root):
        parts = os.path.relpath(path, root).split(os.sep)
        if len(parts) >= 2 and not parts[0].startswith("_"):
            ident[int(image_id)] = (parts[0], os.path.basename(path))
    items = lib.items()
    every = [(it.id, ident[it.image_id][0]) for it in items if it.image_id in ident]
    best = {image_id: it.id for image_id, it in photo_subjects(lib, ident, items=items).items()}
    ids_all, X_all = lib.vectors()
    pos = {int(i): k for k, i in enumerate(ids_all)}
    scored = sorted(best)
    X = X_all[[pos[best[i]] for i in scored]].astype(np.float32)
    y = np.array([ident[i][0] for i in scored], dtype=object)
    missing = np.array([ident[i][0] for i in ident if i not in best], dtype=object)
    out: dict = {"folder": root, "photos": len(ident), "without_face": len(missing),
                 "without_face_pct": round(100 * len(missing) / max(1, len(ident)), 2),
                 "faces": len(every), "retrieval": evaluate.leave_one_out_retrieval(X, y), "profiles": {}}
    Xe = X_all[[pos[i] for i, _ in every]].astype(np.float32)
    item_score = {it.id: it.score for it in items}
    scored_items = [best[i] for i in scored]

    def score_of(item_ids):
        return np.array([item_score[i] for i in item_ids], dtype=np.float64)

    ye = np.array([who for _, who in every], dtype=object)
    for prof in args.profiles:
        # as Library.cluster runs it: the default profile checks its groups against the model's
        # match distance
        kw = ({"link_distance": lib.match_distance(), "merge_distance": lib.merge_distance(),
               "min_group_score": lib.min_group_score()}
              if prof == "default" else {})
        kw.update(profile_distances(prof, lib.distance_scale()))
        lab = Clusterer(prof, **kw).fit(X.copy(), scores=score_of(scored_items)).labels_
        rep = evaluate.clustering_report(y, lab)
        allp = all_photos_report(y, lab, missing)
        lab_e = Clusterer(prof, **kw).fit(Xe.copy(), scores=score_of([i for i, _ in every])).labels_
        out["profiles"][prof] = {"bcubed_f": round(rep["bcubed_f"], 4),
                                 "bcubed_p": round(rep["bcubed_precision"], 4),
                                 "bcubed_r": round(rep["bcubed_recall"], 4),
                                 "noise": round(rep["noise_fraction"], 4),
                                 "bcubed_f_all_photos": round(allp["bcubed_f"], 4),
                                 "all_faces": all_items_report(ye, lab_e)}
    if X.shape[1] == DIM:
        # the peer on dlib's own descriptors (the first part of the face vectors) at dlib's threshold
        lab = Clusterer("chinese-whispers").fit(dlib_part(X)).labels_
        out["chinese_whispers_on_dlib_descriptors"] = {
            "bcubed_f": round(evaluate.clustering_report(y, lab)["bcubed_f"], 4),
            "bcubed_f_all_photos": round(all_photos_report(y, lab, missing)["bcubed_f"], 4)}
    pairs = Path(root) / "pairsDevTest.txt"
    if pairs.is_file():
        out["lfw_pairs"] = lfw_pairs(pairs, {ident[i][1]: X_all[pos[best[i]]] for i in scored},
                                     {"match_distance": MATCH_DISTANCE,
                                      "dlib_0.6": round(0.41 * lib.distance_scale(), 4)})
    print_json(out)


def lfw_pairs(path: Path, vec: dict, thresholds: dict) -> dict:
    """Verification accuracy on LFW pairs; a pair with a photo without a face counts as wrong."""
    lines = path.read_text().split("\n")[1:]
    d, same = [], []
    for line in lines:
        f = line.split("\t")
        if len(f) == 3:
            a, b, s = (f"{f[0]}_{int(f[1]):04d}.jpg", f"{f[0]}_{int(f[2]):04d}.jpg", True)
        elif len(f) == 4:
            a, b, s = (f"{f[0]}_{int(f[1]):04d}.jpg", f"{f[2]}_{int(f[3]):04d}.jpg", False)
        else:
            continue
        va, vb = vec.get(a), vec.get(b)
        d.append(np.inf if va is None or vb is None else float(np.linalg.norm(va - vb)))
        same.append(s)
    d, same = np.array(d), np.array(same)
    res = {"pairs": int(len(d)), "pairs_missing_a_face": int(np.isinf(d).sum())}
    for name, t in thresholds.items():
        res[f"accuracy_at_{name}_{t}"] = round(float(((d < t) == same).mean()), 4)
    t, acc = best_threshold(d, same)
    res["best_threshold_on_these_pairs"] = round(t, 4)
    res["accuracy_at_best_threshold"] = round(acc, 4)
    # LFW's protocol: 10 folds, the threshold of each chosen on the other nine (the file lists the
    # same-person pairs, then the others: fold k takes the k-th tenth of each)
    folds = np.concatenate([np.arange(n) * 10 // max(1, n) for n in (int(same.sum()), int((~same).sum()))])
    order = np.concatenate([np.flatnonzero(same), np.flatnonzero(~same)])
    fold = np.empty(len(d), dtype=np.int64)
    fold[order] = folds
    accs = []
    for k in range(10):
        t, _ = best_threshold(d[fold != k], same[fold != k])
        accs.append(float(((d[fold == k] < t) == same[fold == k]).mean()))
    res["accuracy_10_fold"] = round(float(np.mean(accs)), 4)
    res["accuracy_10_fold_sd"] = round(float(np.std(accs)), 4)
    return res


def best_threshold(d: np.ndarray, same: np.ndarray) -> tuple[float, float]:
    """(threshold, accuracy) maximising the accuracy of "same person when closer than it"; the
    threshold sits halfway between two neighbouring distances."""
    cand = np.unique(d[np.isfinite(d)])
    cand = np.concatenate([(cand[:-1] + cand[1:]) / 2, cand[-1:] + 1e-6]) if len(cand) else np.array([np.inf])
    accs = [((d < t) == same).mean() for t in cand]
    k = int(np.argmax(accs))
    return float(cand[k]), float(accs[k])


if __name__ == "__main__":
    main()
