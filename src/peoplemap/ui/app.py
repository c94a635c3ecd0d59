"""Streamlit entry point: `streamlit run app.py -- --library PATH` (what `peoplemap ui` starts).

Pages over one cached Library: Index (add a folder, cluster), Clusters (galleries and a map),
People (name, hide, merge, split, forget), Review (merge suggestions and faces to confirm), Search
(find similar items for an uploaded photo), and a photo view opened from any face (not listed).
"""
from __future__ import annotations

import streamlit as st

from peoplemap.ui import common, pages_clusters, pages_index, pages_people, pages_search
from peoplemap.ui import pages_photo, pages_review
from peoplemap.ui import pages_timeline


def main() -> None:
    st.set_page_config(page_title="peoplemap", layout="wide")
    index = st.Page(pages_index.page, title="Index", url_path="", default=True)

    def index_by_name() -> None:
        # The default page is served at "/", so "/index" (what the sidebar's name suggests, and
        # what a bookmark from another app may hold) would be "Page not found": go to it.
        st.switch_page(index)

    people = st.Page(pages_people.page, title="People", url_path="people")
    review = st.Page(pages_review.page, title="Review", url_path="review")
    photo = st.Page(pages_photo.page, title="Photo", url_path="photo", visibility="hidden")
    common.PAGES.update(people=people, review=review, photo=photo)  # pages link to each other
    nav = st.navigation([
        index,
        st.Page(pages_clusters.page, title="Clusters", url_path="clusters"),
        people,
        review,
        st.Page(pages_search.page, title="Search", url_path="search"),
        st.Page(pages_timeline.page, title="Timeline", url_path="timeline"),
        photo,
        st.Page(index_by_name, title="Index", url_path="index", visibility="hidden"),
    ])
    common.choose_vector_set(common.library())
    if nav != people:
        pages_people.forget_dismissed()
    nav.run()


main()
