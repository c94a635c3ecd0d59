"""Clusters page: counts, one gallery per cluster (largest first, paginated), unsorted, and a map.
Each cluster shows the person most of its items belong to (a name, or "person N")."""
from __future__ import annotations

import math
import os
from collections import Counter
from typing import TYPE_CHECKING

import numpy as np
import streamlit as st

from ..types import NOISE
from . import common, thumbs

if TYPE_CHECKING:
    from ..library import ClusterInfo, Library

CLUSTERS_PER_PAGE = 10
MAX_THUMBS = 60
"""Thumbnails shown per cluster (and for the unsorted items); the rest are counted."""
MAP_POINTS = 5000
PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2",
           "#bcbd22", "#17becf", "#393b79", "#637939", "#8c6d31", "#843c39", "#7b4173"]
NOISE_COLOUR = "#b8b8b8"
LEGEND_CLUSTERS = 20
"""Up to this many clusters get a legend entry each; more are drawn as one trace without one."""


@st.cache_data(max_entries=8, show_spinner="Computing the map…")
def _map_points(lib_path: str, model: str, clustering_id: int, generation: int) -> dict:
    """2-D PCA of (a sample of) the vectors with each point's cluster and file name.
    clustering_id and generation are part of the cache key: a new run or new vectors redraw."""
    lib = common.get_library(lib_path)
    ids, X = lib.vectors(model)
    if len(ids) > MAP_POINTS:
        pick = np.sort(np.random.default_rng(0).choice(len(ids), MAP_POINTS, replace=False))
        ids, X = ids[pick], X[pick]
    X = X.astype(np.float64) - X.mean(axis=0, dtype=np.float64)
    if len(ids) >= 2:
        _u, _s, vt = np.linalg.svd(X, full_matrices=False)
        xy = X @ vt[:2].T
        if xy.shape[1] < 2:
            xy = np.pad(xy, ((0, 0), (0, 2 - xy.shape[1])))
    else:
        xy = np.zeros((len(ids), 2))
    labels = lib.labels(model)
    paths = {it.id: it.path for it in lib.items(model, ids=ids.tolist())}
    return {
        "x": xy[:, 0].tolist(), "y": xy[:, 1].tolist(),
        "label": [int(labels.get(int(i), NOISE)) for i in ids],
        "name": [os.path.basename(paths.get(int(i), "?")) for i in ids],
        "sampled": len(ids),
    }


def _map(lib: "Library", model: str, clustering_id: int, generation: int, n_items: int,
         names: dict[int, str]) -> None:
    import plotly.graph_objects as go

    pts = _map_points(str(lib.path), model, clustering_id, generation)
    if not pts["x"]:
        return
    x, y = np.asarray(pts["x"]), np.asarray(pts["y"])
    label = np.asarray(pts["label"])
    name = np.asarray(pts["name"], dtype=object)
    fig = go.Figure()
    noise = label == NOISE
    if noise.any():
        fig.add_trace(go.Scattergl(
            x=x[noise], y=y[noise], mode="markers", name="unsorted",
            marker=dict(color=NOISE_COLOUR, size=6), text=name[noise],
            hovertemplate="unsorted<br>%{text}<extra></extra>"))
    clustered = np.unique(label[~noise])
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
        fig.add_trace(go.Scattergl(
            x=x[~noise], y=y[~noise], mode="markers", name="clusters", showlegend=False,
            marker=dict(color=[PALETTE[int(v) % len(PALETTE)] for v in lab], size=7),
            text=[f"{_html(_cluster_title(int(v), names))}<br>{n}" for v, n in zip(lab, name[~noise])],
            hovertemplate="%{text}<extra></extra>"))
    fig.update_layout(height=460, margin=dict(l=10, r=10, t=10, b=10),
                      legend=dict(title="", itemsizing="constant"),
                      xaxis=dict(title="PC 1", showticklabels=False),
                      yaxis=dict(title="PC 2", showticklabels=False))
    st.plotly_chart(fig, config={"displaylogo": False})
    what = "all" if pts["sampled"] == n_items else f"a random {pts['sampled']} of the"
    st.caption(f"Map: {what} {n_items} items projected to 2-D with PCA; colour = cluster, "
               "grey = unsorted. Nearby points look alike to the model.")


def _cluster_title(cluster: int, names: dict[int, str]) -> str:
    person = names.get(cluster)
    return f"cluster {cluster}" + (f" · {person}" if person else "")


def _html(text: str) -> str:
    """Plotly renders legend and hover text as HTML."""
    import html

    return html.escape(text).replace("%", "&#37;")


def _person_labels(lib: "Library", model: str, clusters: list["ClusterInfo"]) -> dict[int, str]:
    """cluster id -> label of the person most of its items belong to (one query for all people)."""
    person_of = {i: p for p in lib.people(model, include_hidden=True) for i in p.item_ids}
    out = {}
    for ci in clusters:
        votes = Counter(person_of[i].id for i in ci.item_ids if i in person_of)
        if votes:
            pid = votes.most_common(1)[0][0]
            out[ci.id] = next(person_of[i].label for i in ci.item_ids
                              if i in person_of and person_of[i].id == pid)
    return out


def _cluster_gallery(lib: "Library", model: str, title: str, item_ids: list[int]) -> None:
    st.subheader(title, anchor=False)
    shown = item_ids[:MAX_THUMBS]
    thumbs.gallery(lib, lib.items(model, ids=shown))
    if len(item_ids) > len(shown):
        st.caption(f"… and {len(item_ids) - len(shown)} more.")


def page() -> None:
    st.title("Clusters")
    lib = common.library()
    model = common.current_model(lib)
    if model is None:
        st.info("The library is empty: index a folder on the Index page first.")
        return
    c = lib.clustering(model)
    if c is None:
        st.info("This library is not clustered yet. Clustering groups the indexed items by person; "
                "the items that fit no group are listed as unsorted.")
        common.cluster_controls(lib, model, key="clusters")
        return

    clusters = lib.clusters(model)
    unsorted = lib.unsorted(model)
    names = _person_labels(lib, model, clusters)
    n_items = sum(ci.size for ci in clusters) + len(unsorted)
    a, b, d = st.columns(3)
    a.metric("Items", n_items)
    b.metric("Clusters", len(clusters))
    d.metric("Unsorted", len(unsorted))
    if c.stale:
        st.warning("Items were added or removed since this clustering ran; cluster again to "
                   "include them.")
    with st.expander("Cluster again", expanded=c.stale):
        common.cluster_controls(lib, model, key="clusters")

    st.subheader("Map")
    set_info = next(s for s in lib.vector_sets() if s.model == model)
    _map(lib, model, c.id, set_info.generation, n_items, names)

    if clusters:
        n_pages = math.ceil(len(clusters) / CLUSTERS_PER_PAGE)
        page_no = 1
        if n_pages > 1:
            page_no = st.selectbox(
                "Clusters page", range(1, n_pages + 1), key="clusters_page",
                format_func=lambda p: (f"{p} of {n_pages}: clusters {(p - 1) * CLUSTERS_PER_PAGE + 1}"
                                       f"–{min(p * CLUSTERS_PER_PAGE, len(clusters))}"))
        start = (page_no - 1) * CLUSTERS_PER_PAGE
        for ci in clusters[start:start + CLUSTERS_PER_PAGE]:
            person = names.get(ci.id)
            title = f"Cluster {ci.id} · {ci.size} items"
            if person:
                title += f" · {common.md_escape(person)}"
            _cluster_gallery(lib, model, title, ci.item_ids)
    else:
        st.info("The clustering found no groups: every item is unsorted. Try the other profile, or "
                "index more photos of each person.")

    if unsorted:
        _cluster_gallery(lib, model, f"Unsorted · {len(unsorted)} items", unsorted)
    else:
        st.subheader("Unsorted")
        st.caption("Every item is in a cluster.")
