"""How fast the review questions answer on a large library: merge suggestions (all people, one
person) and review groups, on N generated identity vectors clustered by the real Library.

    .venv/bin/python benchmarks/bench_review_scale.py --n 100000 [--rounds 3]

The library is built as bench_scale.py builds it (vectors written through the catalog, then
`Library.cluster`). Each question is first asked cold (`*_cold_s`: the review state the Library
keeps, peoplemap.derived.ReviewState, deleted first, in memory and on disk: vectors read, neighbour
tables made), then `rounds` times warm and the median reported; then a few answers are given (a
merge, a rejection, a confirmation) and each question is timed once more (`*_after_answers_s`: the
kept tables are updated for what changed); finally the library is opened again and each question
timed once (`*_reopened_s`: vectors read, tables started from their files). Target (issue:
suggestions and review groups for a library of 100k faces answer in < 1 s).
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_scale import MODEL, _write  # noqa: E402
from common import append_result, machine, print_json  # noqa: E402
from make_embeddings import make_embeddings  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--no-results", action="store_true")
    a = ap.parse_args()
    from peoplemap import Library

    X, _y = make_embeddings(a.n, seed=0)
    out: dict = {"n": a.n}
    with tempfile.TemporaryDirectory(prefix="pm-review-") as tmp:
        lib = Library.open(Path(tmp) / "lib", create=True)
        with lib.catalog.write() as c:
            set_id = c.execute(
                "INSERT INTO vector_sets(model, version, dim, item_kind, description, created_at) "
                "VALUES (?,?,?,?,?,?)", (MODEL, "1", X.shape[1], "face", json.dumps({"model": MODEL}),
                                         time.time())).lastrowid
        _write(lib, set_id, X, 0)
        t = time.perf_counter()
        lib.cluster(model=MODEL)
        out["cluster_s"] = round(time.perf_counter() - t, 1)
        people = lib.people(MODEL)
        out["people"] = len(people)
        out["unsorted"] = len(lib.unsorted(MODEL))
        probe = people[len(people) // 2].id

        def once(fn) -> float:
            t = time.perf_counter()
            fn()
            return round(time.perf_counter() - t, 3)

        questions = {"suggestions_all": lambda: lib.merge_suggestions(MODEL, limit=20),
                     "suggestions_person": lambda: lib.merge_suggestions(MODEL, person=probe, limit=5),
                     "review_groups": lambda: lib.review_groups(MODEL, limit=20)}
        sid = lib.vector_set(MODEL).id
        for name, fn in questions.items():
            lib.derived.review.delete(sid)  # nothing kept, in memory or on disk
            out[f"{name}_cold_s"] = once(fn)
            out[f"{name}_s"] = round(statistics.median(once(fn) for _ in range(a.rounds)), 3)
        for fn in questions.values():  # every table made, as a user's session has them
            fn()
        keep, gone, other = people[1], people[2], people[3]
        lib.merge_people(keep.id, [gone.id], MODEL)
        lib.reject_items(other.id, other.item_ids[:2], MODEL)
        lib.confirm_items(keep.id, lib.unsorted(MODEL)[:3], MODEL)
        for name, fn in questions.items():
            out[f"{name}_after_answers_s"] = once(fn)
        lib.close()
        # the library opened again (a new app session): vectors read again, tables from their files
        for name in questions:
            lib = Library.open(Path(tmp) / "lib")
            reopened = {"suggestions_all": lambda: lib.merge_suggestions(MODEL, limit=20),
                        "suggestions_person": lambda: lib.merge_suggestions(MODEL, person=probe, limit=5),
                        "review_groups": lambda: lib.review_groups(MODEL, limit=20)}
            out[f"{name}_reopened_s"] = once(reopened[name])
            lib.close()
    print_json(out)
    if not a.no_results:
        append_result("Review questions at scale (bench_review_scale.py)", {"machine": machine(), **out},
                      f".venv/bin/python benchmarks/bench_review_scale.py --n {a.n} --rounds {a.rounds}",
                      table=[out], notes="Target: suggestions and review groups < 1 s at 100k faces (warm: the "
                            "median of `rounds` calls after the cold one; reopened: the first call of a "
                            "library opened again, its review tables read from their files).")


if __name__ == "__main__":
    main()
