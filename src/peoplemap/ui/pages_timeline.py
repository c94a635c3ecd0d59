"""Timeline: when a person was photographed, photo by photo, by year and month (the photos' EXIF
dates, read at index time), with a year filter."""
from __future__ import annotations

import itertools
from typing import Optional

import streamlit as st

from ..wording import count, plural
from . import common, dates, thumbs

PER_MONTH = 12
"""Photos shown for one month; the rest are counted."""
THUMB = 150


def _bars(rows: list[tuple[Optional[str], int, str, int]]) -> None:
    """Photos per month, as a bar chart (dated photos only)."""
    per_month: dict[str, int] = {}
    for taken, *_ in rows:
        if taken:
            per_month[taken[:7]] = per_month.get(taken[:7], 0) + 1
    if len(per_month) > 1:
        st.bar_chart({"photos": per_month}, height=160, x_label="month", y_label="photos")


def page() -> None:
    opened = common.open_page("Timeline", ", then group it, to see when each person was photographed.")
    if opened is None:
        return
    lib, model = opened
    people = lib.people(model)
    if not people:
        st.info("No people yet: group the faces on the Index page first.")
        return
    kind = common.kind_of(lib, model)
    by_id = {p.id: p for p in people}
    wanted = st.query_params.get("person")
    if wanted is not None and str(wanted).isdigit() and int(wanted) in by_id:
        st.session_state["timeline_person"] = int(wanted)
    pid = st.selectbox("Person", list(by_id), key="timeline_person",
                       format_func=lambda i: f"{by_id[i].label} ({count(by_id[i].size, kind)})")
    person = by_id[pid]
    rows = lib.store.photos.timeline(person.id)
    years = sorted({int(t[:4]) for t, *_ in rows if t})
    keep = dates.year_filter(years, "timeline")
    shown = [r for r in rows if keep is None or keep(r[0])]
    dated = [r[0] for r in shown if r[0]]
    span = (f", taken from {dates.day_label(dated[0])} to {dates.day_label(dated[-1])}"
            if dated else "")
    st.markdown(f"**{common.md_escape(person.label)}** is in {plural(len(shown), 'photo')}{span}."
                + ("" if len(dated) == len(shown) else
                   f" {plural(len(shown) - len(dated), 'photo')} without a date."))
    if not shown:
        return
    _bars(shown)
    for year, in_year in itertools.groupby(shown, key=lambda r: r[0][:4] if r[0] else dates.UNDATED):
        in_year = list(in_year)
        st.subheader(f"{year} · {plural(len(in_year), 'photo')}", anchor=f"year-{year}")
        for month, in_month in itertools.groupby(in_year, key=lambda r: dates.month_label(r[0])):
            in_month = list(in_month)
            if year != dates.UNDATED:
                st.markdown(f"**{month}** · {plural(len(in_month), 'photo')}")
            first = in_month[:PER_MONTH]
            st.image([thumbs.thumbnail(path, None, THUMB) for _t, _i, path, _it in first],
                     caption=[dates.day_label(t) or common.short(path.rsplit("/", 1)[-1], 20)
                              for t, _i, path, _it in first], width=THUMB)
            if len(in_month) > PER_MONTH:
                st.caption(f"and {plural(len(in_month) - PER_MONTH, 'more photo')}")
