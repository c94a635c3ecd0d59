"""Face regions as the photo world writes them, and our boxes.

Two forms, both in XMP, read from and written to the flat key/value view that exiv2 (pyexiv2) gives
of a packet (`Xmp.mwg-rs.Regions/mwg-rs:RegionList[1]/mwg-rs:Name` -> "Ada"); exiv2 parses and
serialises the packets, this module only maps regions:
- MWG (Metadata Working Group, `mwg-rs:Regions`; digiKam, Lightroom, Picasa, Apple Photos exports):
  `stArea:x/y` is the region's centre and `stArea:w/h` its size, normalised to the image as shown
  (EXIF orientation applied), with `mwg-rs:AppliedToDimensions` giving the size of the image the
  regions were drawn on.
- Microsoft (`MP:RegionInfo`; Windows Photo Gallery): `MPReg:Rectangle` is "x, y, w, h", top-left
  and size, normalised to the image as shown.

Boxes here are peoplemap's: (x, y, w, h) in pixels of the EXIF-oriented image.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Optional

from ..types import Box

MWG = "Xmp.mwg-rs.Regions"
MWG_LIST = f"{MWG}/mwg-rs:RegionList"
MWG_DIMS = f"{MWG}/mwg-rs:AppliedToDimensions"
MP = "Xmp.MP.RegionInfo"
MP_LIST = f"{MP}/MPRI:Regions"
STRUCT, BAG = 'type="Struct"', 'type="Bag"'
"""The values by which exiv2 declares a struct or an unordered array in the flat view."""

_MWG_ITEM = re.compile(re.escape(MWG_LIST) + r"\[(\d+)\](?:/(.*))?$")
_MP_ITEM = re.compile(re.escape(MP_LIST) + r"\[(\d+)\](?:/(.*))?$")

_SWAPS_AXES = {5, 6, 7, 8}


@dataclass(frozen=True)
class FaceRegion:
    """A face region found in a photo's metadata: box in the oriented image's pixels, the name
    (None for an unnamed face), the form ("mwg" or "mp") and where it was read ("embedded" or the
    sidecar's path)."""

    box: Box
    name: Optional[str]
    form: str
    origin: str


# -- normalised rectangles <-> boxes --------------------------------------------------------------
def _num(value: object) -> Optional[float]:
    try:
        v = float(str(value).strip())
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def stored_to_oriented(rect: tuple[float, float, float, float], orientation: Optional[int]
                       ) -> tuple[float, float, float, float]:
    """A normalised top-left rectangle on the image as stored, on the image as shown (EXIF
    orientation 1-8 applied, the same transposes ingest applies to the pixels)."""
    x, y, w, h = rect
    corners = [(x, y), (x + w, y + h)]

    def move(u: float, v: float) -> tuple[float, float]:
        return {1: (u, v), 2: (1 - u, v), 3: (1 - u, 1 - v), 4: (u, 1 - v), 5: (v, u),
                6: (1 - v, u), 7: (1 - v, 1 - u), 8: (v, 1 - u)}.get(orientation or 1, (u, v))

    (ax, ay), (bx, by) = (move(*c) for c in corners)
    return min(ax, bx), min(ay, by), abs(bx - ax), abs(by - ay)


def to_box(rect: tuple[float, float, float, float], width: int, height: int) -> Optional[Box]:
    """A normalised top-left rectangle as pixels of a width x height image, clipped to it; None
    when nothing of it is inside or it is under 2 pixels."""
    x, y, w, h = rect
    x0, y0 = max(0, round(x * width)), max(0, round(y * height))
    x1, y1 = min(width, round((x + w) * width)), min(height, round((y + h) * height))
    if x1 - x0 < 2 or y1 - y0 < 2:
        return None
    return (int(x0), int(y0), int(x1 - x0), int(y1 - y0))


def _fmt(v: float) -> str:
    return f"{v:.6f}".rstrip("0").rstrip(".") or "0"


# -- reading ----------------------------------------------------------------------------------------
def _items(xmp: Mapping[str, object], pattern: re.Pattern) -> dict[int, dict[str, Any]]:
    """Array index -> {field path inside the item: value as exiv2 gives it} for one region array
    of the flat view."""
    out: dict[int, dict[str, Any]] = {}
    for key, value in xmp.items():
        m = pattern.match(key)
        if m:
            out.setdefault(int(m.group(1)), {})
            if m.group(2):
                out[int(m.group(1))][m.group(2)] = value
    return dict(sorted(out.items()))


def _name(value: object) -> Optional[str]:
    if isinstance(value, dict):  # a language alternative: its default
        value = value.get('lang="x-default"') or next(iter(value.values()), None)
    if value is None:
        return None
    name = " ".join(str(value).split())
    return name or None


def mwg_regions(xmp: Mapping[str, object], width: int, height: int, orientation: Optional[int],
                origin: str) -> list[FaceRegion]:
    """The face regions of an MWG structure (type Face, or no type), on a width x height oriented
    image. AppliedToDimensions is honoured: pixel areas are normalised by it, and regions drawn on
    the image as stored (dimensions that fit it, not the oriented one) are turned with it."""
    dims_w, dims_h = _num(xmp.get(f"{MWG_DIMS}/stDim:w")), _num(xmp.get(f"{MWG_DIMS}/stDim:h"))
    stored_frame = False
    if orientation in _SWAPS_AXES and dims_w and dims_h and width != height:
        stored_frame = (dims_w > dims_h) != (width > height)
    out = []
    for fields in _items(xmp, _MWG_ITEM).values():
        kind = str(fields.get("mwg-rs:Type", "Face")).strip()
        if kind.lower() != "face":
            continue
        cx, cy, w, h = (_num(fields.get(f"mwg-rs:Area/stArea:{k}")) for k in "xywh")
        if None in (cx, cy, w, h) or w <= 0 or h <= 0:  # type: ignore[operator]
            continue
        unit = str(fields.get("mwg-rs:Area/stArea:unit", "normalized")).strip().lower()
        if unit == "pixel":
            if not (dims_w and dims_h):
                continue  # pixels of an unknown image size
            cx, cy, w, h = cx / dims_w, cy / dims_h, w / dims_w, h / dims_h  # type: ignore[operator]
        rect = (cx - w / 2, cy - h / 2, w, h)  # type: ignore[operator]
        if stored_frame:
            rect = stored_to_oriented(rect, orientation)
        box = to_box(rect, width, height)
        if box is not None:
            out.append(FaceRegion(box, _name(fields.get("mwg-rs:Name")), "mwg", origin))
    return out


def mp_regions(xmp: Mapping[str, object], width: int, height: int, origin: str) -> list[FaceRegion]:
    """The regions of a Microsoft MP:RegionInfo structure (Rectangle "x, y, w, h", normalised,
    top-left), on a width x height oriented image."""
    out = []
    for fields in _items(xmp, _MP_ITEM).values():
        parts = [_num(p) for p in str(fields.get("MPReg:Rectangle", "")).split(",")]
        if len(parts) != 4 or any(p is None for p in parts):
            continue
        x, y, w, h = parts  # type: ignore[misc]
        if w <= 0 or h <= 0:  # type: ignore[operator]
            continue
        box = to_box((x, y, w, h), width, height)  # type: ignore[arg-type]
        if box is not None:
            out.append(FaceRegion(box, _name(fields.get("MPReg:PersonDisplayName")), "mp", origin))
    return out


def regions_of(xmp: Mapping[str, object], width: int, height: int, orientation: Optional[int],
               origin: str) -> list[FaceRegion]:
    """Every face region of one XMP packet: MWG first, then the Microsoft regions that say
    something MWG does not (the same face is often written in both forms)."""
    mwg = mwg_regions(xmp, width, height, orientation, origin)
    mp = [r for r in mp_regions(xmp, width, height, origin)
          if not any(iou(r.box, m.box) > 0.5 for m in mwg)]
    return mwg + mp


def merge_sources(sources: Iterable[list[FaceRegion]]) -> list[FaceRegion]:
    """Regions of several packets (sidecars first, then the embedded one): a region overlapping
    one taken already is the same face; a named one replaces an unnamed one."""
    out: list[FaceRegion] = []
    for regions in sources:
        for r in regions:
            same = next((k for k, o in enumerate(out) if iou(o.box, r.box) > 0.5), None)
            if same is None:
                out.append(r)
            elif out[same].name is None and r.name is not None:
                out[same] = r
    return out


# -- matching ---------------------------------------------------------------------------------------
def iou(a: Box, b: Box) -> float:
    """Intersection over union of two boxes."""
    ax, ay, aw, ah = a
    bx, by, bw, bh = b
    iw = max(0, min(ax + aw, bx + bw) - max(ax, bx))
    ih = max(0, min(ay + ah, by + bh) - max(ay, by))
    inter = iw * ih
    union = aw * ah + bw * bh - inter
    return inter / union if union > 0 else 0.0


MATCH_IOU = 0.3
"""A region and a detected face with at least this overlap are the same face (a person's region
is often drawn looser or tighter than a detector's box)."""


def match(regions: list[FaceRegion], boxes: list[Optional[Box]]) -> tuple[dict[int, int], list[int]]:
    """Pair regions with detected boxes, best overlaps first: ({box index: region index}, indexes
    of regions that matched no box)."""
    pairs = sorted(((iou(r.box, b), ri, bi) for ri, r in enumerate(regions)
                    for bi, b in enumerate(boxes) if b is not None), reverse=True)
    taken_r: set[int] = set()
    out: dict[int, int] = {}
    for score, ri, bi in pairs:
        if score < MATCH_IOU:
            break
        if ri in taken_r or bi in out:
            continue
        out[bi] = ri
        taken_r.add(ri)
    return out, [ri for ri in range(len(regions)) if ri not in taken_r]


# -- writing ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class NamedBox:
    """A named person's face to write: box in the oriented image's pixels."""

    name: str
    box: Box


def _numbered(xmp: Mapping[str, object], pattern: re.Pattern) -> list[dict[str, Any]]:
    return list(_items(xmp, pattern).values())


def region_keys(xmp: Mapping[str, object]) -> list[str]:
    """The flat keys of a packet's MWG and Microsoft regions (what `merged_regions` rewrites)."""
    return [k for k in xmp if k == MWG or k.startswith(MWG + "/") or k == MP or k.startswith(MP + "/")]


def merged_regions(xmp: Mapping[str, object], faces: list[NamedBox], width: int, height: int
                   ) -> tuple[dict[str, Any], list[str], list[str]]:
    """The MWG and Microsoft region structures (flat key -> value, parents before children) that
    replace a packet's `region_keys` to put `faces` in: a region of the same name (ignoring case)
    has its area replaced, its other fields and other regions are kept, new names are added.
    Returns (values, names added, names whose area changed)."""
    mwg = _numbered(xmp, _MWG_ITEM)
    mp = _numbered(xmp, _MP_ITEM)
    added, updated = [], []
    for f in faces:
        x, y, w, h = f.box
        nx, ny, nw, nh = x / width, y / height, w / width, h / height
        area = {"mwg-rs:Area": STRUCT, "mwg-rs:Area/stArea:x": _fmt(nx + nw / 2),
                "mwg-rs:Area/stArea:y": _fmt(ny + nh / 2), "mwg-rs:Area/stArea:w": _fmt(nw),
                "mwg-rs:Area/stArea:h": _fmt(nh), "mwg-rs:Area/stArea:unit": "normalized"}
        key = f.name.casefold()
        old = next((r for r in mwg if (_name(r.get("mwg-rs:Name")) or "").casefold() == key), None)
        if old is None:
            mwg.append({"mwg-rs:Name": f.name, "mwg-rs:Type": "Face", **area})
            added.append(f.name)
        else:
            before = {k: old.get(k) for k in area}
            for k in [k for k in old if k.startswith("mwg-rs:Area/")]:
                del old[k]
            old.update(area)
            if _moved(before, area):
                updated.append(f.name)
        rect = ", ".join(_fmt(v) for v in (nx, ny, nw, nh))
        old_mp = next((r for r in mp if (_name(r.get("MPReg:PersonDisplayName")) or "").casefold() == key),
                      None)
        if old_mp is None:
            mp.append({"MPReg:PersonDisplayName": f.name, "MPReg:Rectangle": rect})
        else:
            old_mp["MPReg:Rectangle"] = rect
    # Other fields of the two structures (an extension another program wrote) are kept.
    others = {k: v for k, v in xmp.items() if (k.startswith(MWG + "/") and not k.startswith(
        (MWG_LIST, MWG_DIMS))) or (k.startswith(MP + "/") and not k.startswith(MP_LIST))}
    changes: dict[str, Any] = {MWG: STRUCT, MWG_DIMS: STRUCT, f"{MWG_DIMS}/stDim:w": str(width),
                               f"{MWG_DIMS}/stDim:h": str(height), f"{MWG_DIMS}/stDim:unit": "pixel"}
    changes.update({k: v for k, v in others.items() if k.startswith(MWG + "/")})
    changes[MWG_LIST] = BAG
    for k, r in enumerate(mwg, 1):
        changes[f"{MWG_LIST}[{k}]"] = STRUCT
        changes.update({f"{MWG_LIST}[{k}]/{sub}": v for sub, v in r.items()})
    changes[MP] = STRUCT
    changes.update({k: v for k, v in others.items() if k.startswith(MP + "/")})
    changes[MP_LIST] = BAG
    for k, r in enumerate(mp, 1):
        changes[f"{MP_LIST}[{k}]"] = STRUCT
        changes.update({f"{MP_LIST}[{k}]/{sub}": v for sub, v in r.items()})
    return changes, added, updated


def _moved(before: dict[str, Any], after: dict[str, str]) -> bool:
    for k, v in after.items():
        a, b = _num(before.get(k)), _num(v)
        if a is None or b is None:
            if str(before.get(k) or "").strip().lower() != v.lower():
                return True
        elif abs(a - b) > 1e-6:
            return True
    return False
