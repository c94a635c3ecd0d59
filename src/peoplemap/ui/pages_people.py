"""People page: the people of a vector set as a grid of covers, named people first, then the
largest (or by most faces, name or newest), so the grid never leads with a big group of junk the
user has not looked at. People seen fewer than N times can be left out (a setting kept in the
library), every unnamed person hidden at once. "View" opens a person in a dialog over the grid,
where the user is looking, to name, hide, merge, split, pick a cover or forget it, take ticked
faces out of it ("Not Ada", for good) or remove them as false detections ("Not faces", also for
a whole person), answer the people who look most like it, and open any face's photo (the Photo
page); each action's message shows next to the control that did it (and as a toast).

A person is shown everywhere as its name or "Person 12" (its stable number). A tile shows the
person's cover: the face the user picked, else its best face (peoplemap.people.covers: the most
central to the person, large and sharp), never just its first item. Giving a person a name that
someone else has asks whether they are the same person (merge) or not (keep apart).

Fast on big libraries: one query lists the people (lib.people()); items are read and thumbnails
built only for what is on screen, and thumbnails are kept in the library's thumbnails/ folder.
Past MERGE_CHOICES people, "Merge into" takes a typed number or name instead of listing everyone.
"""
from __future__ import annotations

import io
from typing import TYPE_CHECKING, Callable, Optional

import numpy as np
import streamlit as st

from ..errors import NameTakenError, PeoplemapError
from ..wording import count, noun
from . import common, thumbs

if TYPE_CHECKING:
    from ..library import Library
    from ..responses import Person
    from ..types import Item

PEOPLE_PER_PAGE = 24
GRID_COLUMNS = 6
TILE = 128
ITEMS_PER_PAGE = 48
ITEM_COLUMNS = 8
DIALOG_WIDTH = 1100
MERGE_CHOICES = 500
"""Up to this many other people, "Merge into" is a list to pick from; beyond, a field for a
person's number or name."""
SELECTED = "people_selected"
FLASH = "people_flash"
SPLIT = "people_split"
PENDING_NAME = "people_pending_name"
DISMISSED = "people_dismissed"
"""Session keys: the open person's id; the last action's (section, message); the items ticked
for a split or a cover; a name that someone else has, waiting for the user's answer; the person
whose dialog was just closed (`_wanted`)."""


# -- state ----------------------------------------------------------------------------------------
def _open(person_id: Optional[int]) -> None:
    st.session_state[SELECTED] = person_id
    st.session_state.pop(PENDING_NAME, None)
    if person_id is not None:
        st.session_state.pop(DISMISSED, None)
    if person_id is None:
        st.query_params.pop("person", None)
    else:
        st.query_params["person"] = str(person_id)  # the person has an address of its own


def _closed() -> None:
    """The dialog was dismissed (its ✕, Esc, or a click outside)."""
    st.session_state[DISMISSED] = st.session_state.get(SELECTED)
    _open(None)


def _wanted() -> Optional[int]:
    """The person the address asks for. A click made right after the dialog was closed can leave
    before the browser hears that the address lost its person: its run still carries the closed
    person, who stays closed until the user opens someone or comes from another page
    (`forget_dismissed`)."""
    wanted = st.query_params.get("person", "")
    person_id = int(wanted) if wanted.isdigit() else None
    if person_id is not None and person_id == st.session_state.get(DISMISSED):
        st.query_params.pop("person", None)
        return None
    return person_id


def forget_dismissed() -> None:
    """Another page is shown: a link back to the person closed last opens them again."""
    st.session_state.pop(DISMISSED, None)


def _tick(person_id: int, item_id: int) -> None:
    """Remember ticks in a set, so they survive paging through a person's items."""
    chosen = st.session_state.setdefault(SPLIT, {}).setdefault(person_id, set())
    if st.session_state.get(f"people_tick_{person_id}_{item_id}"):
        chosen.add(item_id)
    else:
        chosen.discard(item_id)


def _tick_page(person_id: int, item_ids: list[int], ticked: bool) -> None:
    chosen = st.session_state.setdefault(SPLIT, {}).setdefault(person_id, set())
    for i in item_ids:
        st.session_state[f"people_tick_{person_id}_{i}"] = ticked
        (chosen.add if ticked else chosen.discard)(i)


def _act(where: str, action: Callable[[], str]) -> None:
    """Run a people edit. On success rerun the whole page, so the grid and the dialog are read
    again, with the message shown by the control that did it (`where`) and as a toast; a library
    error is shown here, without a traceback."""
    try:
        message = action()
    except PeoplemapError as e:
        common.show_error(e)
        return
    st.session_state[FLASH] = (where, message)
    st.session_state["people_rev"] = st.session_state.get("people_rev", 0) + 1  # search re-reads names
    st.rerun()


def _flash(where: str) -> None:
    """The last action's message, if it was done here."""
    flash = st.session_state.get(FLASH)
    if flash and flash[0] == where:
        st.success(common.md_escape(flash[1]))  # names are shown as typed, not as Markdown


# -- covers ---------------------------------------------------------------------------------------
def _sharpness(lib: "Library", items: list["Item"]) -> list[float]:
    """Variance of the Laplacian of each item's tile (the picture a tile shows): higher is
    sharper. The tiles are kept, so the winner's tile is ready to show."""
    from PIL import Image

    out = []
    for data in thumbs.item_thumbnails(lib, items, TILE):
        a = np.asarray(Image.open(io.BytesIO(data)).convert("L"), dtype=np.float32)
        a = a[thumbs.TILE_MARGIN + 1:-thumbs.TILE_MARGIN - 1, thumbs.TILE_MARGIN + 1:-thumbs.TILE_MARGIN - 1]
        if a.shape[0] < 3 or a.shape[1] < 3:
            out.append(0.0)
            continue
        lap = 4 * a[1:-1, 1:-1] - a[:-2, 1:-1] - a[2:, 1:-1] - a[1:-1, :-2] - a[1:-1, 2:]
        out.append(float(lap.var()))
    return out


@st.cache_data(max_entries=64, show_spinner=False)
def _best_faces(lib_path: str, model: str, key: tuple, _people: list["Person"]) -> dict[int, int]:
    """The automatic covers of a page of people. key: what changes the answer (the set's
    generation, the clustering, each person's id, size and first and last item)."""
    lib = common.get_library(lib_path)
    return lib.covers(_people, model, sharpness=lambda items: _sharpness(lib, items))


def covers(lib: "Library", model: str, people: list["Person"]) -> dict[int, int]:
    """person id -> the item its tile shows: the user's pick, else its best face (cached)."""
    picked = {p.id: p.cover_item_id for p in people
              if p.cover_item_id is not None and p.cover_item_id in set(p.item_ids)}
    auto = [p for p in people if p.id not in picked and p.item_ids]
    if auto:
        c = lib.clustering(model)
        key = (lib.vector_set(model).generation, c.id if c else None,
               tuple((p.id, p.size, p.item_ids[0], p.item_ids[-1]) for p in auto))
        picked.update(_best_faces(str(lib.path), model, key, auto))
    return picked


# -- the grid: order and clutter -------------------------------------------------------------------
SORTS = {
    "named": "Named first, then most faces",
    "size": "Most faces",
    "name": "Name",
    "recent": "Newest",
}
"""How the grid is ordered. The default leads with the people the user named and then the largest,
so a big group of junk (text, logos) the user has not looked at is not the first thing shown."""
MIN_FACES = "people_min_faces"
"""App setting: people (unnamed ones) seen fewer than this many times are left out of the grid."""


def sort_people(people: list["Person"], how: str) -> list["Person"]:
    if how == "size":
        return sorted(people, key=lambda p: (-p.size, p.id))
    if how == "name":  # names A-Z, then "Person N" by number
        return sorted(people, key=lambda p: (p.name is None, (p.name or "").casefold(), p.id))
    if how == "recent":  # item ids grow as photos are indexed: the newest face first
        return sorted(people, key=lambda p: (-max(p.item_ids, default=0), p.id))
    return sorted(people, key=lambda p: (p.name is None, -p.size, p.id))


def _set_min_faces() -> None:
    common.set_app_setting(common.library(), MIN_FACES, int(st.session_state[MIN_FACES]))


def _grid_controls(lib: "Library", everyone: list["Person"], kind: str) -> tuple[list["Person"], str]:
    """Sort, "show hidden", "hide people seen fewer than N times" (kept in the library for every
    session) and hiding every unnamed person at once; returns the people to show and a caption."""
    if MIN_FACES not in st.session_state:
        st.session_state[MIN_FACES] = min(1000, max(1, common.app_setting(lib, MIN_FACES, 1)))
    a, b, c = st.columns([2, 2, 1], vertical_alignment="bottom")
    how = a.selectbox("Sort", list(SORTS), format_func=SORTS.get, key="people_sort")
    least = b.number_input("Hide people seen fewer than … times", min_value=1, max_value=1000, step=1,
                           key=MIN_FACES, on_change=_set_min_faces,
                           help=f"Unnamed people with fewer {noun(kind, 2)} than this are left out of "
                                "the grid (named people are always shown). Kept for next time.")
    show_hidden = c.toggle("Show hidden", key="people_show_hidden")
    unnamed = [p for p in everyone if p.name is None and not p.hidden]
    hidden = [p for p in everyone if p.hidden]
    with st.expander("Tidy up"):
        x, y = st.columns(2)
        if x.button(f"Hide all unnamed people ({len(unnamed):,})", key="people_hide_unnamed",
                    disabled=not unnamed, help="They stay in the library; “Show hidden” shows "
                                               "them, and naming one is still possible."):
            _act("page", lambda: _hide_all(lib, unnamed, True, f"Hid {len(unnamed):,} unnamed people."))
        if y.button(f"Show every hidden person again ({len(hidden):,})", key="people_unhide_all",
                    disabled=not hidden):
            _act("page", lambda: _hide_all(lib, hidden, False, f"{len(hidden):,} people are shown again."))
    shown = [p for p in everyone if (show_hidden or not p.hidden) and (p.name or p.size >= least)]
    few = sum(1 for p in everyone if (show_hidden or not p.hidden) and not p.name and p.size < least)
    n_hidden = sum(p.hidden for p in everyone)
    caption = (f"{len(shown):,} people, {SORTS[how][0].lower() + SORTS[how][1:]}"
               + (f" · {n_hidden:,} hidden" if n_hidden and not show_hidden else "")
               + (f" · {few:,} seen fewer than {least} times not shown" if few else ""))
    return sort_people(shown, how), caption


def _hide_all(lib: "Library", people: list["Person"], hidden: bool, message: str) -> str:
    # One write per person through the store's people repository: resolving each person again
    # (Library.hide_person) would read every person per call, slow with thousands of them.
    for p in people:
        lib.store.people.hide(p.id, hidden)
    return message


# -- the grid -------------------------------------------------------------------------------------
def _tile_caption(p: "Person", kind: str) -> str:
    hidden = " · hidden" if p.hidden else ""
    return f"**{common.md_escape(p.label)}**  \n{count(p.size, kind)}{hidden}"


def _grid(lib: "Library", model: str, people: list["Person"], kind: str) -> None:
    start, stop = common.pager("People page", len(people), PEOPLE_PER_PAGE, key="people_page")
    shown = people[start:stop]
    cover = covers(lib, model, shown)
    items = lib.items(model, ids=sorted(set(cover.values())))
    tiles = dict(zip((it.id for it in items), thumbs.item_thumbnails(lib, items, TILE)))
    for row in range(0, len(shown), GRID_COLUMNS):
        for col, p in zip(st.columns(GRID_COLUMNS), shown[row:row + GRID_COLUMNS]):
            with col.container(border=True):
                tile = tiles.get(cover.get(p.id, -1))
                if tile is not None:
                    st.image(thumbs.data_uri(tile), width=TILE)
                st.markdown(_tile_caption(p, kind))
                st.button("View", key=f"people_open_{p.id}", on_click=_open, args=(p.id,),
                          width="stretch")


# -- one person, in a dialog ------------------------------------------------------------------------
def _items(lib: "Library", model: str, p: "Person", cover_id: Optional[int]) -> set[int]:
    """The person's items, a page at a time, each with a tick box (split, cover)."""
    chosen = st.session_state.setdefault(SPLIT, {}).setdefault(p.id, set())
    chosen &= set(p.item_ids)
    start, stop = common.pager("Faces page", p.size, ITEMS_PER_PAGE, key=f"people_items_{p.id}")
    items = lib.items(model, ids=p.item_ids[start:stop])
    tiles = thumbs.item_thumbnails(lib, items)
    for row in range(0, len(items), ITEM_COLUMNS):
        for col, it, tile in zip(st.columns(ITEM_COLUMNS), items[row:row + ITEM_COLUMNS],
                                 tiles[row:row + ITEM_COLUMNS]):
            with col:
                st.image(thumbs.data_uri(tile), width=thumbs.THUMB,
                         caption="★ cover" if it.id == cover_id else "\u2007")  # rows line up
                st.checkbox(f"#{it.id}", value=it.id in chosen, key=f"people_tick_{p.id}_{it.id}",
                            on_change=_tick, args=(p.id, it.id), help=it.path)
                common.page_link("photo", "Photo", photo=it.image_id, face=it.id)
    st.session_state[f"people_page_items_{p.id}"] = [it.id for it in items]  # for "Tick all"
    return chosen


def _not_this_person(lib: "Library", model: str, p: "Person", chosen: set[int], kind: str) -> None:
    """The ticked faces are someone else (they leave for good), or no face at all."""
    st.caption(f"Tick the {noun(kind, 2)} above that are wrong, or one to show "
               f"{common.md_escape(p.label)} by.")
    a, b = st.columns(2)
    if p.size > 3:
        a.button("Tick all", key=f"people_tickall_{p.id}", on_click=_tick_page,
                 args=(p.id, st.session_state.get(f"people_page_items_{p.id}", []), True),
                 help=f"Every {noun(kind)} on this page.")
        b.button("Untick all", key=f"people_untickall_{p.id}", on_click=_tick_page,
                 args=(p.id, list(p.item_ids), False))
    if a.button(f"Not {common.short(p.label, 20)}", key=f"people_reject_{p.id}", disabled=not chosen,
                help=f"The ticked {noun(kind, 2)} are someone else: they leave {p.label} and no "
                     "clustering puts them back."):
        ids = sorted(chosen)

        def reject() -> str:
            left = lib.reject_items(p.id, ids, model)
            chosen.clear()
            if left is None:
                _open(None)
            return f"{count(len(ids), kind)} taken out of {p.label}: not {p.label}."
        _act("reject", reject)
    if b.button(f"Not {noun(kind, 2)}", key=f"people_notface_{p.id}", disabled=not chosen,
                help=f"The ticked ones are not {noun(kind, 2)} at all (false detections): removed "
                     "for good."):
        ids = sorted(chosen)

        def remove() -> str:
            n = lib.not_a_face(ids, model)
            thumbs.forget_thumbnails(lib, ids)
            chosen.clear()
            if n >= p.size:
                _open(None)
            return f"Removed {count(n, kind)} from {p.label}: not {noun(kind, 2)}."
        _act("reject", remove)
    _flash("reject")


def _suggested(lib: "Library", model: str, p: "Person", everyone: list["Person"], kind: str) -> None:
    """The people most likely to be this one, side by side: same person, or different."""
    from .pages_review import merge_card

    # Read once per state of the people, not on every tick of a face (each tick reruns the page).
    token = (p.id, p.size, lib.vector_set(model).generation, st.session_state.get("people_rev", 0))
    cached = st.session_state.get("people_suggested")
    if cached and cached[0] == token:
        suggestions = cached[1]
    else:
        try:
            suggestions = lib.merge_suggestions(model, person=p.id, limit=3)
        except PeoplemapError as e:
            common.show_error(e)
            return
        st.session_state["people_suggested"] = (token, suggestions)
    _flash("suggest")
    if not suggestions:
        st.caption(f"Nobody else looks enough like {common.md_escape(p.label)} to ask.")
        return
    by_id = {o.id: o for o in everyone}
    for s in suggestions:
        def act(where: str, action: Callable[[], str], pair=(s.person_id, s.other_id)) -> None:
            def run() -> str:
                message = action()
                alive = {q.id for q in lib.people(model, include_hidden=True)}
                if p.id not in alive:  # merged into the other: show the merged person
                    _open(next((o for o in pair if o in alive), None))
                return message
            _act(where, run)
        merge_card(lib, model, s, by_id, kind, act, "suggest")


def _all_not_faces(lib: "Library", model: str, p: "Person", kind: str) -> None:
    label = common.md_escape(p.label)
    st.caption(f"When every {noun(kind)} of {label} is a false detection (text, a logo, hair): "
               "remove them all at once, for good. Photos are not touched.")
    sure = st.checkbox(f"Yes, none of these {count(p.size, kind)} is a {noun(kind)}",
                       key=f"people_notfaces_sure_{p.id}")
    if st.button(f"Remove all: not {noun(kind, 2)}", key=f"people_notfaces_all_{p.id}", disabled=not sure):
        def remove() -> str:
            n = lib.not_a_face(p.item_ids, model)
            thumbs.forget_thumbnails(lib, p.item_ids)
            _open(None)
            return f"Removed {p.label}: {count(n, kind)} that were not {noun(kind, 2)}."
        _act("page", remove)


def _name(lib: "Library", model: str, p: "Person") -> None:
    with st.form(f"people_name_form_{p.id}", border=False):
        name = st.text_input("Name", value=p.name or "", key=f"people_name_{p.id}",
                             placeholder="Who is this?", max_chars=200)
        if st.form_submit_button("Save name", type="primary"):
            st.session_state.pop(PENDING_NAME, None)
            try:
                named = lib.name_person(p.id, name, model)
            except NameTakenError as e:
                st.session_state[PENDING_NAME] = (p.id, e.name, [o.id for o in e.others])
            except PeoplemapError as e:
                common.show_error(e)
            else:
                _act("name", lambda: f"Named {p.label} “{named.label}”.")
    pending = st.session_state.get(PENDING_NAME)
    if pending and pending[0] == p.id:
        _same_or_not(lib, model, p, pending[1], pending[2])
    _flash("name")


def _same_or_not(lib: "Library", model: str, p: "Person", name: str, others: list[int]) -> None:
    """Another person already has this name: are they the same person?"""
    who = " and ".join(f"Person {o}" for o in others)
    st.warning(f"“{common.md_escape(name)}” is already the name of {who}. Is this the same person?")
    a, b, c = st.columns(3)
    if a.button("Same person: merge", key=f"people_dup_merge_{p.id}", type="primary"):
        def merge() -> str:
            merged = lib.name_person(p.id, name, model, on_duplicate="merge")
            _open(merged.id)
            return f"Merged {p.label} into {merged.label}: {merged.size:,} in all."
        st.session_state.pop(PENDING_NAME, None)
        _act("name", merge)
    if b.button("Different people: keep apart", key=f"people_dup_apart_{p.id}"):
        st.session_state.pop(PENDING_NAME, None)
        def keep_apart() -> str:
            kept = lib.name_person(p.id, name, model, on_duplicate="keep_apart")
            return f"Named {p.label} “{kept.label}”, kept apart from {who}."
        _act("name", keep_apart)
    if c.button("Cancel", key=f"people_dup_cancel_{p.id}"):
        st.session_state.pop(PENDING_NAME, None)
        st.rerun()


def _hide(lib: "Library", model: str, p: "Person") -> None:
    if p.hidden:
        if st.button("Unhide", key=f"people_unhide_{p.id}"):
            _act("hide", lambda: f"{lib.hide_person(p.id, False, model).label} is shown again.")
    elif st.button("Hide", key=f"people_hide_{p.id}",
                   help="Hidden people are left out of the grid unless “Show hidden” is on."):
        _act("hide", lambda: f"{lib.hide_person(p.id, True, model).label} is hidden.")
    _flash("hide")


def _cover(lib: "Library", model: str, p: "Person", chosen: set[int], kind: str) -> None:
    if st.button("Use as cover", key=f"people_cover_{p.id}", disabled=len(chosen) != 1):
        item = next(iter(chosen))

        def pick() -> str:
            lib.set_cover(p.id, item, model)
            chosen.clear()
            return f"{p.label} is shown by {noun(kind)} #{item} now."
        _act("cover", pick)
    if p.cover_item_id is not None and st.button("Automatic cover", key=f"people_cover_auto_{p.id}",
                                                 help=f"Show the best {noun(kind)} again."):
        def automatic() -> str:
            lib.set_cover(p.id, None, model)
            return f"{p.label} is shown by the best {noun(kind)} again."
        _act("cover", automatic)
    _flash("cover")


def _merge(lib: "Library", model: str, p: "Person", everyone: list["Person"], kind: str) -> None:
    others = [o for o in everyone if o.id != p.id]
    if not others:
        st.caption("There is nobody else to merge with.")
        return
    with st.form(f"people_merge_form_{p.id}", border=False):
        help_text = f"Moves every {noun(kind)} of {p.label} into the person chosen here."
        target: int | str | None
        if len(others) <= MERGE_CHOICES:
            by_id = {o.id: o for o in others}
            target = st.selectbox(
                "Merge into…", list(by_id), key=f"people_merge_{p.id}", index=None,
                placeholder="Choose a person", help=help_text,
                format_func=lambda i: f"{by_id[i].label} ({count(by_id[i].size, kind)})"
                + (" · hidden" if by_id[i].hidden else ""))
        else:  # a list of thousands is slow to send and draw on every rerun, and to scroll
            target = st.text_input(
                "Merge into…", key=f"people_merge_{p.id}", max_chars=200,
                placeholder="Person number or name",
                help=help_text + " Type its number (the 12 of “Person 12”) or its name.").strip()
        if st.form_submit_button("Merge"):
            if target is None or target == "":
                st.error("Choose the person to merge into first.")
            else:
                def merge() -> str:
                    merged = lib.merge_people(target, [p.id], model)
                    _open(merged.id)
                    return f"Merged {p.label} into {merged.label}: {count(merged.size, kind)}."
                _act("merge", merge)
    _flash("merge")


def _split(lib: "Library", model: str, p: "Person", chosen: set[int], kind: str) -> None:
    st.caption(f"Tick the {noun(kind, 2)} above that are someone else: **{len(chosen)}** ticked.")
    with st.form(f"people_split_form_{p.id}", border=False, clear_on_submit=True):
        name = st.text_input("Name of the new person (optional)", key=f"people_split_name_{p.id}",
                             max_chars=200)
        if st.form_submit_button("Split selected"):
            def split() -> str:
                new = lib.split_person(p.id, sorted(chosen), model, name=name.strip() or None)
                chosen.clear()
                return f"Moved {count(new.size, kind)} out of {p.label} into {new.label}."
            _act("split", split)
    _flash("split")


def _forget(lib: "Library", model: str, p: "Person", kind: str) -> None:
    label = common.md_escape(p.label)
    st.warning(f"Forgetting deletes {label}'s {count(p.size, kind)} and what was computed from "
               "them from the library for good (the photo files are not touched). Cluster again "
               "afterwards.")
    sure = st.checkbox(f"Yes, delete the {count(p.size, kind)} of {label}", key=f"people_sure_{p.id}")
    if st.button("Forget this person", key=f"people_forget_{p.id}", disabled=not sure):
        def forget() -> str:
            n = lib.forget_person(p.id, model)
            thumbs.forget_thumbnails(lib, p.item_ids)
            _open(None)
            return f"Forgot {p.label}: {count(n, kind)} deleted."
        _act("page", forget)


def _detail(lib: "Library", model: str, p: "Person", everyone: list["Person"], kind: str) -> None:
    cover_id = covers(lib, model, [p]).get(p.id)
    top_left, top_right = st.columns([2, 1], gap="large")
    with top_left:
        _name(lib, model, p)
    with top_right:
        _hide(lib, model, p)
    chosen = _items(lib, model, p, cover_id)
    a, b, c = st.columns(3, gap="large")
    with a:
        _not_this_person(lib, model, p, chosen, kind)
        _cover(lib, model, p, chosen, kind)
    with b:
        _merge(lib, model, p, everyone, kind)
    with c:
        _split(lib, model, p, chosen, kind)
    with st.expander("Maybe the same person", expanded=True):
        _suggested(lib, model, p, everyone, kind)
    with st.expander(f"Not {noun(kind, 2)} at all?"):
        _all_not_faces(lib, model, p, kind)
    with st.expander("Forget this person"):
        _forget(lib, model, p, kind)


def _show_person(lib: "Library", model: str, p: "Person", everyone: list["Person"], kind: str) -> None:
    """The person in a dialog over the grid: it opens where the user is looking, wherever the
    grid was scrolled to."""
    title = f"{p.label} · {count(p.size, kind)}" + (" · hidden" if p.hidden else "")
    st.dialog(title, width=DIALOG_WIDTH, on_dismiss=_closed)(_detail)(lib, model, p, everyone, kind)


# -- the page -------------------------------------------------------------------------------------
def page() -> None:
    opened = common.open_edit_page("People", FLASH)
    if opened is None:
        return
    lib, model, kind, flash = opened
    if flash and flash[0] == "page":
        st.success(common.md_escape(flash[1]))
    c = lib.clustering(model)
    if c is None:
        st.info(f"No people yet: people come from clustering, which groups the {noun(kind, 2)} "
                "found by person.")
        common.cluster_controls(lib, model, key="people")
        st.session_state.pop(FLASH, None)
        return
    everyone = lib.people(model, include_hidden=True)
    people, caption = _grid_controls(lib, everyone, kind)
    st.caption(caption + (f" · {noun(kind, 2)} were added or removed since the last clustering"
                          if c.stale else ""))
    # The address says which person is open (the dialog keeps it up to date): a link from another
    # page (a face's photo) opens that person, and coming back without one opens nobody.
    st.session_state[SELECTED] = _wanted()
    selected = st.session_state.get(SELECTED)
    if not everyone:
        st.info("The clustering found no groups, so there are no people yet. Cluster again the "
                "other way, or index more photos of each person.")
    elif people:
        _grid(lib, model, people, kind)
    else:
        st.info("Everyone is hidden or seen too few times; turn on “Show hidden” or lower "
                "“Hide people seen fewer than” to see them.")
    person = next((p for p in everyone if p.id == selected), None)
    if person is not None:
        _show_person(lib, model, person, everyone, kind)
    elif selected is not None:
        _open(None)  # forgotten, merged away, or a stale address
    st.session_state.pop(FLASH, None)  # shown once
