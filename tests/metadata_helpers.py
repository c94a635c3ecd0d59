"""Helpers of the metadata tests: generated photos with coloured 'faces', a fast face model that
finds them, and exiftool (Debian's libimage-exiftool-perl) as the independent writer and reader."""
from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import pytest
from PIL import Image

from peoplemap.embed.base import ModelBase, l2_normalize
from peoplemap.embed.registry import register
from peoplemap.types import Region

EXIFTOOL = shutil.which("exiftool")

BACKGROUND = 128


class FakeFaceModel(ModelBase):
    """A face model for generated photos: a 'face' is a solid block of colour on the grey
    background (found as a connected blob of 12+ px); its vector is its mean colour and layout."""

    name = "fakeface"
    version = "1"
    dim = 48
    item_kind = "face"

    def __init__(self, settings=None, **_: object):
        self.missed: set[tuple[int, int, int]] = set()

    def describe(self) -> dict:
        return {"model": self.name, "version": self.version}

    def detect(self, image: np.ndarray) -> list[Region]:
        from scipy import ndimage

        mask = np.abs(image.astype(np.int16) - BACKGROUND).max(axis=2) > 40
        labels, n = ndimage.label(mask)
        out = []
        for sl in ndimage.find_objects(labels):
            ys, xs = sl
            w, h = xs.stop - xs.start, ys.stop - ys.start
            r, g, b = image[sl].reshape(-1, 3).mean(axis=0)
            if r > 180 and g > 180 and b < 100:
                continue  # yellow blocks are faces this detector misses (regions bring them in)
            if w >= 12 and h >= 12:
                out.append(Region((xs.start, ys.start, w, h), 0.99))
        return out

    def embed(self, crops) -> np.ndarray:
        out = np.zeros((len(crops), self.dim), np.float32)
        for i, c in enumerate(crops):
            small = np.asarray(Image.fromarray(c).resize((4, 4), Image.BOX), dtype=np.float32)
            out[i] = small.reshape(-1) - 127.5 + 1e-3
        return l2_normalize(out)


register("fakeface", "test-only face model for generated photos")(FakeFaceModel)

_UNDO = {1: None, 2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180,
         4: Image.Transpose.FLIP_TOP_BOTTOM, 5: Image.Transpose.TRANSPOSE, 6: Image.Transpose.ROTATE_90,
         7: Image.Transpose.TRANSVERSE, 8: Image.Transpose.ROTATE_270}
"""EXIF orientation -> the transpose that turns the picture as shown into the pixels as stored."""


def make_photo(path: Path, faces: Sequence[tuple[tuple[int, int, int, int], tuple[int, int, int]]],
               size: tuple[int, int] = (320, 240), orientation: int = 1, seed: int = 0) -> None:
    """A JPEG that shows (once EXIF-oriented) `faces` (box in shown pixels, colour) on grey; the
    pixels are stored turned and the orientation set with exiftool, as a camera would."""
    rng = np.random.default_rng(seed)
    shown = np.full((size[1], size[0], 3), BACKGROUND, np.int16)
    shown += rng.integers(-3, 4, shown.shape).astype(np.int16)
    for (x, y, w, h), colour in faces:
        shown[y:y + h, x:x + w] = colour
    img = Image.fromarray(np.clip(shown, 0, 255).astype(np.uint8))
    undo = _UNDO[orientation]
    (img.transpose(undo) if undo is not None else img).save(path, quality=95)
    if orientation != 1:
        exiftool("-overwrite_original", f"-Orientation#={orientation}", str(path))


def exiftool(*args: str) -> str:
    """Run exiftool; its stdout. Missing, it fails loudly: it is the tests' independent reader."""
    if EXIFTOOL is None:
        pytest.fail("exiftool is not installed: apt-get install libimage-exiftool-perl (.ci/run does)")
    r = subprocess.run([EXIFTOOL, *args], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    return r.stdout


def write_tags(target: Path, tags: dict, *, original: Optional[Path] = None) -> None:
    """Write tags (exiftool names, structures as dicts/lists) into a photo, or into a new sidecar
    `target` made from `original`'s metadata, through exiftool's JSON import."""
    if original is not None:
        exiftool("-o", str(target), str(original))
    spec = target.with_name(target.name + ".json")
    spec.write_text(json.dumps([{"SourceFile": str(target), **tags}]))
    try:
        exiftool("-overwrite_original", f"-json={spec}", str(target))
    finally:
        spec.unlink()


def mwg_tags(faces: Sequence[tuple[Optional[str], tuple[int, int, int, int]]], width: int, height: int
             ) -> dict:
    """exiftool's RegionInfo for faces (name, box in shown pixels) on a width x height picture."""
    regions = []
    for name, (x, y, w, h) in faces:
        r = {"Area": {"X": (x + w / 2) / width, "Y": (y + h / 2) / height, "W": w / width,
                      "H": h / height, "Unit": "normalized"}, "Type": "Face"}
        if name:
            r["Name"] = name
        regions.append(r)
    return {"RegionInfo": {"AppliedToDimensions": {"W": width, "H": height, "Unit": "pixel"},
                           "RegionList": regions}}


def mp_tags(faces: Sequence[tuple[Optional[str], tuple[int, int, int, int]]], width: int, height: int
            ) -> dict:
    """exiftool's RegionInfoMP (Microsoft) for faces (name, box in shown pixels)."""
    regions = []
    for name, (x, y, w, h) in faces:
        r = {"Rectangle": f"{x / width:.6f}, {y / height:.6f}, {w / width:.6f}, {h / height:.6f}"}
        if name:
            r["PersonDisplayName"] = name
        regions.append(r)
    return {"RegionInfoMP": {"Regions": regions}}


def read_regions(path: Path) -> dict[str, tuple[float, float, float, float]]:
    """What exiftool reads from a file's MWG regions: name -> box (x, y, w, h) in pixels of the
    AppliedToDimensions size (the picture as shown)."""
    data = json.loads(exiftool("-struct", "-json", "-XMP-mwg-rs:RegionInfo", str(path)))[0]
    info = data.get("RegionInfo", {})
    dims = info.get("AppliedToDimensions", {})
    W, H = float(dims["W"]), float(dims["H"])
    out = {}
    for r in info.get("RegionList", []):
        a = r["Area"]
        w, h = float(a["W"]) * W, float(a["H"]) * H
        out[str(r.get("Name"))] = (float(a["X"]) * W - w / 2, float(a["Y"]) * H - h / 2, w, h)
    return out


def hashes(folder: Path) -> dict[str, str]:
    """sha256 of every file under folder (relative path -> digest)."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}
