"""Pictures in and out: uploaded query photos checked by content, face thumbnails and photos with
their boxes drawn, rendered from the originals with the indexer's own decoder.

A multipart upload is parsed in memory (the Guard has bounded the body), so a query photo is
never written to disk, not even to a temporary file.

An upload is judged by its bytes, never by its name or Content-Type: empty (400), more than the
upload limit (413), not an image we read (415), more pixels than Settings.max_image_pixels,
read from the header before any decoding (413), or corrupt (422). Thumbnails are kept in a small
memory cache keyed by item, box and file mtime; forgetting a person clears it.
"""
from __future__ import annotations

import io
import math
import os
import warnings
from typing import TYPE_CHECKING, Optional, Sequence

from ..config import Settings
from ..errors import ImageError
from ..ingest import decode_image, read_image, sniff_format
from ..bytecache import ByteCache

if TYPE_CHECKING:
    from ..types import Item

THUMB_SIZE = 128
MAX_THUMB_SIZE = 512
PHOTO_SIZE = 1024
MAX_PHOTO_SIZE = 4096
CACHE_BYTES = 32 * 1024 * 1024


class UploadRejected(Exception):
    """An upload that cannot be searched with; `status` is the HTTP answer."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


MAX_PARTS = 16


def image_from_multipart(body: bytes, content_type: str) -> bytes:
    """The bytes of the file field "image" of a multipart/form-data body, parsed in memory."""
    from python_multipart.exceptions import FormParserError
    from python_multipart.multipart import MultipartParser, parse_options_header

    _ctype, params = parse_options_header(content_type)
    boundary = params.get(b"boundary")
    if not boundary:
        raise UploadRejected(400, "the multipart body has no boundary in its Content-Type")
    parts: list[dict] = []
    header = [b"", b""]

    def on_part_begin() -> None:
        if len(parts) >= MAX_PARTS:
            raise UploadRejected(400, f"the multipart body has more than {MAX_PARTS} parts; send "
                                      "one file field \"image\"")
        parts.append({"disposition": b"", "data": []})

    def on_header_field(data: bytes, start: int, end: int) -> None:
        header[0] += data[start:end]

    def on_header_value(data: bytes, start: int, end: int) -> None:
        header[1] += data[start:end]

    def on_header_end() -> None:
        if header[0].strip().lower() == b"content-disposition":
            parts[-1]["disposition"] = header[1]
        header[0], header[1] = b"", b""

    def on_part_data(data: bytes, start: int, end: int) -> None:
        parts[-1]["data"].append(data[start:end])

    parser = MultipartParser(boundary, {
        "on_part_begin": on_part_begin, "on_header_field": on_header_field,
        "on_header_value": on_header_value, "on_header_end": on_header_end,
        "on_part_data": on_part_data})
    try:
        parser.write(body)
        parser.finalize()
    except FormParserError as e:
        raise UploadRejected(400, f"the multipart body is malformed: {e}") from None
    for part in parts:
        _disp, opts = parse_options_header(part["disposition"])
        if opts.get(b"name") == b"image" and b"filename" in opts:
            return b"".join(part["data"])
    raise UploadRejected(400, "send the photo as the multipart file field \"image\" "
                              "(curl -F image=@photo.jpg)")


def check_upload(data: bytes, settings: Settings, limit: int) -> None:
    """Refuse what cannot be a usable query photo before the model sees it (see module doc)."""
    from PIL import Image

    if not data:
        raise UploadRejected(400, "the upload is empty: send a photo (JPEG, PNG, WebP, BMP, GIF, "
                                  "TIFF, PGM/PPM)")
    if len(data) > limit:
        raise UploadRejected(413, f"the upload is {len(data)} bytes; the limit is {limit} bytes "
                                  f"({limit // (1024 * 1024)} MB)")
    if sniff_format(data[:64]) is None:
        try:  # says what the content looks like ("text", "HTML", a video, ...)
            decode_image(data[:4096], settings=settings)
            reason = "not an image"
        except ImageError as e:
            reason = e.reason
        raise UploadRejected(415, f"the upload is {reason}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the limit is ours to apply, just below
            with Image.open(io.BytesIO(data)) as im:  # reads the header only
                w, h = im.size
    except Image.DecompressionBombError as e:
        raise UploadRejected(413, f"the image declares too many pixels ({e}); the limit is "
                                  f"{settings.max_image_pixels}") from None
    except Exception as e:  # noqa: BLE001 - any parser failure is a corrupt upload
        raise UploadRejected(422, f"the upload is a truncated or corrupt image: {e}") from None
    if w * h > settings.max_image_pixels:
        raise UploadRejected(413, f"the image is {w}x{h} = {w * h} pixels; the limit is "
                                  f"{settings.max_image_pixels} pixels")


_thumbs = ByteCache(CACHE_BYTES)


def forget_cached() -> None:
    """Drop every cached thumbnail (after a person is forgotten: their faces must not linger)."""
    _thumbs.clear()


def _header_size(path: str) -> Optional[tuple[int, int]]:
    """(width, height) from the file's header, or None (read_image then says what is wrong)."""
    from PIL import Image

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # size limits are read_image's to apply
            with Image.open(path) as im:  # reads the header only
                return im.size
    except Exception:  # noqa: BLE001 - whatever is wrong with the file, read_image says it
        return None


def _draft(short: Optional[int], need: float) -> Optional[int]:
    """min_side for read_image: decode reduced while the shorter side keeps `need` pixels."""
    if short is None:
        return None
    n = max(1, math.ceil(need))
    return None if n >= short else n


def thumbnail(item: "Item", size: int, settings: Settings) -> bytes:
    """A square JPEG of the item's box (or whole image) at `size` pixels, cut from a reduced
    decode when the photo is large. ImageError / OSError when the original cannot be read."""
    from PIL import Image, ImageOps

    mtime = os.stat(item.path).st_mtime
    key = (item.id, item.path, item.box, size, mtime)
    data = _thumbs.get(key)
    if data is not None:
        return data
    wh = _header_size(item.path)
    short = None if wh is None else min(wh)
    if item.box is not None:
        need = (short or 0) * size / max(1, min(item.box[2], item.box[3]))
    else:
        need = size
    _sha, img = read_image(item.path, settings=settings, min_side=_draft(short, need))
    pix = img.pixels
    if item.box is not None:
        f = img.scale
        x, y, w, h = (int(round(v * f)) for v in item.box)
        pix = pix[max(0, y):max(0, y) + max(1, h), max(0, x):max(0, x) + max(1, w)]
    im = ImageOps.fit(Image.fromarray(pix), (size, size))
    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=85)
    data = buf.getvalue()
    _thumbs.put(key, data)
    return data


def photo(path: str, items: Sequence["Item"], labels: dict[int, str], size: int,
          settings: Settings, highlight: Optional[int] = None) -> bytes:
    """The whole photo as a JPEG, longer side at most `size`, each item's box drawn and labelled
    (`labels`: item id -> text); the `highlight` item's box in another colour."""
    from PIL import Image, ImageDraw

    wh = _header_size(path)
    min_side = None if wh is None else _draft(min(wh), min(wh) * size / max(wh))
    _sha, img = read_image(path, settings=settings, min_side=min_side)
    im = Image.fromarray(img.pixels)
    im.thumbnail((size, size))
    f = im.width / img.width  # original pixels -> output pixels
    draw = ImageDraw.Draw(im)
    line = max(2, round(max(im.size) / 300))
    for it in items:
        if it.box is None:
            continue
        x, y, w, h = (v * f for v in it.box)
        colour = (255, 200, 0) if it.id == highlight else (0, 220, 90)
        draw.rectangle([x, y, x + w, y + h], outline=colour, width=line)
        text = labels.get(it.id)
        if text:
            tw = draw.textlength(text)
            ty = max(0, y - 12)
            draw.rectangle([x, ty, x + tw + 4, ty + 12], fill=colour)
            draw.text((x + 2, ty), text, fill=(0, 0, 0))
    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=88)
    return buf.getvalue()
