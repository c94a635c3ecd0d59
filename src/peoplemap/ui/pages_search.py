"""Search page: upload a photo, see who is in it and the most similar faces of the library.

With a face (or body) model a group photo holds several faces: first a summary of who is in the
photo (each face: a person, a guess, or unknown), then the photo with numbered boxes and one face
at a time picked to show its matches. Each face's verdict is said once; cluster numbers,
confidences and boxes are under "Technical details".
"""
from __future__ import annotations

import io
import os
from typing import TYPE_CHECKING, Optional

import streamlit as st

from ..errors import ImageError, PeoplemapError
from .. import wording
from ..wording import count, noun, person_label, verdict
from . import common, dates, thumbs

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


def _who(r: "QueryResult", clustered: bool) -> str:
    """A face's verdict in a few words, for the summary: "Ada", "probably Ada (a guess)",
    "unknown"."""
    if not clustered:
        return "not grouped yet"
    return verdict(person_label(r.person, r.person_id), r.confidence)


def _verdict_text(r: "QueryResult", clustered: bool, kind: str) -> str:
    """A face's verdict as a sentence, said once: who it is, a guess, or nobody."""
    if not clustered:
        return ("**Not grouped yet**: cluster the library (Index or Clusters page) to see who "
                "this is.")
    person = person_label(r.person, r.person_id)
    if person is None:
        return (f"**Unknown**: matches nobody in the library. The most similar {noun(kind, 2)} "
                "are below, but none is close enough to be the same person.")
    name = common.md_escape(person)
    if r.confidence < wording.GUESS_BELOW:
        return (f"**Probably {name}**: a guess; this {noun(kind)} is only somewhat like "
                f"{name}'s.")
    return f"This is **{name}**."


def _name(path: str) -> str:
    """Folder and file name: enough to tell files apart, short enough for a grid cell."""
    folder = os.path.basename(os.path.dirname(path))
    return f"{folder}/{os.path.basename(path)}" if folder else os.path.basename(path)


def _where(h: "Hit") -> str:
    person = person_label(h.person, h.person_id)
    return "unsorted" if person is None else f"**{common.md_escape(person)}**"


def _hits(r: "QueryResult") -> None:
    if not r.hits:
        st.info("Nothing similar was found.")
        return
    for row in range(0, len(r.hits), HITS_PER_ROW):
        cols = st.columns(HITS_PER_ROW)
        for col, (rank, h) in zip(cols, enumerate(r.hits[row:row + HITS_PER_ROW], row + 1)):
            with col:
                st.image(thumbs.thumbnail(h.path, h.box, HIT_THUMB), width=HIT_THUMB)
                st.markdown(f"**#{rank}** · {common.md_escape(_name(h.path))}  \n"
                            f"similarity {h.similarity:.3f} · {_where(h)}"
                            + (f"  \ntaken {dates.day_label(h.taken)}" if h.taken else ""))
                common.page_link("photo", "Photo", face=h.item_id)


def _technical(results: list["QueryResult"], kind: str) -> None:
    """Cluster numbers, confidences and boxes: for whoever wants to know how it was decided."""
    with st.expander("Technical details"):
        st.caption(f"A {noun(kind)} belongs to a person when it lies within the radius of that "
                   f"person's cluster; below a confidence of {wording.GUESS_BELOW:.2f} it is shown as a guess.")
        st.table([{noun(kind): n, "box": str(tuple(r.region.box)) if r.region and r.region.box
                   else "whole photo", "cluster": "none" if r.cluster is None else r.cluster,
                   "person": person_label(r.person, r.person_id) or "none",
                   "confidence": round(float(r.confidence), 3),
                   "hits (cluster)": ", ".join("-" if h.cluster is None else str(h.cluster)
                                               for h in r.hits)}
                  for n, r in enumerate(results, 1)], hide_index=True)


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


def _one_region(img: Optional["DecodedImage"], r: "QueryResult", name: str, clustered: bool,
                kind: str) -> None:
    left, right = st.columns([1, 3])
    with left:
        if img is not None:
            st.image(_query_preview(img, [r.region.box if r.region else None], None, QUERY_SIDE),
                     caption=common.md_escape(name))
    with right:
        if r.region is None and not r.hits:
            st.info(f"No {noun(kind)} was found in this photo." if kind != "image"
                    else "Nothing similar was found.")
            return
        st.markdown(_verdict_text(r, clustered, kind))
        st.caption(f"The {count(len(r.hits), kind)} most like it, most similar first.")
    _hits(r)


def _summary(results: list["QueryResult"], clustered: bool, kind: str) -> None:
    """Who is in the photo, face by face, before any detail."""
    st.markdown(f"**Who is in this photo** ({count(len(results), kind)}):")
    st.markdown("\n".join(f"- {noun(kind).capitalize()} {n}: "
                          f"**{common.md_escape(_who(r, clustered))}**"
                          for n, r in enumerate(results, 1)))


def _many_regions(img: Optional["DecodedImage"], results: list["QueryResult"], kind: str,
                  key: str, clustered: bool) -> None:
    word = noun(kind).capitalize()
    left, right = st.columns([3, 2])
    with right:
        _summary(results, clustered, kind)
        picked = st.radio(f"See the matches of a {noun(kind)}", range(len(results)), key=key,
                          horizontal=True, format_func=lambda n: f"{word} {n + 1}")
        r = results[picked]
        box = r.region.box if r.region is not None else None
        if img is not None and box is not None:
            st.image(_region_crop(img, box), caption=f"{word} {picked + 1}")
        st.markdown(_verdict_text(r, clustered, kind))
    with left:
        if img is not None:
            boxes = [q.region.box if q.region is not None else None for q in results]
            st.image(_query_preview(img, boxes, picked, GROUP_WIDTH))
    st.subheader(f"Matches for {noun(kind)} {picked + 1}", anchor=False)
    _hits(r)


def page() -> None:
    opened = common.open_page("Search", ", then search it with a photo.")
    if opened is None:
        return
    lib, model = opened
    up = st.file_uploader("Query photo", type=UPLOAD_TYPES,
                          help=f"Up to {lib.settings.max_upload_mb} MB. The photo is only compared, "
                               "never added to the library.")
    kind = common.kind_of(lib, model)
    k = st.slider("Results", min_value=1, max_value=50, value=10,
                  help=f"How many of the most similar {noun(kind, 2)} to show for each "
                       f"{noun(kind)} in the photo.")
    keep = dates.year_filter(lib.store.photos.years(), "search")
    if up is None:
        st.caption(f"Upload a photo to see who is in it and the most similar {noun(kind, 2)} of "
                   "the library.")
        return
    try:
        # With a date filter, look further and keep the k nearest that pass it.
        results = dates.only(_search(lib, up, k if keep is None else 4 * k, model), keep, k)
    except PeoplemapError as e:
        common.show_error(e, up.name)
        return
    clustered = lib.clustering(model) is not None
    img = _decode(up.getvalue())
    if len(results) == 1:
        _one_region(img, results[0], up.name, clustered, kind)
    else:
        _many_regions(img, results, kind, f"search_region_{up.file_id}", clustered)
    if results and (results[0].hits or results[0].region is not None):
        _technical(results, kind)
