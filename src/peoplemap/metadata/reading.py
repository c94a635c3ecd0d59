"""Reading a photo's metadata: date, orientation, place, and face regions (embedded and sidecars).

exiv2 (through pyexiv2) reads the EXIF and XMP; a sidecar is checked before it is handed to it:
a regular file, at most `Settings.max_sidecar_bytes`, UTF-8 XML without a DTD (no entity tricks),
well-formed. A sidecar that fails is refused with a reason, which the index run records as a
skipped file; the photo is indexed all the same. Nothing here ever costs a photo: metadata that
cannot be read is metadata the photo does not have.
"""
from __future__ import annotations

import logging
import os
import re
import stat
import threading
from datetime import datetime
from fractions import Fraction
from typing import Any, Optional

from ..config import Settings
from ..store.records import PhotoMeta
from .regions import FaceRegion, merge_sources, regions_of

log = logging.getLogger(__name__)

EXIV2_LOCK = threading.Lock()
"""exiv2's XMP toolkit keeps global state: one call at a time in a process."""
_READY = False

SIDECAR_SUFFIXES = (".xmp", ".XMP")


class SidecarRefused(Exception):
    """A sidecar that is not used; str() is the reason recorded for it."""


def exiv2() -> Any:
    """pyexiv2, imported on first use, exiv2's own messages off (problems are reported as reasons)."""
    global _READY
    import pyexiv2

    if not _READY:
        pyexiv2.set_log_level(4)
        _READY = True
    return pyexiv2


# -- sidecars -----------------------------------------------------------------------------------------
def sidecar_paths(photo: str) -> list[str]:
    """Where sidecars of `photo` may be: photo.jpg.xmp (digiKam, darktable) and photo.xmp
    (Lightroom), either case of the suffix."""
    stem = os.path.splitext(photo)[0]
    return [photo + s for s in SIDECAR_SUFFIXES] + [stem + s for s in SIDECAR_SUFFIXES]


def is_sidecar(path: str) -> bool:
    """True for a file named like an XMP sidecar (not an image to index)."""
    return path.endswith(SIDECAR_SUFFIXES)


def read_sidecar(path: str, max_bytes: int) -> dict[str, Any]:
    """The flat XMP of a sidecar (exiv2's keys); SidecarRefused(reason) when it is not one we use."""
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0)
    try:
        fd = os.open(path, flags)
    except OSError as e:
        raise SidecarRefused(f"XMP sidecar cannot be read: {e.strerror or e}") from None
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(f.fileno())
        if not stat.S_ISREG(st.st_mode):
            raise SidecarRefused("XMP sidecar is not a regular file")
        if st.st_size > max_bytes:
            raise SidecarRefused(f"XMP sidecar too large: {st.st_size} bytes (limit {max_bytes})")
        data = f.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise SidecarRefused(f"XMP sidecar too large: more than {max_bytes} bytes")
    return parse_packet(data, "XMP sidecar")


_XML_START = re.compile(rb"\s*(<\?xpacket|<\?xml|<x:x[ma]pmeta|<rdf:RDF)")


def parse_packet(data: bytes, what: str = "XMP packet") -> dict[str, Any]:
    """The flat XMP of a packet, checked first: UTF-8, XML, no DTD, well-formed."""
    if not data.strip():
        raise SidecarRefused(f"{what} is empty")
    body = data[3:] if data.startswith(b"\xef\xbb\xbf") else data
    if not _XML_START.match(body):
        raise SidecarRefused(f"{what} is not XML")
    try:
        body.decode("utf-8")
    except UnicodeDecodeError as e:
        raise SidecarRefused(f"{what} is not UTF-8 text (byte {e.start})") from None
    if re.search(rb"<!(DOCTYPE|ENTITY)", body):
        raise SidecarRefused(f"{what} declares a DTD or entities (refused: XMP has none)")
    _well_formed(body, what)
    pyexiv2 = exiv2()
    with EXIV2_LOCK:
        try:
            img = pyexiv2.ImageData(data)
            try:
                return img.read_xmp()
            finally:
                img.close()
        except RuntimeError as e:
            raise SidecarRefused(f"{what} is not valid XMP: {e}") from None


def _well_formed(body: bytes, what: str) -> None:
    """exiv2 returns nothing for XML that does not parse; check it first to say why."""
    from xml.parsers import expat

    parser = expat.ParserCreate()
    try:
        parser.Parse(body, True)
    except expat.ExpatError as e:
        raise SidecarRefused(f"{what} is malformed XML (line {e.lineno}: "
                             f"{expat.ErrorString(e.code)})") from None


# -- the photo ---------------------------------------------------------------------------------------
def _exif_date(value: object) -> Optional[str]:
    """"YYYY-MM-DD HH:MM:SS" from an EXIF date ("2021:05:03 14:22:10") or an XMP one (ISO 8601)."""
    if not isinstance(value, str) or not value.strip():
        return None
    text = value.strip().rstrip("\x00")
    for fmt in ("%Y:%m:%d %H:%M:%S", "%Y:%m:%d %H:%M"):
        try:
            return datetime.strptime(text[:19], fmt).strftime("%Y-%m-%d %H:%M:%S")
        except ValueError:
            pass
    try:
        return datetime.fromisoformat(text).strftime("%Y-%m-%d %H:%M:%S")
    except ValueError:
        return None


def _iso_offset(value: object) -> Optional[str]:
    """"+02:00" from an ISO date with an offset."""
    if not isinstance(value, str):
        return None
    try:
        d = datetime.fromisoformat(value.strip())
    except ValueError:
        return None
    if d.utcoffset() is None:
        return None
    return _offset(d.strftime("%z"))


_OFFSET = re.compile(r"([+-])(\d{2}):?(\d{2})$")


def _offset(value: object) -> Optional[str]:
    if not isinstance(value, str):
        return None
    m = _OFFSET.match(value.strip())
    if not m or int(m.group(2)) > 14 or int(m.group(3)) > 59:
        return None
    return f"{m.group(1)}{m.group(2)}:{m.group(3)}"


def _rational(text: str) -> Optional[float]:
    try:
        return float(Fraction(text.strip()))
    except (ValueError, ZeroDivisionError):
        return None


def _degrees(value: object, ref: object, negative: str) -> Optional[float]:
    """Decimal degrees from EXIF's "52/1 31/1 1234/100" and its reference (N/S, E/W)."""
    if not isinstance(value, str):
        return None
    parts = [_rational(p) for p in value.split()]
    if not parts or len(parts) > 3 or any(p is None for p in parts):
        return None
    deg = sum(p / 60 ** k for k, p in enumerate(parts))  # type: ignore[operator]
    if isinstance(ref, str) and ref.strip().upper().startswith(negative):
        deg = -deg
    return round(deg, 7)


def _exif_meta(exif: dict[str, Any], xmp: dict[str, Any]) -> PhotoMeta:
    meta = PhotoMeta()
    for date_key, offset_key in (("Exif.Photo.DateTimeOriginal", "Exif.Photo.OffsetTimeOriginal"),
                                 ("Exif.Photo.DateTimeDigitized", "Exif.Photo.OffsetTimeDigitized")):
        taken = _exif_date(exif.get(date_key))
        if taken:
            meta.taken, meta.utc_offset = taken, _offset(exif.get(offset_key))
            break
    if meta.taken is None:
        for key in ("Xmp.exif.DateTimeOriginal", "Xmp.photoshop.DateCreated"):
            taken = _exif_date(xmp.get(key))
            if taken:
                meta.taken, meta.utc_offset = taken, _iso_offset(xmp.get(key))
                break
    try:
        o = int(str(exif.get("Exif.Image.Orientation", "")).strip())
        meta.orientation = o if 1 <= o <= 8 else None
    except ValueError:
        pass
    lat = _degrees(exif.get("Exif.GPSInfo.GPSLatitude"), exif.get("Exif.GPSInfo.GPSLatitudeRef"), "S")
    lon = _degrees(exif.get("Exif.GPSInfo.GPSLongitude"), exif.get("Exif.GPSInfo.GPSLongitudeRef"), "W")
    if lat is not None and lon is not None and abs(lat) <= 90 and abs(lon) <= 180:
        meta.latitude, meta.longitude = lat, lon
        alt = exif.get("Exif.GPSInfo.GPSAltitude")
        if isinstance(alt, str) and _rational(alt) is not None:
            meta.altitude = _rational(alt)
            if str(exif.get("Exif.GPSInfo.GPSAltitudeRef", "0")).strip() == "1":
                meta.altitude = -meta.altitude  # type: ignore[operator]
    return meta


def _embedded(path: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """(EXIF, XMP) of the file, flat; empty where exiv2 cannot read it."""
    pyexiv2 = exiv2()
    with EXIV2_LOCK:
        try:
            img = pyexiv2.Image(path)
        except RuntimeError as e:
            log.debug("no metadata read from %s: %s", path, e)
            return {}, {}
        try:
            out = []
            for read in (img.read_exif, img.read_xmp):
                try:
                    out.append(read())
                except (RuntimeError, UnicodeDecodeError, ValueError) as e:
                    log.debug("metadata of %s partly unreadable: %s", path, e)
                    out.append({})
            return out[0], out[1]
        finally:
            img.close()


def read_photo(path: str, width: int, height: int, settings: Settings, *,
               regions: bool = True) -> tuple[PhotoMeta, list[FaceRegion]]:
    """What the metadata of the photo at `path` (width x height once oriented) says: date,
    orientation, place, and (regions=True) its face regions, from its sidecars and its own XMP."""
    try:
        st = os.stat(path)
        exif, xmp = _embedded(path) if stat.S_ISREG(st.st_mode) else ({}, {})
    except OSError:
        exif, xmp = {}, {}
    meta = _exif_meta(exif, xmp)
    found: list[list[FaceRegion]] = []
    if regions:
        for side in sidecar_paths(path):
            if not os.path.lexists(side):
                continue
            meta.sidecars.append(side)
            try:
                mtime = os.stat(side).st_mtime
                meta.sidecar_mtime = max(meta.sidecar_mtime or mtime, mtime)
            except OSError:
                pass
            try:
                packet = read_sidecar(side, settings.max_sidecar_bytes)
            except SidecarRefused as e:
                log.info("sidecar %s not used: %s", side, e)
                meta.sidecar_problems.append((side, str(e)))
                continue
            found.append(regions_of(packet, width, height, meta.orientation, side))
        found.append(regions_of(xmp, width, height, meta.orientation, "embedded"))
    return meta, merge_sources(found)
