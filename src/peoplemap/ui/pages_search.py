"""Search page: upload a photo, see the most similar items and the person the photo belongs to.

With a face (or body) model a group photo holds several regions: the photo is drawn with numbered
boxes and one region at a time is picked to show its hits and its person.
"""
from __future__ import annotations

import io
import os
from typing import TYPE_CHECKING, Optional

import streamlit as st

from ..errors import ImageError, PeoplemapError
from . import common, thumbs

if TYPE_CHECKING:
    from ..ingest import DecodedImage
    from ..library import Library
    from ..types import Box, Hit, QueryResult

UPLOAD_TYPES = ["jpg", "jpeg", "png", "webp", "bmp", "gif", "tif", "tiff", "pgm", "ppm"]
HITS_PER_ROW = 5
HIT_THUMB = 150
QUERY_SIDE = 320
"""Display size of a whole-image query."""
GROUP_WIDTH = 640
"""Display width of a query with several regions: wide enough to tell the numbered boxes apart."""
REGION_THUMB = 160
BOX = (255, 60, 60)
PICKED = (255, 200, 0)
KIND_WORD = {"face": "Face", "body": "Person"}


def _decode(data: bytes) -> Optional["DecodedImage"]:
    from ..ingest import decode_image

    try:
        return decode_image(data, min_side=QUERY_SIDE)
    except (ImageError, OSError):
        return None


def _jpeg(im) -> bytes:
    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=90)
    return buf.getvalue()


def _query_preview(img: "DecodedImage", boxes: list[Optional["Box"]], picked: Optional[int],
                   width: int) -> bytes:
    """The query at display width, with the regions outlined and numbered on a copy (the picked one
    in another colour). Boxes are in original pixels; the decoded image may be drafted smaller."""
    from PIL import Image, ImageDraw, ImageFont

    im = Image.fromarray(img.pixels)  # a new image: the decoded pixels are not drawn on
    ratio = min(2.0, width / max(im.size))
    if abs(ratio - 1.0) > 0.01:
        im = im.resize((max(1, round(im.width * ratio)), max(1, round(im.height * ratio))))
    shown = [(n, b) for n, b in enumerate(boxes) if b is not None]
    if shown:
        draw = ImageDraw.Draw(im)
        font = ImageFont.load_default(size=max(12, round(max(im.size) / 30)))
        s = img.scale * ratio
        for n, (x, y, w, h) in sorted(shown, key=lambda nb: nb[0] == picked):  # picked on top
            colour = PICKED if n == picked else BOX
            x0, y0, x1, y1 = x * s, y * s, (x + w) * s, (y + h) * s
            draw.rectangle([x0, y0, x1, y1], outline=colour, width=4 if n == picked else 2)
            label = str(n + 1)
            left, top, right, bottom = font.getbbox(label)
            tw, th = right - left + 6, bottom - top + 6
            ty = y0 - th if y0 >= th else y0  # a tag above the box, or inside it at the top edge
            draw.rectangle([x0, ty, x0 + tw, ty + th], fill=colour)
            draw.text((x0 + 3 - left, ty + 3 - top), label, fill=(0, 0, 0), font=font)
    return _jpeg(im)


def _region_crop(img: "DecodedImage", box: "Box") -> bytes:
    from PIL import Image

    f = img.scale
    x, y, w, h = (int(round(v * f)) for v in box)
    im = Image.fromarray(img.pixels[max(0, y):max(0, y) + max(1, h), max(0, x):max(0, x) + max(1, w)])
    im.thumbnail((REGION_THUMB, REGION_THUMB))
    return _jpeg(im)


def _person_label(name: Optional[str], person_id: Optional[int]) -> Optional[str]:
    if name:
        return name
    return None if person_id is None else f"person {person_id}"


def _assignment_text(r: "QueryResult", clustered: bool) -> str:
    if not clustered:
        return ("**No cluster**: the library is not clustered yet (cluster it on the Index or "
                "Clusters page).")
    if r.cluster is None:
        return "**No cluster**: the photo is not close enough to any cluster."
    person = _person_label(r.person, r.person_id)
    if person is None:
        return f"Belongs to **cluster {r.cluster}** (confidence {r.confidence:.2f})."
    return (f"Belongs to **{common.md_escape(person)}**, cluster {r.cluster} "
            f"(confidence {r.confidence:.2f}).")


def _name(path: str) -> str:
    """Folder and file name: enough to tell files apart, short enough for a grid cell."""
    folder = os.path.basename(os.path.dirname(path))
    return f"{folder}/{os.path.basename(path)}" if folder else os.path.basename(path)


def _where(h: "Hit") -> str:
    cluster = "unsorted" if h.cluster is None else f"cluster {h.cluster}"
    person = _person_label(h.person, h.person_id)
    return cluster if person is None else f"**{common.md_escape(person)}** · {cluster}"


def _hits(r: "QueryResult") -> None:
    if not r.hits:
        st.info("The model found nothing to search for in this photo (a face model finds no face, "
                "say)." if r.region is None else "Nothing similar was found.")
        return
    for row in range(0, len(r.hits), HITS_PER_ROW):
        cols = st.columns(HITS_PER_ROW)
        for col, (rank, h) in zip(cols, enumerate(r.hits[row:row + HITS_PER_ROW], row + 1)):
            with col:
                st.image(thumbs.thumbnail(h.path, h.box, HIT_THUMB), width=HIT_THUMB)
                box = f" · box {tuple(h.box)}" if h.box else ""
                st.markdown(f"**#{rank}** · {common.md_escape(_name(h.path))}  \n"
                            f"similarity {h.similarity:.3f} · {_where(h)}{box}")


def _search(lib: "Library", up, k: int, model: str) -> list["QueryResult"]:
    """lib.search, remembered for this upload, so picking another face does not embed again.
    The key holds what changes the answer: vectors, clustering and people edits in this session."""
    c = lib.clustering(model)
    key = (up.file_id, k, model, lib.vector_set(model).generation, c.id if c else None,
           st.session_state.get("people_rev", 0))
    cached = st.session_state.get("search_cache")
    if cached is not None and cached[0] == key:
        return cached[1]
    results = lib.search(up.getvalue(), k=k, model=model, name=up.name)
    st.session_state["search_cache"] = (key, results)
    return results


def _one_region(img: Optional["DecodedImage"], r: "QueryResult", name: str, clustered: bool) -> None:
    left, right = st.columns([1, 3])
    with left:
        if img is not None:
            st.image(_query_preview(img, [r.region.box if r.region else None], None, QUERY_SIDE),
                     caption=common.md_escape(name))
    with right:
        if r.region is None or r.region.box is None:
            st.markdown(_assignment_text(r, clustered))
            st.caption(f"{len(r.hits)} most similar items, most similar first.")
        else:
            st.markdown(f"Region 1 · box {tuple(r.region.box)}  \n" + _assignment_text(r, clustered))
    _hits(r)


def _many_regions(img: Optional["DecodedImage"], results: list["QueryResult"], word: str,
                  key: str, clustered: bool) -> None:
    left, right = st.columns([3, 2])
    with right:
        st.markdown(f"Found **{len(results)}** {word.lower()}s in the photo; pick one to see its "
                    "matches.")
        picked = st.radio(word, range(len(results)), key=key, horizontal=True,
                          format_func=lambda n: f"{word} {n + 1}")
        r = results[picked]
        box = r.region.box if r.region is not None else None
        if img is not None and box is not None:
            st.image(_region_crop(img, box), caption=f"{word} {picked + 1} · box {tuple(box)}")
        st.markdown(_assignment_text(r, clustered))
    with left:
        if img is not None:
            boxes = [q.region.box if q.region is not None else None for q in results]
            st.image(_query_preview(img, boxes, picked, GROUP_WIDTH))
    st.subheader(f"Matches for {word.lower()} {picked + 1}", anchor=False)
    _hits(r)


def page() -> None:
    opened = common.open_page("Search", ", then search it with a photo.")
    if opened is None:
        return
    lib, model = opened
    up = st.file_uploader("Query photo", type=UPLOAD_TYPES,
                          help=f"Up to {lib.settings.max_upload_mb} MB. The photo is only compared, "
                               "never added to the library.")
    k = st.slider("Number of results (k)", min_value=1, max_value=50, value=10)
    if up is None:
        st.caption("Upload a photo to find the most similar items in the library.")
        return
    try:
        results = _search(lib, up, k, model)
    except PeoplemapError as e:
        common.show_error(e, up.name)
        return
    clustered = lib.clustering(model) is not None
    img = _decode(up.getvalue())
    if len(results) == 1:
        _one_region(img, results[0], up.name, clustered)
    else:
        word = KIND_WORD.get(lib.vector_set(model).item_kind, "Region")
        _many_regions(img, results, word, f"search_region_{up.file_id}", clustered)
