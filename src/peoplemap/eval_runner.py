"""`peoplemap eval`: score a model and clustering profile on a labeled folder `<identity>/<image>`.

The folder is indexed into a library (a temporary one unless `keep_library` names a folder), the
library clusters it, and the stored vectors and labels are scored with `evaluate`'s metrics:
retrieval (leave-one-out, or cross-camera when a camera pattern is given) and clustering.

Rules, applied after indexing, to the images the library decoded under the folder:
- identity of an image (and of its items) = its first path component under the folder;
  folders starting with `_` are not identities (group photos) and files at the top are ignored;
  files that are not images (SOURCE.txt ...) are skipped by the indexer and only counted;
- byte-identical duplicates are dropped (`evaluate.dedupe_by_hash` over the sha256 ingest stored,
  first path in sorted order kept), or copies would score as free perfect matches;
- an image may yield 0 items (counted in images_without_items) or several (face/body models): one
  item per image is scored, the highest-scoring one (then the largest box, then the lowest id),
  because a labeled identity folder shows its person as the main subject.
Clustering runs over the scored items only (labeled, deduplicated, one per image), the protocol of
the face-clustering literature: `_` folders are for detection checks, not distractors. It is also
scored over all labeled photos, a photo without an item counting as a group of its own
(`all_photos`), and, when images yield several items, over every item of the labeled photos as
`peoplemap cluster` groups a library (`all_items`): there a cluster whose items come from
MIXED_IDENTITIES or more identity folders cannot be one person, so it proves false detections
(hair, logos, text), and items left unsorted are counted. With a baseline, the baseline method
runs first, so a kept library ends with peoplemap's clustering as its current one. Baselines: "seed"
(the design's method: whole-image MobileNetV2 + the seed profile) and "chinese-whispers" (dlib's
chinese whispers on the same vectors, the peer method of dlib's face-clustering example).
"""
from __future__ import annotations

import logging
import math
import os
import re
import tempfile
import time
from contextlib import contextmanager, nullcontext
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Iterator, Optional

import numpy as np

from . import evaluate
from .config import Settings
from .errors import InputError
from .types import NOISE, ProgressCallback, no_progress

if TYPE_CHECKING:
    from .indexing import IndexSummary
    from .library import Library

log = logging.getLogger(__name__)

DESIGN_MODEL = "mobilenetv2"
DESIGN_PROFILE = "seed"
"""The seed design's method, run by `baseline="seed"`: whole-image MobileNetV2 + the seed profile."""
BASELINES = ("seed", "chinese-whispers")
MIXED_IDENTITIES = 5
"""A cluster of all items whose items come from this many identity folders or more is not a person."""


@dataclass(frozen=True)
class Counts:
    """What was scored. Images are files the library decoded; items are what the model embedded."""

    n_identities: int
    n_images: int
    """Labeled images after dropping duplicates."""
    n_duplicates: int
    n_items: int
    """Items scored: at most one per image."""
    images_without_items: int
    n_ignored_images: int
    """Images in `_` folders or directly in the top folder (not scored)."""
    n_skipped_files: int
    """Files under the folder that are not usable images (SOURCE.txt, unreadable files)."""


@dataclass(frozen=True)
class Timings:
    """Seconds per stage; `total` = index + reading vectors + cluster + retrieval of this method."""

    index: float
    cluster: float
    retrieval: float
    total: float
    index_stages: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class EvalReport:
    """Scores of one method (model + clustering profile) on one labeled folder."""

    folder: str
    model: str
    profile: str
    min_cluster_size: Optional[int]
    camera_pattern: Optional[str]
    counts: Counts
    retrieval: dict[str, Any]
    """rank1, rank5, rank10, mAP, n_queries, n_skipped, protocol ("leave-one-out"/"cross-camera")."""
    clustering: dict[str, Any]
    """`evaluate.clustering_report` over the scored items."""
    cluster_params: dict[str, Any]
    seconds: Timings
    library: Optional[str] = None
    """The kept library folder; None when a temporary library was used."""

    def to_json(self) -> dict:
        return _jsonable(asdict(self))

    def format_table(self) -> str:
        title = f"{self.folder}: {self.model} + profile {self.profile}"
        return _table(title, ["metric", "value"], [(k, [v]) for k, v in _rows(self)])


@dataclass(frozen=True)
class EvalComparison:
    """The design's method (mobilenetv2 + seed) and peoplemap's, evaluated in one run."""

    design: EvalReport
    peoplemap: EvalReport
    seconds: float
    """Wall time of the whole run."""

    baseline: str = "seed"

    def to_json(self) -> dict:
        return {"folder": self.peoplemap.folder, "baseline": self.baseline, "design": self.design.to_json(),
                "peoplemap": self.peoplemap.to_json(), "seconds": round(self.seconds, 3)}

    def format_table(self) -> str:
        p = self.peoplemap
        title = (f"{p.folder}: {self.baseline} = {self.design.model} + profile {self.design.profile}; "
                 f"peoplemap = {p.model} + profile {p.profile}")
        mine = dict(_rows(p))
        head = "design (seed)" if self.baseline == "seed" else self.baseline
        theirs = dict(_rows(self.design))
        keys = dict.fromkeys([k for k, _ in _rows(self.design)] + list(mine))
        return _table(title, ["metric", head, "peoplemap"],
                      [(k, [theirs.get(k, "-"), mine.get(k, "-")]) for k in keys])


# ----------------------------------------------------------------------------------------------
# running


@dataclass
class _Labeled:
    """The scored items of one vector set: one row per kept labeled image that has an item."""

    item_ids: np.ndarray
    X: np.ndarray
    identities: np.ndarray
    names: list[str]
    counts: Counts
    read_seconds: float
    missing: np.ndarray
    """Identities of the kept labeled images without any item."""
    all_ids: np.ndarray
    """Every item of the kept labeled images, and its image's identity (all_identities)."""
    all_identities: np.ndarray


def evaluate_folder(folder: str | os.PathLike, *, model: str | None = None,
                    profile: str = "default", min_cluster_size: int | None = None,
                    baseline: str | None = None, camera_pattern: str | None = None,
                    settings: Settings | None = None, keep_library: str | os.PathLike | None = None,
                    progress: ProgressCallback = no_progress) -> EvalReport | EvalComparison:
    """Index, cluster and score a labeled folder; with baseline="seed" also the design's method."""
    t_start = time.perf_counter()
    root, names = _check_folder(folder)
    if baseline not in (None, *BASELINES):
        raise InputError(f"unknown baseline {baseline!r}; allowed: {list(BASELINES)} or none")
    from .cluster import PROFILES

    if profile not in PROFILES:
        raise InputError(f"Unknown clustering profile: {profile!r}. Must be one of {sorted(PROFILES)}")
    cam_re = _camera_regex(camera_pattern, root, names)
    if model is None:
        from .config import load_settings

        model = (settings or load_settings()).default_model
    methods = [(model, profile, min_cluster_size)]
    if baseline == "seed":
        methods.insert(0, (DESIGN_MODEL, DESIGN_PROFILE, None))
    elif baseline == "chinese-whispers":
        methods.insert(0, (model, "chinese-whispers", None))

    _warm_imports()
    reports: list[EvalReport] = []
    with _library(keep_library, settings) as lib:
        indexed: dict[str, tuple["IndexSummary", float]] = {}
        for m in dict.fromkeys(m for m, _, _ in methods):  # each model once, in order
            t = time.perf_counter()
            summary = lib.index(root, model=m, progress=_prefixed(progress, m))
            indexed[m] = (summary, time.perf_counter() - t)
            log.info("indexed %s with %s in %.1fs", root, m, indexed[m][1])
        labeled: dict[str, _Labeled] = {}
        retrieval: dict[str, tuple[dict, float]] = {}
        for m, prof, mcs in methods:
            summary, index_s = indexed[m]
            if m not in labeled:
                labeled[m] = _labeled_items(lib, root, m, len(summary.skipped))
                t = time.perf_counter()
                retrieval[m] = (_retrieval(labeled[m], cam_re, camera_pattern),
                                time.perf_counter() - t)
            data = labeled[m]
            all_items = None
            if len(data.all_ids) > len(data.item_ids):
                lib.cluster(model=m, profile=prof, min_cluster_size=mcs, items=data.all_ids)
                all_labels = lib.labels(m)
                all_items = all_items_report(
                    data.all_identities, np.array([all_labels.get(int(i), NOISE) for i in data.all_ids]))
            t = time.perf_counter()
            cs = lib.cluster(model=m, profile=prof, min_cluster_size=mcs,
                             progress=_prefixed(progress, prof), items=data.item_ids)
            labels = lib.labels(m)
            cluster_s = time.perf_counter() - t
            pred = np.array([labels.get(int(i), NOISE) for i in data.item_ids], dtype=np.int64)
            clustering = evaluate.clustering_report(data.identities, pred)
            clustering["all_photos"] = all_photos_report(data.identities, pred, data.missing)
            if all_items is not None:
                clustering["all_items"] = all_items
            ret, ret_s = retrieval[m]
            reports.append(EvalReport(
                folder=root, model=m, profile=prof, min_cluster_size=mcs,
                camera_pattern=camera_pattern, counts=data.counts, retrieval=ret,
                clustering=clustering, cluster_params=dict(cs.params),
                seconds=Timings(index=round(index_s, 3), cluster=round(cluster_s, 3),
                                retrieval=round(ret_s, 3),
                                total=round(index_s + data.read_seconds + cluster_s + ret_s, 3),
                                index_stages=dict(summary.stage_seconds)),
                library=None if keep_library is None else str(lib.path)))
            log.info("%s + %s on %s: rank1 %.3f, BCubed F %.3f", m, prof, root,
                     ret["rank1"], clustering["bcubed_f"])
    if baseline is None:
        return reports[0]
    return EvalComparison(design=reports[0], peoplemap=reports[1],
                          seconds=time.perf_counter() - t_start, baseline=baseline)


def all_photos_report(identities: np.ndarray, pred: np.ndarray, missing: np.ndarray) -> dict:
    """BCubed P/R/F over every labeled photo: the scored items' labels, and each unsorted item and
    each photo without an item as a group of its own."""
    n, m = len(pred), len(missing)
    own = -np.arange(1, n + m + 1)
    labels = np.concatenate([np.where(pred == NOISE, own[:n], pred), own[n:]])
    truth = np.concatenate([identities, missing]).astype(object)
    p, r, f = evaluate.bcubed_prf(truth, labels)
    return {"n_photos": n + m, "without_items": m, "bcubed_precision": p, "bcubed_recall": r, "bcubed_f": f}


def all_items_report(identities: np.ndarray, labels: np.ndarray) -> dict:
    """Clustering of every item of the labeled photos: clusters whose items come from
    MIXED_IDENTITIES or more identity folders (not a person: false detections), their items, the
    most identities in one cluster, and items left unsorted."""
    clusters = np.unique(labels[labels != NOISE])
    spans = [len(set(identities[labels == c].tolist())) for c in clusters]
    mixed = [c for c, k in zip(clusters, spans) if k >= MIXED_IDENTITIES]
    return {"n_items": int(len(labels)), "n_clusters": int(len(clusters)),
            "mixed_clusters": len(mixed),
            "items_in_mixed_clusters": int(np.isin(labels, mixed).sum()) if mixed else 0,
            "max_identities_in_a_cluster": int(max(spans, default=0)),
            "unsorted_items": int((labels == NOISE).sum())}


@contextmanager
def _library(keep_library: str | os.PathLike | None, settings: Settings | None) -> Iterator["Library"]:
    """The given library folder (created if missing), or a temporary one removed afterwards."""
    from .library import Library

    temp = tempfile.TemporaryDirectory(prefix="peoplemap-eval-") if keep_library is None else None
    with temp or nullcontext(None) as tmp:
        lib = Library.open(keep_library if tmp is None else os.path.join(tmp, "library"),
                           create=True, settings=settings)
        try:
            yield lib
        finally:
            lib.close()


def _warm_imports() -> None:
    """Import the clustering packages up front so the first method timed does not pay for it."""
    import hdbscan  # noqa: F401
    import sklearn.decomposition  # noqa: F401
    import sklearn.metrics  # noqa: F401
    import sklearn.neighbors  # noqa: F401
    import sklearn.preprocessing  # noqa: F401


def _prefixed(progress: ProgressCallback, label: str) -> ProgressCallback:
    def cb(stage: str, done: int, total: int | None) -> None:
        progress(f"{label} {stage}", done, total)
    return cb


def _check_folder(folder: str | os.PathLike) -> tuple[str, list[str]]:
    """Absolute path of a folder holding at least 2 identity folders with files in them, and the
    names of the files in its identity folders."""
    from .ingest import scan

    root = os.path.abspath(os.path.expanduser(os.fspath(folder)))
    if not os.path.isdir(root):
        raise InputError(f"labeled folder not found: {root} (eval needs a folder of "
                         "<identity>/<image> files)")
    labeled = [p for p in _parts(root, (e.path for e in scan(root)))
               if len(p) > 1 and not p[0].startswith("_")]
    ids = sorted({p[0] for p in labeled})
    if len(ids) < 2:
        raise InputError(f"{root} has {len(ids)} identity folder(s) with files {ids}; eval needs at "
                         "least 2: a folder of <identity>/<image> files (folders starting with _ "
                         "are not identities)")
    return root, [p[-1] for p in labeled]


def _parts(root: str, paths: Iterator[str]) -> Iterator[tuple[str, ...]]:
    for p in paths:
        yield tuple(os.path.relpath(p, root).split(os.sep))


# ----------------------------------------------------------------------------------------------
# cameras


def _camera_regex(pattern: str | None, root: str, names: list[str]) -> Optional[re.Pattern[str]]:
    """Compile the camera pattern and check that it matches at least one labeled file name."""
    if pattern is None:
        return None
    try:
        rx = re.compile(pattern)
    except re.error as e:
        raise InputError(f"camera pattern {pattern!r} is not a valid regular expression: {e}") from None
    if not any(camera_of(rx, n) is not None for n in names):
        example = next((n for n in names if os.path.splitext(n)[1].lower() != ".txt"), names[0])
        raise InputError(f"camera pattern {pattern!r} matches none of the {len(names)} file names "
                         f"in {root}, e.g. {example!r}")
    return rx


def camera_of(rx: re.Pattern[str], name: str) -> Optional[str]:
    """Camera id of a file name: `rx.search(name)`'s first capture group, or the whole match when
    the pattern has no group. With named groups, the name of the first named group that matched,
    so one pattern can merge several codes into one camera: `(?:(?P<A>00[12])|(?P<B>00[34]))`."""
    m = rx.search(name)
    if m is None:
        return None
    if rx.groupindex:
        for gname, _ in sorted(rx.groupindex.items(), key=lambda kv: kv[1]):
            if m.group(gname) is not None:
                return gname
        return None
    if rx.groups:
        return m.group(1)
    return m.group(0)


# ----------------------------------------------------------------------------------------------
# items and metrics


def photo_subjects(lib: "Library", image_ids: Any, model: str | None = None,
                   items: Optional[list[Any]] = None) -> dict[int, Any]:
    """image id -> the item (face) each of these photos is of, by `evaluate.subject_key`: the
    confident face (score above the model's min_group_score) nearest the photo's centre in face
    widths. Photos without items are left out. `items`: the model's items where the caller has
    read them already. Used by `peoplemap eval` and the benchmarks, so they all score the same
    face of a labeled photo."""
    wanted = {int(i) for i in image_ids}
    faces: dict[int, list] = {}
    for it in lib.items(model) if items is None else items:
        if it.image_id in wanted:
            faces.setdefault(it.image_id, []).append(it)
    sizes = lib.store.photos.sizes(list(faces))
    floor = lib.min_group_score(model)
    out = {}
    for image_id, its in faces.items():
        _path, w, h = sizes[image_id]
        out[image_id] = max(its, key=lambda it: (*evaluate.subject_key(it.box, it.score, w, h, floor), -it.id))
    return out


def _labeled_items(lib: "Library", root: str, model: str, n_skipped: int) -> _Labeled:
    """Map the model's items under root back to identity folders, drop duplicates, one per image."""
    t = time.perf_counter()
    images = lib.store.images.under(root)
    labeled: list[tuple[int, str, str, str]] = []  # image id, path, sha256, identity
    ignored = 0
    for (image_id, path, sha), parts in zip(images, _parts(root, (r[1] for r in images))):
        if len(parts) < 2 or parts[0].startswith("_"):
            ignored += 1
        else:
            labeled.append((int(image_id), path, sha, parts[0]))
    keep = evaluate.dedupe_by_hash([r[1] for r in labeled], [r[2] for r in labeled])
    kept = [labeled[i] for i in keep]

    items = lib.items(model)
    best = photo_subjects(lib, [r[0] for r in kept], model, items)
    rows = [(best[r[0]], r[3]) for r in kept if r[0] in best]
    missing = np.array([r[3] for r in kept if r[0] not in best], dtype=object)
    ident_of = {r[0]: r[3] for r in kept}
    every = [(it.id, ident_of[it.image_id]) for it in items if it.image_id in ident_of]
    item_ids, X = lib.vectors(model)
    pos = {int(i): k for k, i in enumerate(item_ids)}
    ids = np.array([it.id for it, _ in rows], dtype=np.int64)
    identities = np.array([ident for _, ident in rows], dtype=object)
    n_identities = len(set(identities.tolist()))
    if n_identities < 2:
        raise InputError(f"only {n_identities} identity folder(s) of {root} have images that model "
                         f"{model} could embed; eval needs at least 2")
    counts = Counts(n_identities=n_identities, n_images=len(kept),
                    n_duplicates=len(labeled) - len(kept), n_items=len(rows),
                    images_without_items=len(kept) - len(rows), n_ignored_images=ignored,
                    n_skipped_files=n_skipped)
    log.info("%s: %s", root, counts)
    return _Labeled(item_ids=ids, X=X[[pos[int(i)] for i in ids]], identities=identities,
                    names=[os.path.basename(it.path) for it, _ in rows], counts=counts,
                    read_seconds=time.perf_counter() - t, missing=missing,
                    all_ids=np.array([i for i, _ in every], dtype=np.int64),
                    all_identities=np.array([ident for _, ident in every], dtype=object))


def _retrieval(data: _Labeled, cam_re: Optional[re.Pattern[str]], pattern: Optional[str]) -> dict:
    if cam_re is None:
        out = evaluate.leave_one_out_retrieval(data.X, data.identities)
        return {**out, "protocol": "leave-one-out"}
    cams = [camera_of(cam_re, n) for n in data.names]
    missing = [n for n, c in zip(data.names, cams) if c is None]
    if missing:
        raise InputError(f"camera pattern {pattern!r} gives no camera for {len(missing)} of "
                         f"{len(cams)} images, e.g. {missing[0]!r}; every scored image needs one")
    out = evaluate.cross_camera_retrieval(data.X, data.identities, np.array(cams, dtype=object))
    return {**out, "protocol": "cross-camera", "n_cameras": len(set(cams))}


# ----------------------------------------------------------------------------------------------
# output


def _jsonable(v: Any) -> Any:
    """NaN (undefined metric) becomes None so the JSON is strict; numpy scalars become Python."""
    if isinstance(v, dict):
        return {k: _jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    if isinstance(v, np.generic):
        v = v.item()
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


def _num(v: Any, digits: int = 3) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "n/a"
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    return str(v)


def _rows(r: EvalReport) -> list[tuple[str, str]]:
    """(label, value) rows of a report, in display order; labels are the same for every report."""
    c, ret, cl, s = r.counts, r.retrieval, r.clustering, r.seconds
    return [
        ("identities", _num(c.n_identities)), ("images (after dedupe)", _num(c.n_images)),
        ("duplicates dropped", _num(c.n_duplicates)), ("items scored", _num(c.n_items)),
        ("images without items", _num(c.images_without_items)),
        ("retrieval protocol", str(ret["protocol"])),
        ("queries (skipped)", f"{ret['n_queries']} ({ret['n_skipped']})"),
        ("rank-1", _num(ret["rank1"])), ("rank-5", _num(ret["rank5"])),
        ("rank-10", _num(ret["rank10"])), ("mAP", _num(ret["mAP"])),
        ("clusters / identities", f"{cl['n_clusters']} / {cl['n_identities']}"),
        ("noise fraction", _num(cl["noise_fraction"])),
        *[(f"{kind} {m}", _num(cl[f"{kind.lower()}_{m.lower()}"]))
          for kind in ("BCubed", "pairwise") for m in ("precision", "recall", "F")],
        ("ARI", _num(cl["ari"])), ("NMI", _num(cl["nmi"])),
        ("BCubed F, all photos", _num(cl["all_photos"]["bcubed_f"])),
        *_all_items_rows(cl.get("all_items")),
        ("seconds: index", _num(s.index, 1)), ("seconds: cluster", _num(s.cluster, 2)),
        ("seconds: retrieval", _num(s.retrieval, 2)), ("seconds: total", _num(s.total, 1)),
    ]


def _all_items_rows(a: Optional[dict]) -> list[tuple[str, str]]:
    if a is None:
        return []
    return [("all items: items / clusters", f"{a['n_items']} / {a['n_clusters']}"),
            (f"all items: clusters of >= {MIXED_IDENTITIES} identities (items)",
             f"{a['mixed_clusters']} ({a['items_in_mixed_clusters']})"),
            ("all items: most identities in a cluster", str(a["max_identities_in_a_cluster"])),
            ("all items: unsorted", str(a["unsorted_items"]))]


def _table(title: str, header: list[str], rows: list[tuple[str, list[str]]]) -> str:
    """A plain aligned text table: label column left-aligned, value columns right-aligned."""
    cells = [header] + [[label, *values] for label, values in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]

    def line(row: list[str]) -> str:
        return "  ".join([row[0].ljust(widths[0])] +
                         [v.rjust(w) for v, w in zip(row[1:], widths[1:])]).rstrip()

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([title, line(header), rule] + [line(r) for r in cells[1:]])
