"""Thumbnails for the app: small JPEG views of images and items, cached in memory and on disk.

Item tiles are built only when a page shows them and are kept in the library's thumbnails/ folder,
so a big library's pages open fast the second time, also after a restart. The memory cache is a
plain LRU rather than st.cache_data: a page shows hundreds of tiles, and st.cache_data spends
about a millisecond hashing the arguments of every call.
"""
from __future__ import annotations

import base64
import hashlib
import io
import math
import os
import threading
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Optional, Sequence

import streamlit as st

from ..config import load_settings
from ..errors import ImageError
from ..types import Box
from .common import md_escape, short
from ..bytecache import ByteCache

if TYPE_CHECKING:
    from ..library import Library
    from ..types import Item

THUMB = 96
"""Gallery tile size in pixels."""
TILE_MARGIN = 2
THUMB_DIR = "thumbnails"
"""Folder of the library holding cached item thumbnails (Library.forget_derived deletes it)."""
MEMORY_BYTES = 64 * 2 ** 20
"""Thumbnails kept in memory (about 20,000 tiles of 96 pixels); the rest are read from disk."""


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
        min_side = size if box is None else _min_side_for_box(path, box, size)
        _sha, img = read_image(path, min_side=min_side, settings=load_settings())
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


def _min_side_for_box(path: str, box: Box, size: int) -> Optional[int]:
    """The smallest shorter image side at which the box still spans `size` pixels: a face in a
    12 MP photo is then cut from a 1/2..1/8-scale draft decode instead of the full image."""
    from PIL import Image

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # size limits are read_image's to enforce
            with Image.open(path) as im:  # reads the header only
                short_side = min(im.size)
    except Exception:  # whatever is wrong with the file, read_image says it
        return None
    need = math.ceil(short_side * size / max(1, min(box[2], box[3])))
    return None if need >= short_side else need


_memory = ByteCache(MEMORY_BYTES)


def thumbnail(path: str, box: Optional[Box] = None, size: int = THUMB, square: bool = False) -> bytes:
    """JPEG bytes of a small view of an image (or of its box); grey when the file cannot be read.
    Cached in memory by (path, box, size, square) and the file's mtime, so an edited file gets a
    new one."""
    try:
        mtime = os.stat(path).st_mtime
    except OSError:
        return _placeholder(size)
    box = None if box is None else tuple(int(v) for v in box)
    key = ("view", path, box, size, square, mtime)
    data = _memory.get(key)
    if data is None:
        data = _render(path, box, size, square)
        if data is None:
            return _placeholder(size)  # not kept: the file may come back
        _memory.put(key, data)
    return data


def _tile_file(folder: Path, item: "Item", size: int, mtime: float) -> Path:
    # The name carries a digest of (path, box, mtime): an item id SQLite reuses, or an edited
    # file, never gets an old picture.
    box = None if item.box is None else tuple(int(v) for v in item.box)
    tag = hashlib.sha1(repr((item.path, box, mtime)).encode()).hexdigest()[:10]
    return folder / f"{item.id}-{size}-{tag}.jpg"


def _build_tile(item: "Item", size: int, f: Path) -> Optional[bytes]:
    """Render an item's tile and keep it on disk; None when the image cannot be read."""
    data = _render(item.path, item.box, size, square=True)
    if data is None:
        return None
    try:
        f.parent.mkdir(parents=True, exist_ok=True)
        tmp = f.with_name(f".{f.name}.{os.getpid()}-{threading.get_ident()}.tmp")
        tmp.write_bytes(data)
        os.replace(tmp, f)  # atomic: another session never reads half a file
    except OSError:
        pass  # a read-only library still shows thumbnails, from memory
    return data


def item_thumbnails(lib: "Library", items: Sequence["Item"], size: int = THUMB) -> list[bytes]:
    """Square JPEG tiles of items (each box cropped from its original), built once: kept in memory
    and in the library's thumbnails/ folder as ITEM-SIZE-DIGEST.jpg. The missing ones are rendered
    in parallel (decoding releases the GIL): a page of new tiles costs a decode per core, not per
    tile."""
    folder = lib.path / THUMB_DIR
    out: list[Optional[bytes]] = [None] * len(items)
    todo: list[tuple[int, tuple, Path]] = []
    for n, it in enumerate(items):
        try:
            mtime = os.stat(it.path).st_mtime
        except OSError:
            out[n] = _placeholder(size)
            continue
        f = _tile_file(folder, it, size, mtime)
        key = ("tile", str(f))
        data = _memory.get(key)
        if data is None:
            try:
                data = f.read_bytes()
            except OSError:
                data = b""
            if not data:
                todo.append((n, key, f))
                continue
            _memory.put(key, data)
        out[n] = data
    if todo:
        workers = min(len(todo), os.cpu_count() or 1)
        if workers > 1:
            with ThreadPoolExecutor(workers, thread_name_prefix="peoplemap-thumbs") as pool:
                built = list(pool.map(lambda t: _build_tile(items[t[0]], size, t[2]), todo))
        else:
            built = [_build_tile(items[n], size, f) for n, _key, f in todo]
        for (n, key, _f), data in zip(todo, built):
            if data is None:
                out[n] = _placeholder(size)  # not kept: the file may come back
            else:
                _memory.put(key, data)
                out[n] = data
    return [d if d is not None else _placeholder(size) for d in out]


def data_uri(image: bytes) -> str:
    """A JPEG or PNG as a data: URI for st.image. The page then carries the pixels itself: no
    Pillow re-opening of every image by st.image and no HTTP request per tile, which is what
    slowed down pages of hundreds of tiles."""
    kind = "jpeg" if image[:2] == b"\xff\xd8" else "png"
    return f"data:image/{kind};base64," + base64.b64encode(image).decode("ascii")


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
    _memory.clear()


def gallery(lib: "Library", items: Sequence["Item"], size: int = THUMB, captions: bool = True) -> None:
    """Thumbnails of items in rows, captioned with the file name."""
    if not items:
        return
    images = [data_uri(d) for d in item_thumbnails(lib, items, size)]
    caps = [md_escape(short(os.path.basename(it.path))) for it in items] if captions else None
    st.image(images, caption=caps, width=size)


BOX_COLOUR = (0, 220, 90)
PICKED_COLOUR = (255, 200, 0)


def photo_with_boxes(path: str, boxes: Sequence[tuple[Box, str, bool]], width: int
                     ) -> Optional[tuple[bytes, int, int]]:
    """The whole photo as a JPEG at most `width` pixels wide, each (box, label, picked) drawn with
    its label above it (the picked one in another colour), and the original's width and height
    (the pixels boxes are measured in); None when the file cannot be read. Cached like tiles."""
    try:
        mtime = os.stat(path).st_mtime
    except OSError:
        return None
    norm = tuple((tuple(int(v) for v in b), label, bool(picked)) for b, label, picked in boxes)
    key = ("photo", path, norm, width, mtime)
    cached = _memory.get(key)
    size = _photo_sizes.get((path, mtime))
    if cached is not None and size is not None:
        return cached, size[0], size[1]
    drawn = _draw_photo(path, norm, width)
    if drawn is None:
        return None
    data, w, h = drawn
    _memory.put(key, data)
    if len(_photo_sizes) > 10_000:
        _photo_sizes.clear()
    _photo_sizes[(path, mtime)] = (w, h)
    return data, w, h


_photo_sizes: dict[tuple[str, float], tuple[int, int]] = {}
"""(path, mtime) -> the original's (width, height), for photos drawn from the memory cache."""


def _draw_photo(path: str, boxes, width: int) -> Optional[tuple[bytes, int, int]]:
    from PIL import Image, ImageDraw, ImageFont

    from ..ingest import read_image

    try:
        _sha, img = read_image(path, min_side=None, settings=load_settings())
    except (ImageError, OSError):
        return None
    im = Image.fromarray(img.pixels)
    ratio = min(4.0, width / max(1, im.width))  # small photos are drawn larger, boxes with them
    if abs(ratio - 1.0) > 0.01:
        im = im.resize((max(1, round(im.width * ratio)), max(1, round(im.height * ratio))))
    s = img.scale * ratio  # original pixels -> drawn pixels
    draw = ImageDraw.Draw(im)
    font = ImageFont.load_default(size=max(11, min(22, round(im.width / 40))))
    line = max(2, round(im.width / 300))
    for (x, y, w, h), label, picked in sorted(boxes, key=lambda b: b[2]):  # picked on top
        colour = PICKED_COLOUR if picked else BOX_COLOUR
        x0, y0, x1, y1 = x * s, y * s, (x + w) * s, (y + h) * s
        draw.rectangle([x0, y0, x1, y1], outline=colour, width=line + 1 if picked else line)
        if label:
            left, top, right, bottom = font.getbbox(label)
            tw, th = right - left + 6, bottom - top + 6
            ty = y0 - th if y0 >= th else y0  # a tag above the box, or inside it at the top
            draw.rectangle([x0, ty, x0 + tw, ty + th], fill=colour)
            draw.text((x0 + 3 - left, ty + 3 - top), label, fill=(0, 0, 0), font=font)
    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=88)
    return buf.getvalue(), img.width, img.height
