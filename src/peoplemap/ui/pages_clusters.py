"""Clusters page: counts, one gallery per group the clustering found (largest first, paginated),
unsorted, and a map. Each group is shown as the person it belongs to (a name, or "Person 12", the
person's stable number, as everywhere else); cluster numbers are technical details."""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import streamlit as st

from ..types import NOISE
from ..wording import count, noun, person_label
from . import common, thumbs

if TYPE_CHECKING:
    from ..library import Library

CLUSTERS_PER_PAGE = 10
MAX_THUMBS = 60
"""Thumbnails shown per cluster (and for the unsorted items); the rest are counted."""
MAP_POINTS = 5000
PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2",
           "#bcbd22", "#17becf", "#393b79", "#637939", "#8c6d31", "#843c39", "#7b4173"]
NOISE_COLOUR = "#b8b8b8"
LEGEND_CLUSTERS = 20
"""Up to this many clusters get a legend entry each; more are drawn as one trace without one."""


@dataclass(frozen=True)
class _Groups:
    """The current clustering as arrays: cluster c (largest first) holds item ids
    members[starts[c]:starts[c] + sizes[c]] in id order; unsorted holds the rest, in id order."""

    ids: np.ndarray
    sizes: np.ndarray
    starts: np.ndarray
    members: np.ndarray
    unsorted: np.ndarray

    def items_of(self, k: int, limit: int) -> list[int]:
        start = int(self.starts[k])
        return self.members[start:start + min(limit, int(self.sizes[k]))].tolist()


@st.cache_data(max_entries=4, show_spinner=False)
def _groups(lib_path: str, model: str, clustering_id: int, generation: int) -> _Groups:
    """One read of the labels, grouped with numpy; what lib.clusters() and lib.unsorted() return,
    without building a list per cluster. clustering_id and generation are the cache key: labels
    change only with a new clustering or when items go (which bumps the generation)."""
    lib = common.get_library(lib_path)
    labels = lib.labels(model)
    item = np.fromiter(labels.keys(), dtype=np.int64, count=len(labels))
    label = np.fromiter(labels.values(), dtype=np.int64, count=len(labels))
    noise = label == NOISE
    unsorted = np.sort(item[noise])
    item, label = item[~noise], label[~noise]
    ids, inverse, sizes = np.unique(label, return_inverse=True, return_counts=True)
    order = np.lexsort((ids, -sizes))  # largest first, then by cluster id, as lib.clusters()
    rank = np.empty(len(order), dtype=np.int64)
    rank[order] = np.arange(len(order))
    members = item[np.lexsort((item, rank[inverse]))]  # by cluster rank, then by item id
    sizes = sizes[order].astype(np.int64)
    starts = (np.cumsum(sizes) - sizes).astype(np.int64)
    return _Groups(ids=ids[order].astype(np.int64), sizes=sizes, starts=starts, members=members,
                   unsorted=unsorted)


def _sample_vectors(lib: "Library", model: str, n: int) -> tuple[np.ndarray, np.ndarray]:
    """(item ids, vectors) of a random sample of at most n items of a vector set, reading only those
    vectors (whitened like lib.vectors()). The map must not load 100k+ vectors to draw 5000."""
    s = lib.vector_set(model)
    ids = lib.store.items.ids(s.id)
    if len(ids) > n:
        ids = np.sort(np.random.default_rng(0).choice(ids, n, replace=False))
    return lib.vectors(model, ids=ids.tolist())


@st.cache_data(max_entries=8, show_spinner="Computing the map…")
def _map_points(lib_path: str, model: str, clustering_id: int, generation: int) -> dict:
    """2-D PCA of a sample of at most MAP_POINTS vectors with each point's cluster and file name.
    clustering_id and generation are part of the cache key: a new run or new vectors redraw."""
    lib = common.get_library(lib_path)
    ids, X = _sample_vectors(lib, model, MAP_POINTS)
    if len(ids) >= 2:
        X = X.astype(np.float64) - X.mean(axis=0, dtype=np.float64)
        _u, _s, vt = np.linalg.svd(X, full_matrices=False)
        xy = X @ vt[:2].T
        if xy.shape[1] < 2:
            xy = np.pad(xy, ((0, 0), (0, 2 - xy.shape[1])))
    else:
        xy = np.zeros((len(ids), 2))
    labels = lib.labels(model, ids=ids.tolist())
    paths = {it.id: it.path for it in lib.items(model, ids=ids.tolist())}
    return {
        "x": xy[:, 0], "y": xy[:, 1],
        "label": np.asarray([labels.get(int(i), NOISE) for i in ids], dtype=np.int64),
        "name": np.asarray([os.path.basename(paths.get(int(i), "?")) for i in ids], dtype=object),
        "sampled": len(ids),
    }


def _map(lib: "Library", model: str, clustering_id: int, generation: int, n_items: int,
         kind: str) -> None:
    import plotly.graph_objects as go

    pts = _map_points(str(lib.path), model, clustering_id, generation)
    if not pts["sampled"]:
        return
    x, y, label, name = pts["x"], pts["y"], pts["label"], pts["name"]
    fig = go.Figure()
    noise = label == NOISE
    if noise.any():
        fig.add_trace(go.Scattergl(
            x=x[noise], y=y[noise], mode="markers", name="unsorted",
            marker=dict(color=NOISE_COLOUR, size=6), text=name[noise],
            hovertemplate="unsorted<br>%{text}<extra></extra>"))
    clustered = np.unique(label[~noise])
    names = _person_labels(lib, clustering_id, clustered.tolist())
    if 0 < len(clustered) <= LEGEND_CLUSTERS:
        for v in clustered:  # one trace per cluster: a legend that names them
            m = label == v
            title = _html(_cluster_title(int(v), names))
            fig.add_trace(go.Scattergl(
                x=x[m], y=y[m], mode="markers", name=title,
                marker=dict(color=PALETTE[int(v) % len(PALETTE)], size=7), text=name[m],
                hovertemplate=f"{title}<br>%{{text}}<extra></extra>"))
    elif len(clustered):
        lab = label[~noise]
        # Colours as numbers on a stepped scale: plotly validates a list of 5000 colour strings
        # one by one (0.1-0.2 s a page run here), an array of numbers at once (~0.01 s).
        n = len(PALETTE)
        scale = [[(i + j) / n, c] for i, c in enumerate(PALETTE) for j in (0, 1)]
        text = np.asarray([f"{_html(_cluster_title(int(v), names))}<br>{f}"
                           for v, f in zip(lab, name[~noise])], dtype=object)
        fig.add_trace(go.Scattergl(
            x=x[~noise], y=y[~noise], mode="markers", name="clusters", showlegend=False,
            marker=dict(color=(lab % n) + 0.5, colorscale=scale, cmin=0, cmax=n, size=7),
            text=text, hovertemplate="%{text}<extra></extra>"))
    fig.update_layout(height=460, margin=dict(l=10, r=10, t=10, b=10),
                      legend=dict(title="", itemsizing="constant"),
                      xaxis=dict(title="", showticklabels=False),
                      yaxis=dict(title="", showticklabels=False))
    st.plotly_chart(fig, config={"displaylogo": False})
    what = "all" if pts["sampled"] == n_items else f"a random {pts['sampled']:,} of the"
    st.caption(f"Map: {what} {count(n_items, kind)}, placed so that those that look alike are "
               "near each other; colour = person, grey = unsorted.")


def _cluster_title(cluster: int, names: dict[int, str]) -> str:
    return names.get(cluster) or "a group with no person"


def _html(text: str) -> str:
    """Plotly renders legend and hover text as HTML."""
    import html

    return html.escape(text).replace("%", "&#37;")


def _person_labels(lib: "Library", clustering_id: int, clusters: list[int]) -> dict[int, str]:
    """cluster id -> label of the person it belongs to (a name, or "Person 12"), for the given
    clusters only (one batched query), so the cost follows what is on screen."""
    from ..people import people_of_clusters

    return {c: person_label(name, pid) or "" for c, (pid, name)
            in people_of_clusters(lib, clustering_id, clusters).items()}


def _cluster_gallery(lib: "Library", model: str, title: str, item_ids: list[int],
                     size: int) -> None:
    """A gallery of the first MAX_THUMBS item_ids of a group of `size` items; the rest counted."""
    st.subheader(title, anchor=False)
    thumbs.gallery(lib, lib.items(model, ids=item_ids[:MAX_THUMBS]))
    if size > MAX_THUMBS:
        st.caption(f"… and {size - MAX_THUMBS:,} more.")


def page() -> None:
    opened = common.open_page("Clusters")
    if opened is None:
        return
    lib, model = opened
    c = lib.clustering(model)
    if c is None:
        st.info("This library is not clustered yet. Clustering groups what was found by person; "
                "what fits no group is listed as unsorted.")
        common.cluster_controls(lib, model, key="clusters")
        return

    generation = lib.vector_set(model).generation
    kind = common.kind_of(lib, model)
    g = _groups(str(lib.path), model, c.id, generation)
    n_clusters, n_unsorted = len(g.ids), len(g.unsorted)
    n_items = int(g.sizes.sum()) + n_unsorted
    a, b, d = st.columns(3)
    a.metric(noun(kind, 2).capitalize(), n_items)
    b.metric("Clusters", n_clusters, help="Groups of look-alike faces; each is shown as the person "
             "it belongs to.")
    d.metric("Unsorted", n_unsorted)
    if c.stale:
        st.warning(f"{noun(kind, 2).capitalize()} were added or removed since this clustering "
                   "ran; cluster again to include them.")
    with st.expander("Cluster again", expanded=c.stale):
        common.cluster_controls(lib, model, key="clusters")

    st.subheader("Map")
    _map(lib, model, c.id, generation, lib.vector_set(model).n_items, kind)  # the map samples them all

    if n_clusters:
        start, stop = common.pager("Clusters page", n_clusters, CLUSTERS_PER_PAGE,
                                   key="clusters_page", what="clusters")
        names = _person_labels(lib, c.id, g.ids[start:stop].tolist())
        for k in range(start, stop):
            cid, size = int(g.ids[k]), int(g.sizes[k])
            title = f"{common.md_escape(_cluster_title(cid, names))} · {count(size, kind)}"
            _cluster_gallery(lib, model, title, g.items_of(k, MAX_THUMBS), size)
    else:
        st.info(f"The clustering found no groups: every {noun(kind)} is unsorted. Try the other "
                "way of grouping, or index more photos of each person.")

    if n_unsorted:
        _cluster_gallery(lib, model, f"Unsorted · {count(n_unsorted, kind)}",
                         g.unsorted[:MAX_THUMBS].tolist(), n_unsorted)
    else:
        st.subheader("Unsorted")
        st.caption(f"Every {noun(kind)} is in a group.")
    with st.expander("Technical details"):
        rows = [{"person": names.get(int(g.ids[k]), ""), "cluster": int(g.ids[k]),
                 noun(kind, 2): int(g.sizes[k])} for k in range(start, stop)] if n_clusters else []
        st.caption(f"Clustering {c.id}: profile `{c.profile}`, parameters "
                   f"{common.md_code(str(c.params))}; the map is a 2-D PCA projection.")
        if rows:
            st.table(rows, hide_index=True)
