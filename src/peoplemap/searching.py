"""Search a library with an image: find what to match in the query, look it up in the FAISS index
of the chosen vector set, join hits to items and clusters, and assign the query to a cluster."""
from __future__ import annotations

import logging
import os
from typing import TYPE_CHECKING, Optional

import numpy as np

from .embed.base import crop
from .errors import ImageError, InputError
from .types import NOISE, Assignment, Hit, QueryResult

if TYPE_CHECKING:
    from .library import Library, VectorSetInfo

log = logging.getLogger(__name__)


def vector_index(lib: "Library", s: "VectorSetInfo"):
    """The set's FAISS index: cached in memory, else loaded from disk, else (re)built and saved.

    An index that only lacks items added since it was saved is brought up to date by adding those
    (reading only their vectors), not rebuilt: adding 1% to a million-item library takes seconds,
    a rebuild minutes. Removed items or changed vectors (a new whitening) mean a rebuild. Item ids
    are never reused, so an index holding an id the catalog no longer has is always rebuilt.
    """
    from .search import VectorIndex

    indexes = lib.derived.indexes
    base = content_stamp(lib, s)
    stamp = f"{base}|{s.generation}:{s.n_items}"
    with indexes.lock:
        idx = indexes.cached(s.id)
        if idx is not None and idx.stamp == stamp:
            return idx
        if idx is None:
            idx = indexes.load(s.id)
        if idx is not None and idx.stamp != stamp:
            idx = _updated(lib, s, idx, base)
        if idx is None:
            ids, X = lib.vectors(s.model)
            idx = VectorIndex.build(X, ids)
            del X
        changed = idx.stamp != stamp
        idx.stamp = stamp
        indexes.keep(s.id, idx, save=changed)
        return idx


def content_stamp(lib: "Library", s: "VectorSetInfo") -> str:
    """What the stored vectors of existing items depend on: model version and collection whitening."""
    return f"{s.version}:w{lib.derived.whitenings.stamp(s.id)}"


def _updated(lib: "Library", s: "VectorSetInfo", idx, base: str):
    """`idx` with the items added since it was saved, or None when it must be rebuilt."""
    if idx.stamp.rpartition("|")[0] != base:
        return None
    have = np.sort(idx.ids())
    current = lib.store.items.ids(s.id)
    if not np.isin(have, current, assume_unique=True).all():
        return None  # items were removed (HNSW and PQ cannot delete): rebuild
    new = np.setdiff1d(current, have, assume_unique=True)
    if new.size == 0 or new.size > max(1000, len(have)):
        # Nothing added yet the set changed (vectors rewritten in place), or more than doubling (a
        # fresh build picks the right kind and is as fast): rebuild.
        return None
    ids, X = lib.vectors(s.model, ids=new.tolist())
    idx.add(X, ids)
    log.info("added %d new item(s) to the index of %s (%d in all)", len(ids), s.model, len(idx))
    return idx


def cluster_model(lib: "Library", model: str):
    """(fitted cluster model, label map) of the current clustering, or None."""
    c = lib.clustering(model)
    if c is None:
        return None
    label_map = {int(k): int(v) for k, v in c.params.get("label_map", {}).items()}
    return lib.derived.cluster_models.get(c.set_id, c.id, label_map)


def load_query(lib: "Library", query) -> tuple[str, "object"]:
    """(display name, DecodedImage) for a path or image bytes, size-checked by content."""
    from .ingest import decode_image, read_image

    limit = lib.settings.max_upload_mb * 1024 * 1024
    if isinstance(query, (bytes, bytearray, memoryview)):
        data = bytes(query)
        if len(data) > limit:
            raise InputError(f"query image is {len(data) / 1e6:.1f} MB; the limit is "
                             f"{lib.settings.max_upload_mb} MB")
        try:
            return "upload", decode_image(data, settings=lib.settings)
        except ImageError as e:
            raise InputError(f"query image cannot be used: {e.reason}") from None
    path = os.fspath(query)
    if not os.path.isfile(path):
        raise InputError(f"query image {path!r} does not exist or is not a file")
    try:
        _sha, img = read_image(path, settings=lib.settings)
    except ImageError as e:
        raise InputError(f"query image {path!r} cannot be used: {e.reason}") from None
    return path, img


def search_image(lib: "Library", query, *, k: int, model: Optional[str],
                 name: Optional[str] = None) -> list[QueryResult]:
    if not isinstance(k, int) or k < 1:
        raise InputError(f"k must be a positive integer, got {k!r}")
    s = lib.vector_set(model)
    embedder = lib.embedder(s.model)
    if s.version in embedder.compatible_versions:
        lib.ensure_vector_set(embedder, rebuild=False)  # the same vectors under the former name
    elif embedder.version != s.version:
        raise InputError(f"the library's {s.model} vectors come from version {s.version} but the "
                         f"installed model is {embedder.version}; re-index with --rebuild")
    qname, img = load_query(lib, query)
    qname = name or qname
    regions = embedder.detect(img.pixels)
    if not regions:
        return [QueryResult(query=qname, region=None, cluster=None, confidence=0.0, hits=[])]
    Q = embedder.embed([crop(img.pixels, r) for r in regions])
    w = lib.whitening(s.model)
    if w is not None:
        Q = w.apply(Q)
    idx = vector_index(lib, s)
    D, I = idx.search(Q, min(k, max(1, len(idx))))
    assigned = assign_points(lib, s.model, Q)
    all_ids = sorted({int(i) for i in I.ravel() if i >= 0})
    items = {it.id: it for it in lib.items(s.model, ids=all_ids)}
    # Only the hits' labels and people are read: this runs on every search.
    from .people import person_of_cluster, persons_of

    labels = lib.labels(s.model, ids=all_ids)
    persons = persons_of(lib, all_ids)
    taken = lib.store.photos.taken_of_items(all_ids)
    clustering = lib.clustering(s.model)
    results = []
    for qi, r in enumerate(regions):
        hits = []
        for d, i in zip(D[qi], I[qi]):
            it = items.get(int(i))
            if i < 0 or it is None:
                continue
            lab = labels.get(it.id)
            p = persons.get(it.id)  # (person id, name)
            hits.append(Hit(item_id=it.id, path=it.path, box=it.box, distance=float(d),
                            similarity=float(1.0 - d * d / 2.0),
                            cluster=None if lab is None or lab == NOISE else int(lab),
                            person=p[1] if p else None, person_id=p[0] if p else None,
                            taken=taken.get(it.id)))
        a = assigned[qi]
        box = None
        if r.box is not None:
            scale = img.scale or 1.0
            box = tuple(int(round(v / scale)) for v in r.box)
        person = (person_of_cluster(lib, clustering.id, a.cluster)
                  if clustering is not None else None)
        results.append(QueryResult(query=qname, region=type(r)(box=box, score=r.score),
                                   cluster=a.cluster, confidence=a.confidence, hits=hits,
                                   person=person[1] if person else None,
                                   person_id=person[0] if person else None))
    return results


def assign_points(lib: "Library", model: str, Q: np.ndarray) -> list[Assignment]:
    """The cluster each vector of Q would join (the rule for queries and new items): the current
    clustering's numbering, None where no cluster takes it."""
    from .cluster import assign

    cm = cluster_model(lib, model)
    if cm is None:
        return [Assignment(None, 0.0) for _ in range(len(Q))]
    est, label_map = cm
    out = []
    for a in assign(est, Q, max_distance=lib.match_distance(model)):
        if a.cluster is None or a.cluster == NOISE or int(a.cluster) not in label_map:
            out.append(Assignment(None, 0.0))
        else:
            out.append(Assignment(label_map[int(a.cluster)], float(a.confidence)))
    return out
