"""Index page: index a folder on the server machine, see what happened, then cluster."""
from __future__ import annotations

import os
from typing import TYPE_CHECKING

import streamlit as st

from ..errors import PeoplemapError
from ..wording import MODEL_HINTS, count, model_label, noun, plural
from . import common

if TYPE_CHECKING:
    from ..indexing import IndexSummary
    from ..library import Library

MAX_SKIPPED_ROWS = 500


def _model_choice() -> str:
    from ..embed.registry import available_models

    try:
        models = available_models()
    except PeoplemapError as e:
        common.show_error(e)
        st.stop()
    names = [n for n in models if n != "onnx"]  # a model file of one's own: `--model onnx:PATH`
    preferred = lib_settings_default_model()
    default = names.index(preferred) if preferred in names else 0
    name = st.selectbox("What to look for", names, index=default, format_func=model_label,
                        help="`peoplemap models` lists the same models.")
    if MODEL_HINTS.get(name):
        st.caption(MODEL_HINTS[name])
    with st.expander("Technical details"):
        st.caption(f"Model `{name}`: {common.md_escape(models[name])}")
    return name


def lib_settings_default_model() -> str:
    from ..config import load_settings

    return load_settings().default_model


def _library_counts(lib: "Library") -> None:
    sets = lib.vector_sets()
    if not sets:
        st.info(f"The library {common.md_code(str(lib.path))} is empty: index a folder to start.")
        return
    parts = [f"{common.md_escape(model_label(s.model))}: {count(s.n_items, s.item_kind)}"
             + (f" in {plural(s.n_images, 'photo')}" if s.item_kind != "image" else "") for s in sets]
    st.caption(f"Library {common.md_code(str(lib.path))} · " + " · ".join(parts))


def _run_index(lib: "Library", folder: str, model: str) -> bool:
    bar = common.StreamlitProgress("Indexing")
    try:
        summary = lib.index(folder, model=model, progress=bar)
    except PeoplemapError as e:
        bar.clear()
        common.show_error(e)
        st.session_state.pop("index_summary", None)
        return False
    bar.clear()
    st.session_state["index_summary"] = summary
    st.session_state["show_model"] = summary.model  # the other pages switch to what was indexed
    st.session_state.pop("cluster_summary", None)  # it described the library before this run
    return True


def _show_summary(lib: "Library", s: "IndexSummary") -> None:
    kind = common.kind_of(lib, s.model)
    st.success(f"Indexed {common.md_code(s.folder)} ({common.md_escape(model_label(s.model))}) "
               f"in {s.seconds:.1f} s.")
    cols = st.columns(6)
    for col, (label, value) in zip(cols, [
            ("Files seen", s.files_seen), ("New", s.new), ("Changed", s.changed),
            ("Unchanged", s.unchanged), ("Removed", s.removed),
            (f"{noun(kind, 2).capitalize()} added", s.items_added)]):
        col.metric(label, value)
    notes = []
    if s.reused:
        notes.append(f"{plural(s.reused, 'identical photo')} reused what was found before")
    if s.images_without_items:
        notes.append(f"{plural(s.images_without_items, 'photo')} with no {noun(kind)} found")
    if notes:
        st.caption("; ".join(notes) + ".")
    if s.skipped:
        st.markdown(f"**Skipped files ({len(s.skipped)})**")
        rows = [{"file": common.md_escape(_relative(sk.path, s.folder)),
                 "reason": common.md_escape(sk.reason)}
                for sk in s.skipped[:MAX_SKIPPED_ROWS]]
        st.table(rows, hide_index=True)
        if len(s.skipped) > MAX_SKIPPED_ROWS:
            st.caption(f"… and {len(s.skipped) - MAX_SKIPPED_ROWS} more (`peoplemap info` lists "
                       "them all).")
    else:
        st.caption("No files were skipped.")


def _relative(path: str, folder: str) -> str:
    try:
        rel = os.path.relpath(path, folder)
    except ValueError:
        return path
    return path if rel.startswith("..") else rel


def page() -> None:
    st.title("Index")
    lib = common.library()
    counts = st.empty()  # filled in last, so it shows the library after this run's indexing

    folder = st.text_input("Folder to index", key="index_folder",
                           placeholder="/path/to/photos (a folder on the machine running this app)",
                           help="Indexed recursively. Only new or changed files are processed on a "
                                "re-run; deleted files are dropped. Originals are never modified.")
    model = _model_choice()
    auto = st.checkbox("Cluster right after indexing", value=True, key="index_autocluster")
    if st.button("Index folder", type="primary"):
        if not folder.strip():
            st.error("Type the path of a folder on this machine first.")
        elif _run_index(lib, folder.strip(), model) and auto:
            common.run_cluster(lib, model, st.session_state.get("index_profile", "default"))

    s = st.session_state.get("index_summary")
    if s is not None:
        _show_summary(lib, s)

    with counts.container():
        _library_counts(lib)
    st.subheader("Cluster")
    if not lib.vector_sets():
        st.caption("Clustering groups what was found by person; index a folder first.")
        return
    common.cluster_controls(lib, common.current_model(lib), key="index")
