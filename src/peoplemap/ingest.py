"""Ingest: walk a folder, read each file once, hash it, decode it to RGB, refuse bad files with a reason.

No model code here. Pillow is the only decoder; the file's content, never its extension, decides
the format. Every problem with a file's data surfaces as `ImageError(reason)`, whose short reason is
what the catalog records for skipped files.
"""
from __future__ import annotations

import errno
import hashlib
import io
import logging
import os
import re
import stat
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
from PIL import Image, UnidentifiedImageError

from .config import Settings, load_settings
from .errors import ImageError, InputError

log = logging.getLogger(__name__)

__all__ = [
    "FileEntry", "Skipped", "DecodedImage",
    "scan", "read_image", "decode_image", "sniff_format", "sha256_bytes",
]

READABLE = "JPEG/PNG/GIF/WebP/BMP/TIFF/PNM"
"""The formats decode_image reads, as written in reasons."""

_HEAD = 32
"""Bytes sniff_format needs to look at."""

_PIL_ID = {"JPEG": "JPEG", "PNG": "PNG", "GIF": "GIF", "WEBP": "WEBP", "BMP": "BMP",
           "TIFF": "TIFF", "PBM": "PPM", "PGM": "PPM", "PPM": "PPM"}
"""sniff_format name -> the one Pillow plugin allowed to open it."""

_TRANSPOSE = {2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180,
              4: Image.Transpose.FLIP_TOP_BOTTOM, 5: Image.Transpose.TRANSPOSE,
              6: Image.Transpose.ROTATE_270, 7: Image.Transpose.TRANSVERSE,
              8: Image.Transpose.ROTATE_90}
"""EXIF orientation -> transpose, the same table as PIL.ImageOps.exif_transpose."""

_SWAPS_AXES = {5, 6, 7, 8}

_LOOKS_LIKE: list[tuple[int, bytes, str]] = [
    (0, b"%PDF", "a PDF document"), (0, b"PK\x03\x04", "a ZIP archive (or Office document)"),
    (0, b"\x1f\x8b", "gzip data"), (0, b"8BPS", "a Photoshop document"),
    (0, b"\x00\x00\x01\x00", "an ICO icon"), (0, b"\x7fELF", "a program"),
    (0, b"RIFF", "a RIFF file (AVI/WAV)"), (0, b"\x1aE\xdf\xa3", "a Matroska/WebM video"),
    (0, b"SQLite format 3\x00", "an SQLite database"),
]
_FTYP_BRANDS = {b"heic": "HEIC", b"heix": "HEIC", b"mif1": "HEIF", b"msf1": "HEIF",
                b"avif": "AVIF", b"avis": "AVIF"}


@dataclass(frozen=True)
class FileEntry:
    """A regular file found by scan: absolute path, size in bytes, modification time."""

    path: str
    size: int
    mtime: float


@dataclass(frozen=True)
class Skipped:
    """Something scan or the indexer left out, and why."""

    path: str
    reason: str


@dataclass
class DecodedImage:
    """Decoded pixels plus the size of the EXIF-oriented original (pixels may be draft-reduced)."""

    pixels: np.ndarray = field(repr=False)
    """(H, W, 3) uint8 RGB, C-contiguous, EXIF orientation applied."""
    width: int
    height: int
    format: str

    @property
    def scale(self) -> float:
        """Decoded width / original width: 1.0 unless a JPEG was draft-decoded at 1/2, 1/4 or 1/8."""
        return self.pixels.shape[1] / self.width


# ----------------------------------------------------------------------------------------- scan
def scan(root: str | Path, *, on_skip: Callable[[Skipped], None] | None = None) -> Iterator[FileEntry]:
    """Yield every regular file under root, depth-first with names sorted within each folder.

    Hidden names (starting with '.') are left out silently. Symlinks are followed; a folder reached
    twice (a symlink loop, or a second link to a folder already walked) is reported through on_skip,
    as are broken symlinks, unreadable folders and special files. The root is checked eagerly.
    """
    top = os.path.abspath(os.fspath(root))
    try:
        st = os.stat(top)
    except FileNotFoundError:
        raise InputError(f"folder not found: {top}") from None
    except OSError as e:
        raise InputError(f"cannot access folder {top}: {e.strerror or e}") from None
    if not stat.S_ISDIR(st.st_mode):
        raise InputError(f"not a folder: {top} (scan needs a folder of images)")
    try:
        entries = _list_dir(top)
    except OSError as e:
        raise InputError(f"cannot read folder {top}: {e.strerror or e}") from None
    return _walk(entries, (st.st_dev, st.st_ino), on_skip)


def _list_dir(path: str) -> list[os.DirEntry[str]]:
    with os.scandir(path) as it:
        return sorted((e for e in it if not e.name.startswith(".")), key=lambda e: e.name)


def _walk(entries: list[os.DirEntry[str]], top_key: tuple[int, int],
          on_skip: Callable[[Skipped], None] | None) -> Iterator[FileEntry]:
    def skip(path: str, reason: str) -> None:
        log.debug("skipped %s: %s", path, reason)
        if on_skip is not None:
            on_skip(Skipped(path, reason))

    visited = {top_key}
    active = [top_key]  # folders on the current path from the root: meeting one again is a loop
    stack = [iter(entries)]
    while stack:
        entry = next(stack[-1], None)
        if entry is None:
            stack.pop()
            active.pop()
            continue
        path = entry.path
        try:
            st = entry.stat(follow_symlinks=True)
        except FileNotFoundError:
            skip(path, "broken symlink" if entry.is_symlink() else "file disappeared")
            continue
        except OSError as e:
            skip(path, _os_reason(e))
            continue
        if stat.S_ISREG(st.st_mode):
            yield FileEntry(path, st.st_size, st.st_mtime)
        elif stat.S_ISDIR(st.st_mode):
            key = (st.st_dev, st.st_ino)
            if key in active:
                skip(path, "symlink loop")
            elif key in visited:
                skip(path, "same folder as one already scanned (reached through a symlink)")
            else:
                visited.add(key)
                try:
                    children = _list_dir(path)
                except OSError as e:
                    skip(path, f"cannot list folder: {_os_reason(e)}")
                    continue
                active.append(key)
                stack.append(iter(children))
        else:
            skip(path, "not a regular file")


def _os_reason(e: OSError) -> str:
    """Short reason for an OS error on one path."""
    if isinstance(e, FileNotFoundError):
        return "file disappeared"
    if isinstance(e, PermissionError):
        return "permission denied"
    if isinstance(e, IsADirectoryError):
        return "not a regular file"
    if e.errno == errno.ELOOP:
        return "symlink loop"
    return f"cannot read: {e.strerror or e}"


# ----------------------------------------------------------------------------------------- read
def sha256_bytes(data: bytes) -> str:
    """Hex sha256 of data: the content id of an image file."""
    return hashlib.sha256(data).hexdigest()


def read_image(path: str | Path, *, min_side: int | None = None,
               settings: Settings | None = None) -> tuple[str, DecodedImage]:
    """Read a file once, hash its bytes and decode the same bytes; ImageError(reason, path) if unusable."""
    s = settings or load_settings()
    p = os.fspath(path)
    try:
        data = _read_file(p, s.max_file_bytes)
        digest = sha256_bytes(data)
        return digest, decode_image(data, min_side=min_side, settings=s)
    except ImageError as e:
        raise ImageError(e.reason, str(p)) from e


def _read_file(path: str, limit: int) -> bytes:
    # O_NONBLOCK: a FIFO swapped in after scan must not hang the open; fstat then rejects it.
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0)
    try:
        fd = os.open(path, flags)
    except PermissionError:
        raise ImageError("not a regular file" if os.path.isdir(path) else "permission denied") from None
    except OSError as e:
        raise ImageError(_os_reason(e)) from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise ImageError("not a regular file")
        if st.st_size > limit:
            raise ImageError(f"file too large: {st.st_size} bytes (limit {limit})")
        if st.st_size == 0:
            raise ImageError("empty file")
        f = os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise
    with f:
        try:
            data = f.read(limit + 1)  # +1: notice a file that grew past the limit since fstat
        except OSError as e:
            raise ImageError(_os_reason(e)) from None
    if len(data) > limit:
        raise ImageError(f"file too large: more than {limit} bytes")
    if not data:
        raise ImageError("empty file")
    return data


# --------------------------------------------------------------------------------------- decode
def sniff_format(head: bytes) -> str | None:
    """Format from magic bytes: JPEG PNG GIF WEBP BMP TIFF PBM PGM PPM, or None if not one we read."""
    if head.startswith(b"\xff\xd8\xff"):
        return "JPEG"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "PNG"
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return "GIF"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "WEBP"
    if head[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"):
        return "TIFF"
    # "BM" alone is too weak (text can start with it): also require a known DIB header size.
    if head[:2] == b"BM" and len(head) >= 18 and int.from_bytes(head[14:18], "little") in (
            12, 16, 40, 52, 56, 64, 108, 124):
        return "BMP"
    if len(head) >= 3 and head[0:1] == b"P" and head[1:2] in b"123456" and head[2:3].isspace():
        return {b"1": "PBM", b"4": "PBM", b"2": "PGM", b"5": "PGM"}.get(head[1:2], "PPM")
    return None


def _not_image_reason(head: bytes) -> str:
    if head[4:8] == b"ftyp":
        brand = _FTYP_BRANDS.get(head[8:12])
        if brand:
            return f"unsupported image format: {brand} (readable: {READABLE})"
        looks = "an MP4/QuickTime video"
    else:
        looks = next((what for at, magic, what in _LOOKS_LIKE if head[at:at + len(magic)] == magic), "")
    if not looks:
        text = head.lstrip(b"\xef\xbb\xbf \t\r\n")[:64].lower()
        if text.startswith((b"<svg", b"<?xml")):
            looks = "SVG/XML text"
        elif text.startswith((b"<!doctype html", b"<html")):
            looks = "HTML"
        elif _is_text(head):
            looks = "text"
    return f"not an image (content is not {READABLE}" + (f"; looks like {looks})" if looks else ")")


def _is_text(head: bytes) -> bool:
    for cut in range(4):  # a multi-byte character may be cut at the end of the sample
        try:
            s = head[:len(head) - cut].decode("utf-8")
        except UnicodeDecodeError:
            continue
        return bool(s) and all(c.isprintable() or c in "\t\r\n\f" for c in s)
    return False


def decode_image(data: bytes, *, min_side: int | None = None,
                 settings: Settings | None = None) -> DecodedImage:
    """Decode image bytes to RGB uint8 with EXIF orientation applied; any problem is ImageError(reason).

    min_side: JPEGs are draft-decoded at 1/2, 1/4 or 1/8 scale while the shorter side stays >= min_side;
    other formats decode at full size. width/height always describe the oriented original.
    """
    if min_side is not None and (not isinstance(min_side, int) or min_side < 1):
        raise InputError(f"min_side must be a positive integer or None, not {min_side!r}")
    s = settings or load_settings()
    if not data:
        raise ImageError("empty file")
    if len(data) > s.max_file_bytes:
        raise ImageError(f"file too large: {len(data)} bytes (limit {s.max_file_bytes})")
    fmt = sniff_format(bytes(data[:_HEAD]))
    if fmt is None:
        raise ImageError(_not_image_reason(bytes(data[:512])))
    try:
        return _decode(data, fmt, min_side, s.max_image_pixels)
    except ImageError:
        raise
    except MemoryError:
        raise ImageError(f"out of memory while decoding {fmt} image") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        m = re.search(r"\((\d+) pixels\)", str(e))
        what = f"{m.group(1)} pixels" if m else str(e)
        raise ImageError(f"image too large: {what} (limit {s.max_image_pixels})") from None
    except UnidentifiedImageError:
        raise ImageError(f"truncated or corrupt image: cannot parse the {fmt} header") from None
    except (OSError, SyntaxError, ValueError, EOFError, IndexError, KeyError, TypeError) as e:
        raise ImageError(f"truncated or corrupt image: {_message(e)}") from None
    except Exception as e:  # a decoder bug must cost one file, not the run
        log.debug("unexpected error decoding %s image", fmt, exc_info=True)
        raise ImageError(f"cannot decode {fmt} image: {type(e).__name__}: {_message(e)}") from None


def _message(e: BaseException) -> str:
    return str(e) or type(e).__name__


def _allow_pixels(limit: int) -> None:
    """Raise Pillow's own bomb limit to ours (never lower it), so Pillow refuses nothing we accept."""
    if Image.MAX_IMAGE_PIXELS is not None and Image.MAX_IMAGE_PIXELS < limit:
        Image.MAX_IMAGE_PIXELS = limit


def _decode(data: bytes, fmt: str, min_side: int | None, limit: int) -> DecodedImage:
    _allow_pixels(limit)
    with warnings.catch_warnings():
        # Pillow warns between its limit and twice that; we refuse those ourselves just below.
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        img = Image.open(io.BytesIO(data), formats=[_PIL_ID[fmt]])  # reads the header only
    with img:
        w, h = img.size
        if w < 1 or h < 1:
            raise ImageError(f"truncated or corrupt image: size {w}x{h}")
        if w * h > limit:
            raise ImageError(f"image too large: {w}x{h} = {w * h} pixels (limit {limit})")
        orientation = _orientation(img)
        if min_side is not None and fmt == "JPEG":
            img.draft("RGB", (min_side, min_side))  # scale s = largest of 8,4,2,1 keeping both sides >= min_side
        img.load()
        if min_side is not None:
            img = _reduce(img, min_side)
        method = _TRANSPOSE.get(orientation) if orientation is not None else None
        out = img.transpose(method) if method is not None else img
        pixels = _to_rgb(out)
    if method is not None and orientation in _SWAPS_AXES:
        w, h = h, w
    return DecodedImage(pixels=pixels, width=w, height=h, format=fmt)


def _reduce(img: Image.Image, min_side: int) -> Image.Image:
    """Shrink by an integer factor (box filter) while the shorter side stays >= min_side.

    JPEGs are already reduced by draft decoding; this bounds the memory of large PNG/TIFF/WebP
    images held between decoding and the model (a 12 MP PNG is 36 MB of pixels).
    """
    factor = min(img.size) // min_side
    if factor < 2 or img.mode not in ("RGB", "RGBA", "L", "LA", "I", "F", "CMYK"):
        return img
    try:
        return img.reduce(factor)
    except (ValueError, OSError):  # a mode reduce() does not handle: keep full size
        return img


def _orientation(img: Image.Image) -> int | None:
    """EXIF orientation 1..8, or None when absent, out of range or unreadable (image stays as stored)."""
    try:
        value = img.getexif().get(0x0112)
    except Exception:  # broken EXIF must not cost the image
        log.debug("unreadable EXIF ignored", exc_info=True)
        return None
    if isinstance(value, (tuple, list)) and len(value) == 1:
        value = value[0]
    if isinstance(value, int) and 1 <= value <= 8:
        return value
    if value is not None:
        log.debug("EXIF orientation %r ignored", value)
    return None


def _to_rgb(img: Image.Image) -> np.ndarray:
    """(H, W, 3) uint8 RGB from any Pillow mode; transparency composited over white."""
    mode = img.mode
    if mode.startswith("I") or mode == "F":
        return _gray_to_rgb(_to_uint8(np.asarray(img), mode))
    if mode in ("RGBA", "RGBa", "LA", "La", "PA") or "transparency" in img.info:
        rgba = np.asarray(img.convert("RGBA"), dtype=np.uint16)
        a = rgba[..., 3:4]
        rgb = (rgba[..., :3] * a + 255 * (255 - a) + 127) // 255
        return np.ascontiguousarray(rgb, dtype=np.uint8)
    if mode == "LAB":  # convert() would copy channels as if they were RGB
        from PIL import ImageCms

        lab, srgb = ImageCms.createProfile("LAB"), ImageCms.createProfile("sRGB")
        img = ImageCms.applyTransform(img, ImageCms.buildTransform(lab, srgb, "LAB", "RGB"))
    elif mode != "RGB":
        try:
            img = img.convert("L").convert("RGB") if mode == "1" else img.convert("RGB")
        except ValueError as e:
            raise ImageError(f"unsupported colour mode {mode}: {e}") from None
    arr = np.array(img, dtype=np.uint8)  # a writable copy
    if arr.ndim != 3 or arr.shape[2] != 3:
        raise ImageError(f"unsupported colour mode {mode}: decoded to shape {arr.shape}")
    return np.ascontiguousarray(arr)


def _to_uint8(a: np.ndarray, mode: str) -> np.ndarray:
    """Scale 16-bit, 32-bit int or float grey to 0..255 by range, never by clipping."""
    a = a.astype(np.float64)
    if mode == "F":
        a = np.nan_to_num(a, nan=0.0, posinf=0.0, neginf=0.0)
        lo, hi = (0.0, 1.0) if a.size and a.min() >= 0 and a.max() <= 1 else (a.min(initial=0), a.max(initial=0))
    elif mode.startswith("I;16") or (a.size and a.min() >= 0 and a.max() <= 65535):
        lo, hi = 0.0, 65535.0  # Pillow widens 16-bit PNG/PGM/TIFF (any maxval) to the 0..65535 range
    else:
        lo, hi = float(a.min()), float(a.max())
    if hi <= lo:
        return np.zeros(a.shape, np.uint8)
    return np.rint((a - lo) * (255.0 / (hi - lo))).clip(0, 255).astype(np.uint8)


def _gray_to_rgb(g: np.ndarray) -> np.ndarray:
    if g.ndim != 2:
        raise ImageError(f"unsupported image layout: shape {g.shape}")
    return np.ascontiguousarray(np.repeat(g[:, :, None], 3, axis=2))
