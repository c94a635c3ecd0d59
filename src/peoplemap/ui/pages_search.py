"""Search page: upload a photo, see the most similar items and the cluster the photo belongs to."""
from __future__ import annotations

import io
import os
from typing import TYPE_CHECKING, Optional

import streamlit as st

from ..errors import ImageError, PeoplemapError
from . import common

if TYPE_CHECKING:
    from ..types import QueryResult

UPLOAD_TYPES = ["jpg", "jpeg", "png", "webp", "bmp", "gif", "tif", "tiff", "pgm", "ppm"]
HITS_PER_ROW = 5
HIT_THUMB = 150
QUERY_SIDE = 320


def _query_preview(data: bytes, results: list["QueryResult"]) -> Optional[bytes]:
    """The query image, small, with the regions found in it outlined and numbered (None if unreadable)."""
    from PIL import Image, ImageDraw

    from ..ingest import decode_image

    try:
        img = decode_image(data, min_side=QUERY_SIDE)
    except (ImageError, OSError):
        return None
    im = Image.fromarray(img.pixels)
    f = img.scale
    boxes = [r.region.box for r in results if r.region is not None and r.region.box is not None]
    ratio = min(1.0, QUERY_SIDE / max(im.size))
    if ratio < 1.0:
        im = im.resize((max(1, round(im.width * ratio)), max(1, round(im.height * ratio))))
    if boxes:
        draw = ImageDraw.Draw(im)
        s = f * ratio
        for n, (x, y, w, h) in enumerate(boxes, 1):
            draw.rectangle([x * s, y * s, (x + w) * s, (y + h) * s], outline=(255, 60, 60), width=2)
            draw.text((x * s + 3, y * s + 2), str(n), fill=(255, 60, 60))
    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=90)
    return buf.getvalue()


def _assignment_text(r: "QueryResult", clustered: bool) -> str:
    if not clustered:
        return ("**No cluster**: the library is not clustered yet (cluster it on the Index or "
                "Clusters page).")
    if r.cluster is None:
        return "**No cluster**: the photo is not close enough to any cluster."
    return f"Belongs to **cluster {r.cluster}** (confidence {r.confidence:.2f})."


def _name(path: str) -> str:
    """Folder and file name: enough to tell files apart, short enough for a grid cell."""
    folder = os.path.basename(os.path.dirname(path))
    return f"{folder}/{os.path.basename(path)}" if folder else os.path.basename(path)


def _hits(r: "QueryResult") -> None:
    if not r.hits:
        st.info("The model found nothing to search for in this photo (a face model finds no face, "
                "say)." if r.region is None else "Nothing similar was found.")
        return
    for row in range(0, len(r.hits), HITS_PER_ROW):
        cols = st.columns(HITS_PER_ROW)
        for col, (rank, h) in zip(cols, enumerate(r.hits[row:row + HITS_PER_ROW], row + 1)):
            with col:
                st.image(common.thumbnail(h.path, h.box, HIT_THUMB), width=HIT_THUMB)
                where = "unsorted" if h.cluster is None else f"cluster {h.cluster}"
                box = f" · box {tuple(h.box)}" if h.box else ""
                st.markdown(f"**#{rank}** · {common.md_escape(_name(h.path))}  \n"
                            f"similarity {h.similarity:.3f} · {where}{box}")


def page() -> None:
    st.title("Search")
    lib = common.library()
    model = common.current_model(lib)
    if model is None:
        st.info("The library is empty: index a folder on the Index page first, then search it "
                "with a photo.")
        return
    up = st.file_uploader("Query photo", type=UPLOAD_TYPES,
                          help=f"Up to {lib.settings.max_upload_mb} MB. The photo is only compared, "
                               "never added to the library.")
    k = st.slider("Number of results (k)", min_value=1, max_value=50, value=10)
    if up is None:
        st.caption("Upload a photo to find the most similar items in the library.")
        return
    data = up.getvalue()
    try:
        results = lib.search(data, k=k, model=model, name=up.name)
    except PeoplemapError as e:
        common.show_error(e, up.name)
        return
    clustered = lib.clustering(model) is not None

    left, right = st.columns([1, 3])
    with left:
        preview = _query_preview(data, results)
        if preview is not None:
            st.image(preview, caption=common.md_escape(up.name))
    with right:
        if len(results) == 1 and (results[0].region is None or results[0].region.box is None):
            st.markdown(_assignment_text(results[0], clustered))
            st.caption(f"{len(results[0].hits)} most similar items, most similar first.")
        else:
            st.markdown(f"Found **{len(results)}** regions in the photo; each is searched on its own.")
    for n, r in enumerate(results, 1):
        if len(results) > 1 or (r.region is not None and r.region.box is not None):
            box = r.region.box if r.region is not None else None
            st.subheader(f"Region {n}" + (f" · box {tuple(box)}" if box else ""))
            st.markdown(_assignment_text(r, clustered))
        _hits(r)
