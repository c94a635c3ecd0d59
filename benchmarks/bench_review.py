"""A simulated user finishes the people page by answering peoplemap's own questions truthfully.

    python benchmarks/bench_review.py LABELED_FOLDER [--json] [--library DIR] [--max-actions N]

The folder is indexed with the default face model and clustered with the default profile (an
existing --library is reused: re-indexing an unchanged folder is quick). Then the user answers,
from the identity folders' labels:
- merge suggestions (`Library.merge_suggestions`): "same" merges, "different" is remembered; one
  action each;
- review groups (`Library.review_groups`): "Are these <candidate>?": accept the ticked faces (one
  action), untick each wrong face (one action each), "none of them" (one action), or assign the
  group to the right existing person / name it as a new person (one action).
A face's truth is its photo's identity when it is the photo's main face (the one `peoplemap eval`
scores: eval_runner.photo_subjects); other faces in a photo are "someone else".
BCubed F is computed over all labeled photos, each photo standing for its main face's person, and a
photo without a face (or whose face has no person) counting as its own singleton. It is reported
after 0, 25, 50, 100, 200, ... actions, with the actions needed to reach F >= 0.98 and 0.99.
Finally the library is re-clustered and every answer checked (violations: answers it undid).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Optional

import numpy as np

from peoplemap import Library
from peoplemap.evaluate import bcubed_prf

CHECKPOINTS = [0, 25, 50, 100, 200, 400, 800, 1600]


class Truth:
    """Identity of each photo's main face; everything else is 'someone else'."""

    def __init__(self, lib: Library, root: Path):
        self.root = str(root.resolve())
        self.photos: dict[int, str] = {}  # image id -> identity (labeled photos only)
        for image_id, path, _sha in lib.store.images.under(self.root):
            parts = os.path.relpath(path, self.root).split(os.sep)
            if len(parts) >= 2 and not parts[0].startswith("_"):
                self.photos[image_id] = parts[0]
        from peoplemap.eval_runner import photo_subjects

        # image -> main item, as `peoplemap eval` picks it
        self.main = {image_id: it.id for image_id, it in photo_subjects(lib, self.photos).items()}
        self.identity = {item: self.photos[image_id] for image_id, item in self.main.items()}

    def of(self, item_id: int) -> Optional[str]:
        return self.identity.get(item_id)

    def person_identity(self, item_ids) -> Optional[str]:
        """The identity most of a person's labeled faces have (None: no labeled face)."""
        votes = Counter(self.identity[i] for i in item_ids if i in self.identity)
        return votes.most_common(1)[0][0] if votes else None

    def f(self, lib: Library) -> float:
        persons = {i: p.id for p in lib.people(include_hidden=True) for i in p.item_ids}
        true, pred = [], []
        for k, (image_id, ident) in enumerate(sorted(self.photos.items())):
            item = self.main.get(image_id)
            p = persons.get(item) if item is not None else None
            true.append(ident)
            pred.append(f"p{p}" if p is not None else f"single{k}")
        return bcubed_prf(np.array(true, dtype=object), np.array(pred, dtype=object))[2]


class User:
    def __init__(self, lib: Library, truth: Truth):
        self.lib, self.truth = lib, truth
        self.actions = 0
        self.curve: list[tuple[int, float]] = []
        self.answers: list[tuple] = []  # for the violation check
        self.asked: set = set()

    def record(self) -> float:
        f = self.truth.f(self.lib)
        self.curve.append((self.actions, round(f, 4)))
        return f

    def person_by_identity(self) -> dict[str, int]:
        """identity -> the largest person whose majority identity it is."""
        out: dict[str, tuple[int, int]] = {}
        for p in self.lib.people(include_hidden=True):
            ident = self.truth.person_identity(p.item_ids)
            if ident is not None and (ident not in out or p.size > out[ident][1]):
                out[ident] = (p.id, p.size)
        return {k: v[0] for k, v in out.items()}

    def answer_suggestion(self, max_distance: float = float("inf")) -> bool:
        for s in self.lib.merge_suggestions(limit=50):
            if s.distance > max_distance:
                break
            key = ("merge", min(s.person_id, s.other_id), max(s.person_id, s.other_id))
            if key in self.asked:
                continue
            self.asked.add(key)
            people = {p.id: p for p in self.lib.people(include_hidden=True)}
            a, b = people.get(s.person_id), people.get(s.other_id)
            if a is None or b is None:
                continue
            ia, ib = self.truth.person_identity(a.item_ids), self.truth.person_identity(b.item_ids)
            self.actions += 1
            if ia is not None and ia == ib:
                self.lib.merge_people(a.id, [b.id])
                self.answers.append(("same", a.id, b.id))
            else:
                self.lib.mark_different(a.id, b.id)
                self.answers.append(("different", a.id, b.id))
            return True
        return False

    def answer_group(self) -> bool:
        for g in self.lib.review_groups(limit=200):
            key = ("group", g.kind, g.candidate_id, tuple(g.item_ids))
            if key in self.asked:
                continue
            self.asked.add(key)
            cand = None
            if g.candidate_id is not None:
                people = {p.id: p for p in self.lib.people(include_hidden=True)}
                if g.candidate_id in people:
                    cand = self.truth.person_identity(people[g.candidate_id].item_ids)
            truths = [self.truth.of(i) for i in g.item_ids]
            yes = [i for i, t in zip(g.item_ids, truths) if t is not None and t == cand]
            no = [i for i in g.item_ids if i not in yes]
            if yes:  # accept with the wrong ones unticked, or "none" and tick the right ones
                self.actions += 1 + min(len(no), len(yes))
                self.lib.confirm_items(g.candidate_id, yes)
                self.answers.append(("confirm", g.candidate_id, tuple(yes)))
                if no:  # unticked: not this person (unsorted ones just stay unsorted)
                    self.lib.reject_items(g.candidate_id, no)
                    self.answers.append(("reject", g.candidate_id, tuple(no)))
                return True
            labeled = Counter(t for t in truths if t is not None)
            if not labeled:  # faces of nobody we know: "none of them"
                self.actions += 1
                if g.candidate_id is not None:
                    self.lib.reject_items(g.candidate_id, g.item_ids)
                    self.answers.append(("reject", g.candidate_id, tuple(g.item_ids)))
                return True
            ident = labeled.most_common(1)[0][0]
            mine = [i for i, t in zip(g.item_ids, truths) if t == ident]
            self.actions += 1 + min(len(g.item_ids) - len(mine), len(mine))  # assign the right ones
            target = self.person_by_identity().get(ident)
            if target is not None:
                self.lib.confirm_items(target, mine)
                self.answers.append(("confirm", target, tuple(mine)))
            else:
                p = self.lib.new_person(mine)
                self.answers.append(("confirm", p.id, tuple(mine)))
            if g.kind == "uncertain" and g.candidate_id is not None:
                rest = [i for i in g.item_ids if i not in mine]
                if rest:
                    self.lib.reject_items(g.candidate_id, rest)
                    self.answers.append(("reject", g.candidate_id, tuple(rest)))
            return True
        return False

    def violations(self) -> int:
        """Answers the re-clustering undid. A face's later answer overrides its earlier ones (the
        user confirmed it with one person, then, asked again, with another): only the last counts."""
        people = {p.id: set(p.item_ids) for p in self.lib.people(include_hidden=True)}
        owner = {i: pid for pid, items in people.items() for i in items}
        last: dict[int, int] = {}
        for k, (kind, _pid, what) in enumerate(self.answers):
            if kind in ("confirm", "reject"):
                for i in what:
                    last[i] = k
        into = {what: pid for kind, pid, what in self.answers if kind == "same"}

        def now(pid: int) -> int:  # a person merged away lives on in the one it was merged into
            seen = set()
            while pid in into and pid not in seen:
                seen.add(pid)
                pid = into[pid]
            return pid

        bad = 0
        for k, (kind, pid, what) in enumerate(self.answers):
            pid = now(pid) if kind != "same" else pid
            if kind == "confirm":
                wrong = [i for i in what if last[i] == k and owner.get(i) != pid]
            elif kind == "reject":
                wrong = [i for i in what if last[i] == k and owner.get(i) == pid]
            elif kind == "different":
                other = now(what)
                wrong = [what] if pid in people and other in people and pid == other else []
            else:  # "same": the merged-away person must not come back
                wrong = [what] if what in people else []
            if wrong and os.environ.get("BENCH_REVIEW_TRACE"):
                print("violation:", kind, pid, wrong, "now with", [owner.get(i) for i in wrong]
                      if kind in ("confirm", "reject") else "", file=sys.stderr)
            bad += len(wrong)
        return bad


def run(folder: Path, library: Optional[Path], max_actions: int) -> dict:
    tmp = None
    if library is None:
        tmp = tempfile.TemporaryDirectory(prefix="peoplemap-review-")
        library = Path(tmp.name) / "lib"
    t0 = time.perf_counter()
    lib = Library.open(library, create=True)
    lib.index(folder)
    lib.cluster()
    truth = Truth(lib, folder)
    user = User(lib, truth)
    f = user.record()
    start_f = f
    t_questions = time.perf_counter()
    # peoplemap's queue: likely merges first (closer than the model's match distance), then the
    # review groups, then the remaining suggestions
    likely = lib.match_distance() or float("inf")
    while user.actions < max_actions and f < 0.999:
        before = user.actions
        if not (user.answer_suggestion(likely) or user.answer_group() or user.answer_suggestion()):
            break
        if user.actions == before:
            break
        f = user.record()
        if os.environ.get("BENCH_REVIEW_TRACE"):
            print(f"{user.actions:4d} {f:.4f} {user.answers[-1][0] if user.answers else ''} "
                  f"{str(user.answers[-1][1:])[:80] if user.answers else ''}", file=sys.stderr)
    questions_s = time.perf_counter() - t_questions
    lib.cluster()  # a re-clustering after the answers must keep every one of them
    violations = user.violations()
    end_f = truth.f(lib)
    curve = []
    for c in CHECKPOINTS:
        at = [fv for a, fv in user.curve if a <= c]
        if at and (c <= user.actions or not curve or curve[-1][0] < user.actions):
            curve.append([c, at[-1]])
    curve.append([user.actions, user.curve[-1][1]])

    def reach(target: float) -> Optional[int]:
        return next((a for a, fv in user.curve if fv >= target), None)

    out = {"folder": str(folder), "identities": len(set(truth.photos.values())),
           "photos": len(truth.photos), "start_f": round(start_f, 4), "curve": curve,
           "actions_to": {"0.98": reach(0.98), "0.99": reach(0.99)},
           "violations": violations, "end_f_after_recluster": round(end_f, 4),
           "actions": user.actions, "seconds": round(time.perf_counter() - t0, 1),
           "question_seconds": round(questions_s, 1)}
    lib.close()
    if tmp is not None:
        tmp.cleanup()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("folder", type=Path)
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    ap.add_argument("--library", type=Path, help="library to (re)use; default: a temporary one")
    ap.add_argument("--max-actions", type=int, default=800)
    args = ap.parse_args()
    out = run(args.folder, args.library, args.max_actions)
    if args.json:
        print(json.dumps(out))
        return
    print(f"{out['folder']}: {out['identities']} identities, {out['photos']} photos")
    print(f"start F {out['start_f']}; after re-cluster {out['end_f_after_recluster']}, "
          f"violations {out['violations']}")
    for a, f in out["curve"]:
        print(f"  {a:5d} actions  F {f}")
    print(f"actions to F>=0.98: {out['actions_to']['0.98']}, to 0.99: {out['actions_to']['0.99']}")


if __name__ == "__main__":
    sys.exit(main())
