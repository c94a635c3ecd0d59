"""Dates in the app: when photos were taken (their EXIF date, peoplemap.metadata), a filter by year
for the pages that list photos, and the words for a month."""
from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Callable, Optional, Sequence

import streamlit as st

if TYPE_CHECKING:
    from ..library import Library
    from ..types import QueryResult

MONTHS = ["January", "February", "March", "April", "May", "June", "July", "August", "September",
          "October", "November", "December"]
UNDATED = "No date"
"""Where photos whose metadata gives no date are listed."""


def month_label(taken: Optional[str]) -> str:
    """"July 2019" for "2019-07-14 18:30:05"; "No date" for None."""
    if not taken or len(taken) < 7:
        return UNDATED
    return f"{MONTHS[int(taken[5:7]) - 1]} {taken[:4]}"


def day_label(taken: Optional[str]) -> str:
    """"14 July 2019" for "2019-07-14 18:30:05"; "" for None."""
    if not taken or len(taken) < 10:
        return ""
    return f"{int(taken[8:10])} {MONTHS[int(taken[5:7]) - 1]} {taken[:4]}"


def year_filter(years: Sequence[int], key: str) -> Optional[Callable[[Optional[str]], bool]]:
    """A "Taken" year range (and whether undated photos count) under `key`; returns the test a
    photo's date must pass, or None when everything passes (or no photo has a date)."""
    if not years:
        return None
    lo, hi = min(years), max(years)
    cols = st.columns([3, 2])
    if lo == hi:
        chosen = (lo, hi)
        cols[0].caption(f"Every dated photo is from {lo}.")
    else:
        chosen = cols[0].select_slider("Taken", options=list(range(lo, hi + 1)), value=(lo, hi),
                                       key=f"{key}_years",
                                       help="Only photos taken in these years (their EXIF date).")
    undated = cols[1].checkbox("Photos without a date", value=True, key=f"{key}_undated",
                               help="Photos whose metadata says nothing about when they were taken.")
    if tuple(chosen) == (lo, hi) and undated:
        return None
    first, last = chosen

    def keep(taken: Optional[str]) -> bool:
        if not taken:
            return undated
        return first <= int(taken[:4]) <= last

    return keep


def years_of(lib: "Library", item_ids: Sequence[int]) -> list[int]:
    """The years the photos of these items were taken in."""
    return sorted({int(t[:4]) for t in lib.store.photos.taken_of_items(item_ids).values()})


def only(results: list["QueryResult"], keep: Optional[Callable[[Optional[str]], bool]], k: int
         ) -> list["QueryResult"]:
    """Search results with only the hits whose photo passes `keep`, at most k each."""
    if keep is None:
        return results
    return [dataclasses.replace(r, hits=[h for h in r.hits if keep(h.taken)][:k]) for r in results]
