"""People page: the people of a vector set as a grid (largest first); open one to see all its items and
to name, hide, merge, split or forget it.

Fast on big libraries: one query lists the people (lib.people()); items are read and thumbnails built
only for what is on screen, and thumbnails are kept in the library's thumbnails/ folder. Past
MERGE_CHOICES people, "Merge into" takes a typed number or name instead of listing everyone.
"""
from __future__ import annotations

import re
from typing import TYPE_CHECKING, Callable, Optional

import streamlit as st

from ..errors import PeoplemapError
from . import common, thumbs

if TYPE_CHECKING:
    from ..library import Library
    from ..people import Person

PEOPLE_PER_PAGE = 24
GRID_COLUMNS = 6
TILE = 128
ITEMS_PER_PAGE = 48
ITEM_COLUMNS = 8
MERGE_CHOICES = 500
"""Up to this many other people, "Merge into" is a list to pick from; beyond, a field for a
person's number or name."""
SELECTED = "people_selected"
FLASH = "people_flash"
SPLIT = "people_split"
"""Session keys: the open person's id, the last action's message, the items ticked for a split."""


def _open(person_id: Optional[int]) -> None:
    st.session_state[SELECTED] = person_id


def _tick(person_id: int, item_id: int) -> None:
    """Remember split ticks in a set, so they survive paging through a person's items."""
    chosen = st.session_state.setdefault(SPLIT, {}).setdefault(person_id, set())
    if st.session_state.get(f"people_tick_{person_id}_{item_id}"):
        chosen.add(item_id)
    else:
        chosen.discard(item_id)


def _act(action: Callable[[], str]) -> None:
    """Run a people edit. On success rerun, so every list on the page is read again, and show its
    message (st.success) at the top of that run; a library error is shown here, without a traceback."""
    try:
        message = action()
    except PeoplemapError as e:
        common.show_error(e)
        return
    st.session_state[FLASH] = message
    st.session_state["people_rev"] = st.session_state.get("people_rev", 0) + 1  # search re-reads names
    st.rerun()


def _tile_caption(p: "Person") -> str:
    hidden = " · hidden" if p.hidden else ""
    return f"**{common.md_escape(p.label)}**  \n{p.size} items{hidden}"


def _grid(lib: "Library", model: str, people: list["Person"], selected: Optional[int]) -> None:
    start, stop = common.pager("People page", len(people), PEOPLE_PER_PAGE, key="people_page")
    shown = people[start:stop]
    firsts = lib.items(model, ids=[p.item_ids[0] for p in shown])
    tiles = dict(zip((it.id for it in firsts), thumbs.item_thumbnails(lib, firsts, TILE)))
    for row in range(0, len(shown), GRID_COLUMNS):
        for col, p in zip(st.columns(GRID_COLUMNS), shown[row:row + GRID_COLUMNS]):
            with col.container(border=True):
                tile = tiles.get(p.item_ids[0])
                if tile is not None:
                    st.image(thumbs.data_uri(tile), width=TILE)
                st.markdown(_tile_caption(p))
                st.button("View", key=f"people_open_{p.id}", on_click=_open, args=(p.id,),
                          type="primary" if p.id == selected else "secondary", width="stretch")


def _items(lib: "Library", model: str, p: "Person") -> set[int]:
    """The person's items, a page at a time, each with a tick box for "Split selected"."""
    chosen = st.session_state.setdefault(SPLIT, {}).setdefault(p.id, set())
    chosen &= set(p.item_ids)
    start, stop = common.pager("Items page", p.size, ITEMS_PER_PAGE, key=f"people_items_{p.id}")
    items = lib.items(model, ids=p.item_ids[start:stop])
    tiles = thumbs.item_thumbnails(lib, items)
    for row in range(0, len(items), ITEM_COLUMNS):
        for col, it, tile in zip(st.columns(ITEM_COLUMNS), items[row:row + ITEM_COLUMNS],
                                 tiles[row:row + ITEM_COLUMNS]):
            with col:
                st.image(thumbs.data_uri(tile), width=thumbs.THUMB)
                st.checkbox(f"#{it.id}", value=it.id in chosen, key=f"people_tick_{p.id}_{it.id}",
                            on_change=_tick, args=(p.id, it.id), help=it.path)
    return chosen


def _name_and_hide(lib: "Library", model: str, p: "Person") -> None:
    with st.form(f"people_name_form_{p.id}", border=False):
        name = st.text_input("Name", value=p.name or "", key=f"people_name_{p.id}",
                             placeholder="Who is this?", max_chars=200)
        if st.form_submit_button("Save name", type="primary"):
            _act(lambda: f"Named {p.label} “{lib.name_person(p.id, name, model).label}”.")
    if p.hidden:
        if st.button("Unhide", key=f"people_unhide_{p.id}"):
            _act(lambda: f"{lib.hide_person(p.id, False, model).label} is shown again.")
    elif st.button("Hide", key=f"people_hide_{p.id}",
                   help="Hidden people are left out of this grid unless “Show hidden” is on."):
        _act(lambda: f"{lib.hide_person(p.id, True, model).label} is hidden.")


def _merge(lib: "Library", model: str, p: "Person", everyone: list["Person"]) -> None:
    others = [o for o in everyone if o.id != p.id]
    if not others:
        st.caption("There is nobody else to merge with.")
        return
    with st.form(f"people_merge_form_{p.id}", border=False):
        help_text = f"Moves every item of {p.label} into the person chosen here."
        target: int | str | None
        if len(others) <= MERGE_CHOICES:
            by_id = {o.id: o for o in others}
            target = st.selectbox(
                "Merge into…", list(by_id), key=f"people_merge_{p.id}", index=None,
                placeholder="Choose a person", help=help_text,
                format_func=lambda i: f"{by_id[i].label} ({by_id[i].size} items)"
                + (" · hidden" if by_id[i].hidden else ""))
        else:  # a list of thousands is slow to send and draw on every rerun, and to scroll
            target = st.text_input(
                "Merge into…", key=f"people_merge_{p.id}", max_chars=200,
                placeholder="Person number or name",
                help=help_text + " Type its number (the N of “person N”) or its name.").strip()
            unnamed = re.fullmatch(r"person\s+(\d+)", target, flags=re.IGNORECASE)
            if unnamed:  # the label as shown on its tile
                target = unnamed.group(1)
        if st.form_submit_button("Merge"):
            if target is None or target == "":
                st.error("Choose the person to merge into first.")
                return

            def merge() -> str:
                merged = lib.merge_people(target, [p.id], model)
                _open(merged.id)
                return f"Merged {p.label} into {merged.label}: {merged.size} items."
            _act(merge)


def _split(lib: "Library", model: str, p: "Person", chosen: set[int]) -> None:
    st.caption(f"Tick the items above that are someone else: **{len(chosen)}** ticked.")
    with st.form(f"people_split_form_{p.id}", border=False, clear_on_submit=True):
        name = st.text_input("Name of the new person (optional)", key=f"people_split_name_{p.id}",
                             max_chars=200)
        if st.form_submit_button("Split selected"):
            def split() -> str:
                new = lib.split_person(p.id, sorted(chosen), model, name=name.strip() or None)
                chosen.clear()
                return f"Moved {new.size} items out of {p.label} into {new.label}."
            _act(split)


def _forget(lib: "Library", model: str, p: "Person") -> None:
    label = common.md_escape(p.label)
    st.warning(f"Forgetting deletes {label}'s {p.size} items and their vectors from the library "
               "for good (the photo files are not touched). Clustering state is reset too: "
               "cluster again afterwards.")
    sure = st.checkbox(f"Yes, delete the {p.size} items of {label}", key=f"people_sure_{p.id}")
    if st.button("Forget this person", key=f"people_forget_{p.id}", disabled=not sure):
        def forget() -> str:
            n = lib.forget_person(p.id, model)
            thumbs.forget_thumbnails(lib, p.item_ids)
            _open(None)
            return f"Forgot {p.label}: {n} items and their vectors were deleted."
        _act(forget)


def _detail(lib: "Library", model: str, p: "Person", everyone: list["Person"]) -> None:
    st.divider()
    top, close = st.columns([5, 1], vertical_alignment="bottom")
    hidden = " · hidden" if p.hidden else ""
    top.subheader(f"{common.md_escape(p.label)} · {p.size} items{hidden}", anchor=False)
    close.button("Close", key="people_close", on_click=_open, args=(None,), width="stretch")
    chosen = _items(lib, model, p)
    a, b, c = st.columns(3, gap="large")
    with a:
        _name_and_hide(lib, model, p)
    with b:
        _merge(lib, model, p, everyone)
    with c:
        _split(lib, model, p, chosen)
    with st.expander("Forget this person"):
        _forget(lib, model, p)


def page() -> None:
    opened = common.open_page("People")
    if opened is None:
        return
    lib, model = opened
    flash = st.session_state.pop(FLASH, None)
    if flash:
        st.success(common.md_escape(flash))  # names are shown as typed, not as Markdown
    c = lib.clustering(model)
    if c is None:
        st.info("No people yet: people come from clustering, which groups the indexed items by "
                "person.")
        common.cluster_controls(lib, model, key="people")
        return
    everyone = lib.people(model, include_hidden=True)
    show_hidden = st.toggle("Show hidden", key="people_show_hidden")
    people = [p for p in everyone if show_hidden or not p.hidden]
    n_hidden = sum(p.hidden for p in everyone)
    st.caption(f"{len(people)} people, largest first"
               + (f" · {n_hidden} hidden" if n_hidden and not show_hidden else "")
               + (" · items were added or removed since the last clustering" if c.stale else ""))
    selected = st.session_state.get(SELECTED)
    if not everyone:
        st.info("The clustering found no groups, so there are no people yet. Cluster again with the "
                "other profile, or index more photos of each person.")
        return
    if people:
        _grid(lib, model, people, selected)
    else:
        st.info("Everyone is hidden; turn on “Show hidden” to see them.")
    person = next((p for p in everyone if p.id == selected), None)
    if person is not None:
        _detail(lib, model, person, everyone)
