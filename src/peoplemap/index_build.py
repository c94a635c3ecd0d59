"""Search indexes for very large libraries, built in chunks from the stored vectors.

`VectorIndex.build` needs every vector in memory at once (4 d bytes per item: 51 GB for 100M 128-d
face vectors). `build_ivfpq` never holds more than one training sample and one shard: it trains an
"ivfpq" index (peoplemap.search) on a deterministic sample of the set's items, then reads the
vectors shard by shard, in item id order, and adds them. The index only keeps codes, so its memory
is about (PQ code + d + 16) bytes per item plus the id map.

It reads the catalog only, so it serves libraries indexed locally and with `--engine ray` alike,
and may run while the library is used: the index is saved with the set's stamp as it was when the
build started, and search brings it up to date (adds newer items) or rebuilds it when that stamp
no longer matches.
"""
from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Iterator, Optional

import numpy as np

from .errors import InputError
from .types import ProgressCallback, no_progress

if TYPE_CHECKING:
    from .library import Library
    from .search import VectorIndex

log = logging.getLogger(__name__)

SHARD = 100_000
"""Items read and added per shard (100k 128-d vectors: 51 MB)."""
TRAIN_PER_LIST = 64
"""Training rows per inverted list (FAISS warns below 39; k-means uses at most 256)."""
TRAIN_MAX = 2_000_000
"""Largest training sample."""


def build_ivfpq(lib: "Library", model: Optional[str] = None, *, shard: int = SHARD,
                train_size: Optional[int] = None, save: bool = True,
                progress: ProgressCallback = no_progress) -> "VectorIndex":
    """An "ivfpq" index of the vector set of `model`, built from the catalog in shards; with
    save=True it becomes the library's search index (`Library.index_for`, `Library.search`)."""
    from .search import IVFPQ_MIN_TRAIN, VectorIndex, check_vectors
    from .searching import content_stamp

    if isinstance(shard, bool) or not isinstance(shard, int) or shard < 1:
        raise InputError(f"shard must be an integer >= 1, got {shard!r}")
    t0 = time.perf_counter()
    s = lib.vector_set(model)
    stamp = f"{content_stamp(lib, s)}|{s.generation}:{s.n_items}"
    n = s.n_items
    if n < IVFPQ_MIN_TRAIN:
        raise InputError(f"an ivfpq index needs at least {IVFPQ_MIN_TRAIN} items; the {s.model} set "
                         f"has {n} (search builds an exact index for it by itself)")
    t = time.perf_counter()
    picked = lib.store.items.sample_ids(s.id, _train_size(n, train_size))
    _ids, sample = lib.vectors(s.model, ids=picked.tolist())
    dim = sample.shape[1]  # the stored dimension, or the whitened one for sets with a whitening
    sample = check_vectors(sample, dim, "stored vectors")
    index = VectorIndex.empty("ivfpq", dim, n, stamp=stamp)  # trained and filled without a full matrix
    index.train(sample)
    log.info("ivfpq %s: %d lists, trained on %d of %d items in %.1fs", s.model, index.nlist,
             len(sample), n, time.perf_counter() - t)
    del sample

    done = 0
    progress("ivfpq", 0, n)
    for ids in lib.store.items.id_shards(s.id, shard):
        got, X = lib.vectors(s.model, ids=ids.tolist())
        # Catalog primary keys read in ascending order are unique: no duplicate check needed.
        index.add_new(X, np.ascontiguousarray(got, dtype=np.int64))
        done += len(got)
        progress("ivfpq", done, n)
    log.info("ivfpq %s: %d items in %.1fs", s.model, len(index), time.perf_counter() - t0)
    if save:
        lib.derived.indexes.keep(s.id, index, save=True)
    return index


def _train_size(n: int, asked: Optional[int]) -> int:
    from .search import IVFPQ_MIN_TRAIN, ivfpq_nlist

    if asked is None:
        asked = min(TRAIN_MAX, TRAIN_PER_LIST * ivfpq_nlist(n))
    return max(IVFPQ_MIN_TRAIN, min(n, int(asked)))
