"""Export a library's current clustering: CSV, JSON, or a folder per cluster of links to originals.

Export never writes outside its output folder and never moves or changes an original.
"""
from __future__ import annotations

import csv
import json
import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, Optional

from .errors import InputError
from .types import NOISE

if TYPE_CHECKING:
    from .library import Library

FORMATS = ("csv", "json", "folders")
UNSORTED = "unsorted"


def rows(lib: "Library", model: Optional[str] = None) -> list[dict]:
    """One dict per item: item_id, path, box, cluster (None = unsorted), person_name, score."""
    from .people import person_of_items

    labels = lib.labels(model)
    persons = person_of_items(lib, model)
    out = []
    for it in lib.items(model):
        lab = labels.get(it.id)
        cluster = None if lab is None or lab == NOISE else int(lab)
        p = persons.get(it.id)
        out.append(dict(item_id=it.id, path=it.path, box=list(it.box) if it.box else None,
                        cluster=cluster, person_id=p.id if p else None,
                        person_name=p.name if p else None, kind=it.kind, score=round(it.score, 4)))
    return out


def export(lib: "Library", fmt: str, out: Path, *, model: Optional[str] = None) -> Path:
    if fmt not in FORMATS:
        raise InputError(f"unknown export format {fmt!r}; use one of {list(FORMATS)}")
    data = rows(lib, model)
    if fmt == "csv":
        _parent_ok(out)
        with open(out, "w", newline="", encoding="utf-8") as f:
            w = csv.writer(f)
            w.writerow(["item_id", "path", "box", "cluster", "person_name", "person_id", "kind",
                        "score"])
            for r in data:
                box = " ".join(str(v) for v in r["box"]) if r["box"] else ""
                w.writerow([r["item_id"], r["path"], box, "" if r["cluster"] is None else r["cluster"],
                            r["person_name"] or "", "" if r["person_id"] is None else r["person_id"],
                            r["kind"], r["score"]])
        return out
    if fmt == "json":
        _parent_ok(out)
        with open(out, "w", encoding="utf-8") as f:
            json.dump({"library": str(lib.path), "items": data}, f, indent=1, ensure_ascii=False)
        return out
    return _folders(data, out)


def _parent_ok(out: Path) -> None:
    if out.exists() and out.is_dir():
        raise InputError(f"{out} is a folder; give a file name for this format")
    if not out.parent.exists():
        raise InputError(f"folder {out.parent} does not exist")


_UNSAFE = re.compile(r"[^\w.\- ]+", re.UNICODE)


def safe_name(name: str, fallback: str) -> str:
    """A single path component made from untrusted text: no separators, no '..', not empty."""
    s = _UNSAFE.sub("_", name).strip(" .")[:120]
    return s or fallback


def _folders(data: list[dict], out: Path) -> Path:
    if out.exists() and not out.is_dir():
        raise InputError(f"{out} exists and is not a folder")
    if out.exists() and any(out.iterdir()):
        raise InputError(f"{out} is not empty; export into a new or empty folder")
    out.mkdir(parents=True, exist_ok=True)
    root = out.resolve()
    for r in data:
        # A named person gets a folder of its own (merges and splits included); other clustered
        # items go by cluster; the rest are unsorted.
        if r["person_name"]:
            folder = safe_name(r["person_name"], f"person-{r['person_id']:04d}")
        elif r["cluster"] is not None:
            folder = f"cluster-{r['cluster']:04d}"
        elif r["person_id"] is not None:
            folder = f"person-{r['person_id']:04d}"
        else:
            folder = UNSORTED
        d = root / folder
        d.mkdir(exist_ok=True)
        link = d / safe_name(f"{r['item_id']}-{os.path.basename(r['path'])}", str(r["item_id"]))
        if link.resolve().parent != d:  # belt and braces: never write outside `out`
            raise InputError(f"refusing to write outside {root}: {link}")
        if not link.exists():
            try:
                os.symlink(r["path"], link)
            except (OSError, ValueError) as e:  # '', a NUL byte, longer than PATH_MAX
                raise InputError(f"cannot link to {r['path']!r} (item {r['item_id']}): {e}") from None
    return out
