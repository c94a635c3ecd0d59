"""Review page: the questions that finish the people, likeliest first.

- "Same person?": two people side by side with a few faces of each (Library.merge_suggestions);
  "Same person" merges them, "Different people" is remembered (never suggested or merged again).
- "Who is this?": faces nobody holds, or that a person holds unsurely, in groups of similar faces
  (Library.review_groups): "Are these Ada?" with every face a tile, ticked. "Yes" confirms the
  ticked ones and takes the unticked ones out of Ada for good; "None of them" says none is Ada;
  "Someone else" gives the ticked ones to a person picked from the list or typed (a new name makes
  a new person); "Not faces" removes false detections. A whole group is one answer.

Every answer is a Library decision that later clusterings keep (peoplemap.membership). The cards
are shared with the People page (a person's own suggestions in its dialog).
"""
from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING, Callable, Optional

import streamlit as st

from ..wording import count, noun
from . import common, thumbs

if TYPE_CHECKING:
    from ..library import Library
    from ..responses import Person
    from ..review import MergeSuggestion, ReviewGroup

SHOWN = 5
"""Questions of each kind on screen at once; the next one moves up as each is answered."""
FACE = 96
PICK_CHOICES = 500
"""Up to this many people, "Someone else" lists them; beyond, a person's number or name is typed."""
FLASH = "review_flash"
CACHE = "review_cache"

Act = Callable[[str, Callable[[], str]], None]


def _act(where: str, action) -> None:
    common.act(FLASH, where, action)


def _flash(where: str) -> None:
    common.flash(FLASH, where)


def _faces(lib: "Library", model: str, item_ids: list[int], size: int = FACE) -> None:
    """A row of face tiles, each linking to its photo."""
    items = lib.items(model, ids=item_ids)
    tiles = thumbs.item_thumbnails(lib, items, size)
    cols = st.columns(max(4, len(items)))
    for col, it, tile in zip(cols, items, tiles):
        with col:
            st.image(thumbs.data_uri(tile), width=size)
            common.page_link("photo", "Photo", photo=it.image_id, face=it.id)


# -- same person? ---------------------------------------------------------------------------------
SKIPPED = "review_skipped"
"""Session key: the questions the user put off ("Not now") in this session."""


def _skip(key: str) -> None:
    st.session_state.setdefault(SKIPPED, set()).add(key)


def _skipped(key: str) -> bool:
    return key in st.session_state.get(SKIPPED, set())


def _pair_key(s: "MergeSuggestion") -> str:
    return f"pair_{min(s.person_id, s.other_id)}_{max(s.person_id, s.other_id)}"


def merge_card(lib: "Library", model: str, s: "MergeSuggestion", people: dict[int, "Person"],
               kind: str, act: Act, where: str, can_skip: bool = False) -> None:
    """Two people side by side; "Same person" merges them, "Different people" remembers."""
    a, b = people.get(s.person_id), people.get(s.other_id)
    if a is None or b is None:
        return
    with st.container(border=True):
        left, right = st.columns(2, gap="large")
        for col, p, faces in ((left, a, s.person_faces), (right, b, s.other_faces)):
            with col:
                st.markdown(f"**{common.md_escape(p.label)}**  \n{count(p.size, kind)}")
                _faces(lib, model, faces[:4])
        same, different, later, _rest = st.columns([1, 1, 1, 1])
        key = f"{where}_{min(a.id, b.id)}_{max(a.id, b.id)}"
        if same.button("Same person", key=f"same_{key}", type="primary",
                       help="Merge them: every face goes to one person."):
            # the named one (else the larger) keeps its number and takes the other's faces
            target, other = sorted((a, b), key=lambda p: (p.name is None, -p.size, p.id))

            def merge() -> str:
                merged = lib.merge_people(target.id, [other.id], model)
                return f"Merged {other.label} into {merged.label}: {count(merged.size, kind)}."
            act(where, merge)
        if different.button("Different people", key=f"different_{key}",
                            help="Remembered: they are never suggested or grouped together again."):
            def apart() -> str:
                lib.mark_different(a.id, b.id, model)
                return f"{a.label} and {b.label} are different people."
            act(where, apart)
        if can_skip:
            later.button("Not now", key=f"later_{key}", on_click=_skip, args=(_pair_key(s),),
                         help="Ask later (this question comes back next time).")


# -- who is this? ---------------------------------------------------------------------------------
def _group_key(g: "ReviewGroup") -> str:
    return hashlib.sha1(repr(g.item_ids).encode()).hexdigest()[:10]


def _tick_all(item_ids: list[int], ticked: bool) -> None:
    for i in item_ids:
        st.session_state[f"review_tick_{i}"] = ticked


def _ticked(g: "ReviewGroup") -> tuple[list[int], list[int]]:
    ticked = [i for i in g.item_ids if st.session_state.get(f"review_tick_{i}", True)]
    return ticked, [i for i in g.item_ids if i not in set(ticked)]


def _question(g: "ReviewGroup", candidate: Optional["Person"], kind: str) -> str:
    n = len(g.item_ids)
    these = "Is this" if n == 1 else "Are these"
    if candidate is None:
        return f"Who {'is this' if n == 1 else 'are these'}? · {count(n, kind)}"
    return f"{these} {common.md_escape(candidate.label)}? · {count(n, kind)}"


def group_card(lib: "Library", model: str, g: "ReviewGroup", people: dict[int, "Person"],
               kind: str, act: Act, where: str, can_skip: bool = False) -> None:
    candidate = people.get(g.candidate_id) if g.candidate_id is not None else None
    key = _group_key(g)
    with st.container(border=True):
        st.markdown(f"**{_question(g, candidate, kind)}**")
        if g.kind == "uncertain" and candidate is not None:
            st.caption(f"{candidate.label} holds these, but they look least like the rest of "
                       f"{candidate.label}'s {noun(kind, 2)}.")
        items = lib.items(model, ids=g.item_ids)
        tiles = thumbs.item_thumbnails(lib, items, FACE)
        if len(items) > 3:  # a big group that is mostly wrong: untick all, then tick the few
            x, y, _rest = st.columns([1, 1, 4])
            x.button("Tick all", key=f"review_tickall_{key}", on_click=_tick_all,
                     args=(g.item_ids, True))
            y.button("Untick all", key=f"review_untickall_{key}", on_click=_tick_all,
                     args=(g.item_ids, False))
        per_row = 8
        for row in range(0, len(items), per_row):
            for col, it, tile in zip(st.columns(per_row), items[row:row + per_row],
                                     tiles[row:row + per_row]):
                with col:
                    st.image(thumbs.data_uri(tile), width=FACE)
                    st.checkbox(f"#{it.id}", value=True, key=f"review_tick_{it.id}",
                                help="Untick a face that is not this person.")
                    common.page_link("photo", "Photo", photo=it.image_id, face=it.id)
        ticked, unticked = _ticked(g)
        cols = iter(st.columns(4))  # the buttons there are, from the left
        if candidate is not None:
            if next(cols).button(f"Yes, {_short(candidate.label)}", key=f"review_yes_{key}",
                                 type="primary", disabled=not ticked,
                                 help=f"The ticked {noun(kind, 2)} are {candidate.label}; "
                                      "unticked ones are not, for good."):
                def yes() -> str:
                    lib.confirm_items(candidate.id, ticked, model)
                    if unticked:
                        lib.reject_items(candidate.id, unticked, model)
                    return (f"{count(len(ticked), kind)} confirmed as {candidate.label}"
                            + (f"; {len(unticked)} marked as not {candidate.label}." if unticked else "."))
                act(where, yes)
            none_label = "None of them" if len(g.item_ids) > 1 else f"Not {_short(candidate.label)}"
            if next(cols).button(none_label, key=f"review_none_{key}",
                                 help=f"Not {candidate.label}: never suggested as "
                                      f"{candidate.label} again."):
                def none() -> str:
                    lib.reject_items(candidate.id, g.item_ids, model)
                    if len(g.item_ids) == 1:
                        return f"That {noun(kind)} is not {candidate.label}."
                    return f"None of the {count(len(g.item_ids), kind)} is {candidate.label}."
                act(where, none)
        if next(cols).button("Not faces" if len(g.item_ids) > 1 else f"Not a {noun(kind)}",
                             key=f"review_notface_{key}", disabled=not ticked,
                             help=f"The ticked ones are not {noun(kind, 2)} at all (false "
                                  "detections): removed for good."):
            def remove() -> str:
                n = lib.not_a_face(ticked, model)
                thumbs.forget_thumbnails(lib, ticked)
                return f"Removed {plural_not_faces(n, kind)}."
            act(where, remove)
        if can_skip:
            next(cols).button("Not now", key=f"review_later_{key}", on_click=_skip, args=(key,),
                              help="Ask later (this question comes back next time).")
        _someone_else(lib, model, g, people, ticked, kind, act, where, key)


def plural_not_faces(n: int, kind: str) -> str:
    return f"{n} false {noun(kind, n)}"


def _short(label: str) -> str:
    return common.short(label, 24)


def _someone_else(lib: "Library", model: str, g: "ReviewGroup", people: dict[int, "Person"],
                  ticked: list[int], kind: str, act: Act, where: str, key: str) -> None:
    """Give the ticked faces to another person, picked or typed; a new name makes a new person."""
    with st.form(f"review_other_{key}", border=False):
        label = "Someone else: who?" if g.candidate_id is not None else "Who are they?"
        hint = ("Pick a person or type a new name" if len(people) <= PICK_CHOICES
                else "A person's number or name, or a new name")
        if len(people) <= PICK_CHOICES:
            ordered = sorted(people.values(), key=lambda p: (p.name is None, (p.name or "").casefold(),
                                                             -p.size, p.id))
            who = st.selectbox(label, [p.label for p in ordered if p.id != g.candidate_id],
                               index=None, accept_new_options=True, placeholder=hint,
                               key=f"review_who_{key}")
        else:
            who = st.text_input(label, key=f"review_who_{key}", max_chars=200, placeholder=hint)
        if st.form_submit_button(f"Give the ticked {noun(kind, 2)} to them" if len(g.item_ids) > 1
                                 else f"Give this {noun(kind)} to them"):
            if not who or not str(who).strip():
                st.error("Pick or type who they are first.")
            elif not ticked:
                st.error(f"Tick at least one {noun(kind)}.")
            else:
                def give() -> str:
                    person, new = common.assign_to(lib, model, ticked, str(who))
                    return (f"{count(len(ticked), kind)} given to {person.label}"
                            + (" (a new person)." if new else "."))
                act(where, give)


# -- the page -------------------------------------------------------------------------------------
def questions(lib: "Library", model: str, people: list["Person"]
              ) -> tuple[list["MergeSuggestion"], list["ReviewGroup"]]:
    """The merge suggestions and review groups, computed once per state of the people (ticking a
    face reruns the page, which must not compute them again)."""
    c = lib.clustering(model)
    s = lib.vector_set(model)
    token = (str(lib.path), model, c.id if c else None, s.generation, s.n_items,
             st.session_state.get("people_rev", 0),
             hash(tuple((p.id, p.size, p.hidden, p.name) for p in people)))
    cached = st.session_state.get(CACHE)
    if cached and cached[0] == token:
        return cached[1], cached[2]
    with st.spinner("Looking for questions…"):
        suggestions = lib.merge_suggestions(model, limit=50)
        groups = lib.review_groups(model, limit=100)
    st.session_state[CACHE] = (token, suggestions, groups)
    return suggestions, groups


def page() -> None:
    opened = common.open_edit_page("Review", FLASH)
    if opened is None:
        return
    lib, model, kind, _last = opened
    if lib.clustering(model) is None:
        st.info(f"Nothing to review yet: cluster the {noun(kind, 2)} first.")
        common.cluster_controls(lib, model, key="review")
        st.session_state.pop(FLASH, None)
        return
    st.caption("A few answers finish the grouping. Every answer is kept: clustering again never "
               "undoes it.")
    everyone = lib.people(model, include_hidden=True)
    by_id = {p.id: p for p in everyone}
    suggestions, groups = questions(lib, model, everyone)
    suggestions = [s for s in suggestions if s.person_id in by_id and s.other_id in by_id
                   and not _skipped(_pair_key(s))]
    groups = [g for g in groups if g.item_ids and not _skipped(_group_key(g))]

    n_skipped = len(st.session_state.get(SKIPPED, ()))
    if n_skipped:
        left, right = st.columns([3, 1], vertical_alignment="center")
        left.caption(f"{n_skipped:,} put off for later.")
        right.button("Ask them again", key="review_unskip",
                     on_click=lambda: st.session_state.pop(SKIPPED, None))
    st.subheader(f"Same person? · {len(suggestions)}")
    _flash("suggestions")
    if not suggestions:
        st.caption("No two people look alike enough to ask.")
    for s in suggestions[:SHOWN]:
        merge_card(lib, model, s, by_id, kind, _act, "suggestions", can_skip=True)

    st.subheader(f"Who is this? · {len(groups)}")
    _flash("groups")
    if not groups:
        st.caption(f"Every {noun(kind)} has its person.")
    for g in groups[:SHOWN]:
        group_card(lib, model, g, by_id, kind, _act, "groups", can_skip=True)
    st.session_state.pop(FLASH, None)  # shown once
