"""Thumbnails for the app: small JPEG views of images and items, cached in memory and on disk.

Item tiles are built only when a page shows them and are kept in the library's thumbnails/ folder,
so a big library's pages open fast the second time, also after a restart.
"""
from __future__ import annotations

import hashlib
import io
import os
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Optional, Sequence

import streamlit as st

from ..config import load_settings
from ..errors import ImageError
from ..types import Box
from .common import md_escape, short

if TYPE_CHECKING:
    from ..library import Library
    from ..types import Item

THUMB = 96
"""Gallery tile size in pixels."""
TILE_MARGIN = 2
THUMB_DIR = "thumbnails"
"""Folder of the library holding cached item thumbnails (Library.forget_derived deletes it)."""


def _placeholder(size: int) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (size, size), (200, 200, 200)).save(buf, "PNG")
    return buf.getvalue()


def _render(path: str, box: Optional[Box], size: int, square: bool) -> Optional[bytes]:
    """JPEG bytes of the image (or its box) at most size pixels; None when it cannot be read."""
    from PIL import Image, ImageOps

    from ..ingest import read_image

    try:
        # Same decoder as the indexer, so boxes (in EXIF-oriented pixels) land where they were found.
        _sha, img = read_image(path, min_side=None if box else size, settings=load_settings())
    except (ImageError, OSError):
        return None
    pix = img.pixels
    if box is not None:
        f = img.scale
        x, y, w, h = (int(round(v * f)) for v in box)
        pix = pix[max(0, y):max(0, y) + max(1, h), max(0, x):max(0, x) + max(1, w)]
    im = Image.fromarray(pix)
    if square:  # gallery tiles: centre-cropped squares with a thin white margin, so rows line up
        inner = max(1, size - 2 * TILE_MARGIN)
        im = ImageOps.expand(ImageOps.fit(im, (inner, inner)), TILE_MARGIN, fill=(255, 255, 255))
    else:
        im.thumbnail((size, size))
    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=85)
    return buf.getvalue()


@st.cache_data(max_entries=20_000, show_spinner=False)
def _thumbnail(path: str, box: Optional[Box], size: int, square: bool, mtime: float) -> bytes:
    return _render(path, box, size, square) or _placeholder(size)


def thumbnail(path: str, box: Optional[Box] = None, size: int = THUMB, square: bool = False) -> bytes:
    """JPEG bytes of a small view of an image (or of its box); grey when the file cannot be read.
    Cached by (path, box, size, square) and the file's mtime, so an edited file gets a new one."""
    try:
        mtime = os.stat(path).st_mtime
    except OSError:
        return _placeholder(size)
    return _thumbnail(path, None if box is None else tuple(int(v) for v in box), size, square, mtime)


@st.cache_data(max_entries=20_000, show_spinner=False)
def _item_thumbnail(folder: str, item_id: int, path: str, box: Optional[Box], size: int,
                    mtime: float) -> bytes:
    # The name carries a digest of (path, box, mtime): an item id SQLite reuses, or an edited
    # file, never gets an old picture.
    tag = hashlib.sha1(repr((path, box, mtime)).encode()).hexdigest()[:10]
    f = Path(folder) / f"{item_id}-{size}-{tag}.jpg"
    try:
        return f.read_bytes()
    except OSError:
        pass
    data = _render(path, box, size, square=True)
    if data is None:
        return _placeholder(size)  # not written: the file may come back
    try:
        f.parent.mkdir(parents=True, exist_ok=True)
        tmp = f.with_name(f".{f.name}.{os.getpid()}-{threading.get_ident()}.tmp")
        tmp.write_bytes(data)
        os.replace(tmp, f)  # atomic: another session never reads half a file
    except OSError:
        pass  # a read-only library still shows thumbnails, from memory
    return data


def item_thumbnail(lib: "Library", item: "Item", size: int = THUMB) -> bytes:
    """Square JPEG tile of an item (its box cropped from the original), built once: cached in memory
    and in the library's thumbnails/ folder as ITEM-SIZE-DIGEST.jpg."""
    try:
        mtime = os.stat(item.path).st_mtime
    except OSError:
        return _placeholder(size)
    box = None if item.box is None else tuple(int(v) for v in item.box)
    return _item_thumbnail(str(lib.path / THUMB_DIR), item.id, item.path, box, size, mtime)


def forget_thumbnails(lib: "Library", item_ids: Sequence[int]) -> None:
    """Delete the cached thumbnails of these items, on disk and (all of them) in memory."""
    gone = {str(int(i)) for i in item_ids}
    folder = lib.path / THUMB_DIR
    try:
        names = os.listdir(folder)
    except OSError:
        names = []
    for name in names:
        if name.split("-", 1)[0].lstrip(".") in gone:
            (folder / name).unlink(missing_ok=True)
    _item_thumbnail.clear()
    _thumbnail.clear()


def gallery(lib: "Library", items: Sequence["Item"], size: int = THUMB, captions: bool = True) -> None:
    """Thumbnails of items in rows, captioned with the file name."""
    if not items:
        return
    images = [item_thumbnail(lib, it, size) for it in items]
    caps = [md_escape(short(os.path.basename(it.path))) for it in items] if captions else None
    st.image(images, caption=caps, width=size)
