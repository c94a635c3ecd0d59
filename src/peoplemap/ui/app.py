"""Streamlit entry point: `streamlit run app.py -- --library PATH` (what `peoplemap ui` starts).

Four pages over one cached Library: Index (add a folder, cluster), Clusters (galleries and a map),
People (name, hide, merge, split, forget), Search (find similar items for an uploaded photo).
"""
from __future__ import annotations

import streamlit as st

from peoplemap.ui import common, pages_clusters, pages_index, pages_people, pages_search


def main() -> None:
    st.set_page_config(page_title="peoplemap", layout="wide")
    nav = st.navigation([
        st.Page(pages_index.page, title="Index", url_path="index", default=True),
        st.Page(pages_clusters.page, title="Clusters", url_path="clusters"),
        st.Page(pages_people.page, title="People", url_path="people"),
        st.Page(pages_search.page, title="Search", url_path="search"),
    ])
    common.choose_vector_set(common.library())
    nav.run()


main()
