"""Photo page: one whole photo with every face's box and name drawn, opened from any face
(`/photo?photo=IMAGE_ID&face=ITEM_ID`; that face's box is highlighted).

Beside it, who is in the photo: each face numbered as on the photo, with its person (a link to
that person), "Not <name>" (the face leaves the person for good), "Not a face" (a false detection,
removed for good) and, for a face nobody holds, "Who is this?". Below, a face the detector missed
is added by its box, in the photo's own pixels, measured from the top-left corner.
"""
from __future__ import annotations

import os
from typing import TYPE_CHECKING, Optional

import streamlit as st

from ..errors import InputError
from ..people import persons_of
from ..wording import noun
from . import common, thumbs

if TYPE_CHECKING:
    from ..library import Library
    from ..types import Item

PHOTO_WIDTH = 720
MAX_CANVAS_HEIGHT = 640
FACE_TILE = 72
FLASH = "photo_flash"
"""Session key: the last action's (where, message), shown once by the control that did it."""


def _int_param(name: str) -> Optional[int]:
    value = st.query_params.get(name, "")
    return int(value) if value.isdigit() else None


def _act(where: str, action) -> None:
    common.act(FLASH, where, action)


def _flash(where: str) -> None:
    common.flash(FLASH, where)


def _faces(lib: "Library", model: str, image_id: int) -> list["Item"]:
    """This vector set's faces of the photo, left to right."""
    found = lib.store.items.of_image(image_id, lib.vector_set(model).item_kind)
    items = lib.items(model, ids=[it.id for it in found])
    return sorted(items, key=lambda it: (it.box[0], it.box[1]) if it.box else (0, 0))


def _who_is_in_it(lib: "Library", model: str, faces: list["Item"], who: dict, kind: str) -> None:
    st.subheader("Who is in this photo")
    if not faces:
        st.caption(f"No {noun(kind)} was found in this photo. Add one below.")
    named = sorted({who[it.id][0]: who[it.id] for it in faces if it.id in who}.values(),
                   key=lambda pn: (pn[1] is None, (pn[1] or "").casefold(), pn[0]))
    if named:
        st.markdown(", ".join(f"**{common.md_escape(n or f'Person {p}')}**" for p, n in named))
    tiles = thumbs.item_thumbnails(lib, faces, FACE_TILE)
    for n, (it, tile) in enumerate(zip(faces, tiles), 1):
        with st.container(border=True):
            left, right = st.columns([1, 4], vertical_alignment="center")
            left.image(thumbs.data_uri(tile), width=FACE_TILE)
            with right:
                owner = who.get(it.id)
                if owner is None:
                    st.markdown(f"**{n}** · nobody yet")
                    _name_face(lib, model, it, n)
                else:
                    pid, name = owner
                    label = name or f"Person {pid}"
                    st.markdown(f"**{n}** · {common.md_escape(label)}")
                    common.page_link("people", f"See {label}", person=pid)
                a, b = st.columns(2)
                if owner is not None and a.button(f"Not {label}", key=f"photo_reject_{it.id}",
                                                  help=f"This {noun(kind)} is someone else: it "
                                                       f"leaves {label} and never comes back."):
                    _act(f"face_{it.id}", lambda: (lib.reject_items(pid, [it.id], model),
                                                   f"{noun(kind).capitalize()} {n} is not {label}.")[1])
                if b.button("Not a face", key=f"photo_notface_{it.id}",
                            help="A false detection: removed for good, and not found again when "
                                 "the photo is indexed again."):
                    def remove(item=it, number=n) -> str:
                        lib.not_a_face([item.id], model)
                        thumbs.forget_thumbnails(lib, [item.id])
                        return f"Removed {noun(kind)} {number}: not a {noun(kind)}."
                    _act("faces", remove)
                _flash(f"face_{it.id}")
    _flash("faces")


def _name_face(lib: "Library", model: str, it: "Item", n: int) -> None:
    with st.form(f"photo_name_form_{it.id}", border=False):
        who = st.text_input("Who is this?", key=f"photo_name_{it.id}", max_chars=200,
                            placeholder="A name, or a person's number")
        if st.form_submit_button("Save"):
            def name() -> str:
                person, new = common.assign_to(lib, model, [it.id], who)
                return f"Face {n} is {person.label}" + (" (a new person)." if new else ".")
            _act(f"face_{it.id}", name)


BOX_KEYS = ("photo_box_x", "photo_box_y", "photo_box_w", "photo_box_h")
DRAWN = "photo_drawn"
"""Session keys: the add-a-face box fields; the last box drawn on the photo (so that a box typed
afterwards is not overwritten by the same drawing on the next rerun)."""


def _photo_canvas(drawn: bytes, width: int, height: int, image_id: int) -> None:
    """The photo with its boxes, on which a box can be dragged with the mouse (Plotly's box
    select): the drawn box fills in the "Add a missed face" fields, in the photo's pixels."""
    import io

    import numpy as np
    import plotly.graph_objects as go
    from PIL import Image

    shown_w, shown_h = Image.open(io.BytesIO(drawn)).size
    fig = go.Figure()
    fig.add_layout_image(source=thumbs.data_uri(drawn), xref="x", yref="y", x=0, y=0,
                         sizex=width, sizey=height, sizing="stretch", layer="below")
    # Box select needs a selectable trace: an invisible grid of points over the photo.
    gx, gy = np.meshgrid(np.linspace(0, width, 24), np.linspace(0, height, 24))
    fig.add_trace(go.Scatter(x=gx.ravel(), y=gy.ravel(), mode="markers", hoverinfo="skip",
                             marker={"opacity": 0, "size": 2}, showlegend=False))
    # The axes are the photo's own pixels, kept exactly (constrain="domain": a narrower column
    # shrinks the plot, never widens the range), so a drawn box reads straight off them.
    fig.update_xaxes(range=[0, width], visible=False, fixedrange=True, constrain="domain")
    fig.update_yaxes(range=[height, 0], visible=False, fixedrange=True, scaleanchor="x",
                     constrain="domain")
    fig.update_layout(dragmode="select", margin={"l": 0, "r": 0, "t": 0, "b": 0},
                      height=min(shown_h, MAX_CANVAS_HEIGHT), plot_bgcolor="white",
                      newselection={"line": {"color": "#ffc800", "width": 2}})
    event = st.plotly_chart(fig, key=f"photo_canvas_{image_id}", on_select="rerun",
                            selection_mode="box", width="stretch",
                            config={"displayModeBar": False, "scrollZoom": False})
    boxes = (event or {}).get("selection", {}).get("box", []) if event else []
    if not boxes:
        return
    b = boxes[-1]
    x0, x1 = sorted(float(v) for v in b["x"][:2])
    y0, y1 = sorted(float(v) for v in b["y"][:2])
    # within the fields' limits: a box dragged past the photo's edge stops at the edge
    x0, y0 = min(max(0, round(x0)), width - 1), min(max(0, round(y0)), height - 1)
    x1, y1 = min(width, round(x1)), min(height, round(y1))
    box = (x0, y0, max(1, x1 - x0), max(1, y1 - y0))
    if st.session_state.get(DRAWN) != (image_id, box):  # a new drawing: fill in the fields
        st.session_state[DRAWN] = (image_id, box)
        for k, v in zip(BOX_KEYS, box):
            st.session_state[k] = int(v)


def _add_face(lib: "Library", model: str, image_id: int, width: int, height: int, kind: str) -> None:
    st.subheader(f"Add a missed {noun(kind)}")
    st.caption(f"Drag a box around the {noun(kind)} on the photo, or type it: its left and top "
               f"edge (x, y, from the photo's top-left corner), width and height. The photo is "
               f"{width:,} × {height:,} pixels.")
    if st.session_state.get("photo_box_of") != image_id:  # another photo: start afresh
        st.session_state["photo_box_of"] = image_id
        side = max(1, min(width, height) // 4)
        for k, v in zip(BOX_KEYS, (0, 0, side, side)):
            st.session_state[k] = v
    with st.form("photo_add_face", border=False):
        cols = st.columns(4)
        x = cols[0].number_input("x", min_value=0, max_value=max(0, width - 1), step=1, key=BOX_KEYS[0])
        y = cols[1].number_input("y", min_value=0, max_value=max(0, height - 1), step=1, key=BOX_KEYS[1])
        w = cols[2].number_input("Width", min_value=1, max_value=max(1, width), step=1, key=BOX_KEYS[2])
        h = cols[3].number_input("Height", min_value=1, max_value=max(1, height), step=1, key=BOX_KEYS[3])
        who = st.text_input("Who is it? (optional)", max_chars=200,
                            key=f"photo_add_who_{st.session_state.get('photo_added', 0)}",
                            placeholder="A name or a person's number; empty: peoplemap decides")
        if st.form_submit_button(f"Add {noun(kind)}", type="primary"):
            def add() -> str:
                box = (int(x), int(y), int(w), int(h))
                st.session_state.pop("photo_box_of", None)  # the fields start afresh
                st.session_state["photo_added"] = st.session_state.get("photo_added", 0) + 1
                text = who.strip()
                person = None
                if text:
                    try:
                        person = lib.person(text, model).id
                    except InputError:
                        person = None  # a new name: the new person is made below
                item = lib.add_face(image_id, box, person=person, model=model)
                if text and person is None:
                    made, _new = common.assign_to(lib, model, [item.id], text)
                    return f"Added a {noun(kind)} of {made.label}."
                owner = persons_of(lib, [item.id]).get(item.id)
                if owner is None:
                    return f"Added a {noun(kind)}; it looks like nobody in the library yet."
                return f"Added a {noun(kind)} of {owner[1] or f'Person {owner[0]}'}."
            _act("add", add)
    _flash("add")


def page() -> None:
    opened = common.open_edit_page("Photo", FLASH)
    if opened is None:
        return
    lib, model, kind, _last = opened
    image_id, face = _int_param("photo"), _int_param("face")
    if image_id is None and face is not None:  # a face alone (a search hit): its photo
        of_face = lib.items(model, ids=[face])
        image_id = of_face[0].image_id if of_face else None
    found = lib.store.images.find(image_id) if image_id is not None else None
    if found is None:
        st.info(f"Open a photo from any {noun(kind)} on the People or Review page.")
        st.session_state.pop(FLASH, None)
        return
    _id, path, _sha = found
    faces = _faces(lib, model, image_id)
    who = persons_of(lib, [it.id for it in faces])
    st.caption(common.md_escape(path))
    labels = [(it.box, f"{n} {who[it.id][1] or f'Person {who[it.id][0]}'}" if it.id in who else str(n),
               it.id == face) for n, it in enumerate(faces, 1) if it.box is not None]
    left, right = st.columns([3, 2], gap="large")
    with left:
        drawn = thumbs.photo_with_boxes(path, labels, PHOTO_WIDTH)
        if drawn is None:
            st.error(f"{common.md_escape(os.path.basename(path))} cannot be read any more.")
            st.session_state.pop(FLASH, None)
            return
        data, width, height = drawn
        _photo_canvas(data, width, height, image_id)
    with right:
        _who_is_in_it(lib, model, faces, who, kind)
    if kind != "image":  # a whole-image model has one item per photo: nothing to miss
        _add_face(lib, model, image_id, width, height, kind)
    st.session_state.pop(FLASH, None)  # shown once
