"""Giving names back: MWG (and Microsoft) face regions for the named people, in sidecars or, when
the user asks for it, in the photos themselves.

A sidecar is merged, never replaced: its other tags stay, a region of the same name gets the new
area, other regions stay. A sidecar that cannot be read safely is left alone (reported). Writing
into an original happens only with into_originals=True; the photo's metadata as it was (its XMP
packet, EXIF and IPTC) is first saved as JSON in `backup_dir`, and the photo is written through a
copy that replaces it in one rename, so an interrupted write never leaves half a photo.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from ..errors import InputError
from .reading import EXIV2_LOCK, SidecarRefused, exiv2, parse_packet, sidecar_paths
from .regions import NamedBox, merged_regions, region_keys

EMPTY_PACKET = (b'<?xpacket begin="\xef\xbb\xbf" id="W5M0MpCehiHzreSzNTczkc9d"?>'
                b'<x:xmpmeta xmlns:x="adobe:ns:meta/"></x:xmpmeta><?xpacket end="w"?>')
"""The packet a new sidecar starts from (exiv2 fills and serialises it)."""


@dataclass
class PhotoFaces:
    """A photo and the named faces to write into its metadata (boxes in the oriented pixels)."""

    path: str
    width: int
    height: int
    faces: list[NamedBox]


@dataclass
class XmpChange:
    """What writing one photo's regions does (or would do): action "create", "update",
    "unchanged" or "refused" (reason says why), the file written, and the names added / moved."""

    photo: str
    target: str
    action: str
    added: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    reason: Optional[str] = None

    def to_json(self) -> dict:
        return {"photo": self.photo, "target": self.target, "action": self.action,
                "added": self.added, "updated": self.updated, "reason": self.reason}


def sidecar_for(photo: str) -> str:
    """The sidecar to write for `photo`: the one it has (photo.jpg.xmp first, then photo.xmp),
    else photo.jpg.xmp (one sidecar per file even when photo.jpg and photo.png sit side by side)."""
    for p in sidecar_paths(photo):
        if os.path.lexists(p):
            return p
    return photo + ".xmp"


def _same(xmp: dict[str, Any], values: dict[str, Any]) -> bool:
    """True when the packet's regions are exactly `values` already."""
    return set(region_keys(xmp)) == set(values) and all(str(xmp[k]) == str(v) for k, v in values.items())


def _rewrite(img: Any, xmp: dict[str, Any], values: dict[str, Any]) -> None:
    """Replace the packet's region structures with `values` (exiv2 keeps every other tag)."""
    old = region_keys(xmp)
    if old:
        img.modify_xmp({k: None for k in reversed(old)})
    img.modify_xmp(values)


def write_sidecar(photo: PhotoFaces, *, dry_run: bool, max_bytes: int) -> XmpChange:
    """Merge the photo's named faces into its sidecar (made when missing)."""
    target = sidecar_for(photo.path)
    exists = os.path.lexists(target)
    if exists and (os.path.islink(target) or not os.path.isfile(target)):
        return XmpChange(photo.path, target, "refused", reason="the sidecar is not a regular file")
    try:
        data = Path(target).read_bytes() if exists else EMPTY_PACKET
        if len(data) > max_bytes:
            raise SidecarRefused(f"XMP sidecar too large: {len(data)} bytes (limit {max_bytes})")
        xmp = parse_packet(data, "XMP sidecar")
    except (SidecarRefused, OSError) as e:
        return XmpChange(photo.path, target, "refused", reason=str(e))
    values, added, updated = merged_regions(xmp, photo.faces, photo.width, photo.height)
    if _same(xmp, values):
        return XmpChange(photo.path, target, "unchanged")
    change = XmpChange(photo.path, target, "update" if exists else "create", added, updated)
    if dry_run:
        return change
    pyexiv2 = exiv2()
    try:
        with EXIV2_LOCK:
            img = pyexiv2.ImageData(data)
            try:
                _rewrite(img, xmp, values)
                out = img.get_bytes()
            finally:
                img.close()
        _replace(target, out, None if not exists else os.stat(target).st_mode)
    except (RuntimeError, OSError) as e:  # a read-only folder, a full disk: this photo only
        return XmpChange(photo.path, target, "refused", reason=f"cannot write the sidecar: {e}")
    return change


def _replace(target: str, data: bytes, mode: Optional[int]) -> None:
    """Write `data` to target through a temporary file in the same folder and one rename."""
    folder = os.path.dirname(target) or "."
    fd, tmp = tempfile.mkstemp(prefix=".peoplemap-", suffix=".xmp.tmp", dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, mode & 0o7777 if mode is not None else 0o644)
        os.replace(tmp, target)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def write_original(photo: PhotoFaces, *, dry_run: bool, backup_dir: Path) -> XmpChange:
    """Merge the named faces into the photo's own XMP, after saving its metadata in backup_dir."""
    pyexiv2 = exiv2()
    if not os.path.isfile(photo.path) or os.path.islink(photo.path):
        return XmpChange(photo.path, photo.path, "refused", reason="not a regular file")
    with EXIV2_LOCK:
        try:
            img = pyexiv2.Image(photo.path)
        except RuntimeError as e:
            return XmpChange(photo.path, photo.path, "refused", reason=f"exiv2 cannot write it: {e}")
        try:
            xmp, raw = img.read_xmp(), img.read_raw_xmp()
            exif, iptc = img.read_exif(), img.read_iptc()
        except (RuntimeError, UnicodeDecodeError, ValueError) as e:
            return XmpChange(photo.path, photo.path, "refused", reason=f"its metadata is unreadable: {e}")
        finally:
            img.close()
    values, added, updated = merged_regions(xmp, photo.faces, photo.width, photo.height)
    if _same(xmp, values):
        return XmpChange(photo.path, photo.path, "unchanged")
    change = XmpChange(photo.path, photo.path, "update", added, updated)
    if dry_run:
        return change
    try:
        _backup_and_write(photo, xmp, values, raw, exif, iptc, backup_dir)
    except (RuntimeError, OSError) as e:  # the photo is as it was (written through a copy)
        return XmpChange(photo.path, photo.path, "refused", reason=f"cannot write the photo: {e}")
    return change


def _backup_and_write(photo: PhotoFaces, xmp: dict[str, Any], values: dict[str, Any], raw: str,
                      exif: dict[str, Any], iptc: dict[str, Any], backup_dir: Path) -> None:
    """Save the photo's metadata as it is, then write `values` into it through a copy."""
    pyexiv2 = exiv2()
    backup_dir.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    tag = hashlib.sha256(photo.path.encode("utf-8", "surrogateescape")).hexdigest()[:10]
    backup = backup_dir / f"{Path(photo.path).name}.{tag}.{stamp}.json"
    backup.write_text(json.dumps({"photo": photo.path, "saved_at": time.time(), "xmp_packet": raw,
                                  "exif": exif, "iptc": iptc}, ensure_ascii=False, default=str),
                      encoding="utf-8")
    folder = os.path.dirname(photo.path) or "."
    fd, tmp = tempfile.mkstemp(prefix=".peoplemap-", suffix=Path(photo.path).suffix, dir=folder)
    os.close(fd)
    try:
        shutil.copy2(photo.path, tmp)
        with EXIV2_LOCK:
            img = pyexiv2.Image(tmp)
            try:
                _rewrite(img, xmp, values)
            finally:
                img.close()
        os.replace(tmp, photo.path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def write_regions(photos: list[PhotoFaces], *, dry_run: bool = False, into_originals: bool = False,
                  backup_dir: Optional[Path] = None, max_bytes: int = 4 * 1024 * 1024
                  ) -> list[XmpChange]:
    """Write (or, dry_run, only say) the named faces of each photo: into its sidecar, or with
    into_originals=True into the photo itself (backup_dir required)."""
    if into_originals and backup_dir is None:
        raise InputError("writing into the photos needs a folder for the backups of their metadata")
    out = []
    for p in photos:
        if into_originals:
            out.append(write_original(p, dry_run=dry_run, backup_dir=backup_dir))  # type: ignore[arg-type]
        else:
            out.append(write_sidecar(p, dry_run=dry_run, max_bytes=max_bytes))
    return out
