"""Export a library's people: CSV, JSON, or a folder per person of links to the originals.

Export never writes outside its output folder and never moves or changes an original. A folders
export can be repeated into the same folder: it is brought up to date (see MANIFEST).
"""
from __future__ import annotations

import csv
import json
import os
import re
import time
from pathlib import Path
from typing import TYPE_CHECKING, Optional

from .errors import InputError
from .types import NOISE

if TYPE_CHECKING:
    from .library import Library

FORMATS = ("csv", "json", "folders", "xmp")
UNSORTED = "unsorted"
"""The folder of items that belong to no person."""
MANIFEST = ".peoplemap-export.json"
"""Written into a folders export: the links it made. A folder holding one is peoplemap's own
earlier export, which a new export updates (other non-empty folders are refused)."""


def rows(lib: "Library", model: Optional[str] = None) -> list[dict]:
    """One dict per item: item_id, path, box, cluster (None = unsorted), person_name, score, taken
    (when the photo was taken, "YYYY-MM-DD HH:MM:SS", None where its metadata does not say)."""
    from .people import person_of_items

    labels = lib.labels(model)
    persons = person_of_items(lib, model)
    out = []
    items = lib.items(model)
    taken = lib.store.photos.taken_of_items([it.id for it in items])
    for it in items:
        lab = labels.get(it.id)
        cluster = None if lab is None or lab == NOISE else int(lab)
        p = persons.get(it.id)
        out.append(dict(item_id=it.id, path=it.path, box=list(it.box) if it.box else None,
                        cluster=cluster, person_id=p.id if p else None,
                        person_name=p.name if p else None, kind=it.kind, score=round(it.score, 4),
                        taken=taken.get(it.id)))
    return out


def export(lib: "Library", fmt: str, out: Optional[Path], *, model: Optional[str] = None,
           dry_run: bool = False, into_originals: bool = False) -> Path:
    """Write the people as csv, json, folders (at `out`) or xmp (a sidecar beside each photo with
    named people, `out` then the optional JSON report of what changed; see export_xmp)."""
    if fmt not in FORMATS:
        raise InputError(f"unknown export format {fmt!r}; use one of {list(FORMATS)}")
    if fmt == "xmp":
        changes = export_xmp(lib, model=model, dry_run=dry_run, into_originals=into_originals)
        if out is not None:
            _parent_ok(out)
            out.write_text(json.dumps({"dry_run": dry_run, "changes": [c.to_json() for c in changes]},
                                      indent=1, ensure_ascii=False), encoding="utf-8")
        return out if out is not None else lib.path
    if out is None:
        raise InputError(f"export --format {fmt} needs --out")
    if dry_run or into_originals:
        raise InputError("--dry-run and --write-originals are for --format xmp")
    data = rows(lib, model)
    if fmt == "csv":
        _parent_ok(out)
        with open(out, "w", newline="", encoding="utf-8") as f:
            w = csv.writer(f)
            w.writerow(["item_id", "path", "box", "cluster", "person_name", "person_id", "kind",
                        "score", "taken"])
            for r in data:
                box = " ".join(str(v) for v in r["box"]) if r["box"] else ""
                w.writerow([r["item_id"], r["path"], box, "" if r["cluster"] is None else r["cluster"],
                            r["person_name"] or "", "" if r["person_id"] is None else r["person_id"],
                            r["kind"], r["score"], r["taken"] or ""])
        return out
    if fmt == "json":
        _parent_ok(out)
        with open(out, "w", encoding="utf-8") as f:
            json.dump({"library": str(lib.path), "items": data}, f, indent=1, ensure_ascii=False)
        return out
    return _folders(lib, data, out, model)


BACKUPS = "metadata-backups"
"""The library's folder where `export --format xmp --write-originals` keeps each photo's metadata as
it was before peoplemap wrote into it."""


def export_xmp(lib: "Library", *, model: Optional[str] = None, dry_run: bool = False,
               into_originals: bool = False) -> list:
    """Write the named people's faces as MWG (and Microsoft) face regions: into one XMP sidecar
    per photo (merged with what it holds), or, into_originals=True, into the photos themselves
    (their metadata saved first in the library's metadata-backups folder). dry_run: only say what
    would change. Returns one peoplemap.metadata.writing.XmpChange per photo with named faces."""
    from .metadata import sidecar_paths
    from .metadata.regions import NamedBox
    from .metadata.writing import PhotoFaces, write_regions
    from .people import list_people

    by_image: dict[int, list[NamedBox]] = {}
    named = {i: p.name for p in list_people(lib, model, include_hidden=True) if p.name
             for i in p.item_ids}
    for it in lib.items(model, ids=sorted(named)):
        if it.box is not None and it.kind == "face":
            by_image.setdefault(it.image_id, []).append(NamedBox(named[it.id], it.box))
    sizes = lib.store.photos.sizes(list(by_image))
    photos = []
    for image_id, faces in sorted(by_image.items(), key=lambda kv: sizes[kv[0]][0]):
        path, w, h = sizes[image_id]
        # One region per name in a photo: two faces given one name keep the larger.
        best: dict[str, NamedBox] = {}
        for f in faces:
            k = f.name.casefold()
            if k not in best or f.box[2] * f.box[3] > best[k].box[2] * best[k].box[3]:
                best[k] = f
        photos.append(PhotoFaces(path, w, h, list(best.values())))
    changes = write_regions(photos, dry_run=dry_run, into_originals=into_originals,
                            backup_dir=lib.path / BACKUPS, max_bytes=lib.settings.max_sidecar_bytes)
    # A sidecar we wrote says what the library knows: the next index must not read it back as
    # the user's own names (which would confirm every face clustering placed).
    ids = {path: image_id for image_id, (path, _w, _h) in sizes.items()}
    for c in changes:
        if not dry_run and not into_originals and c.action in ("create", "update"):
            mtimes = [os.stat(p).st_mtime for p in sidecar_paths(c.photo) if os.path.exists(p)]
            if mtimes:
                lib.store.photos.regions_read(ids[c.photo], max(mtimes), [], [], [])
    return changes


def _parent_ok(out: Path) -> None:
    if out.exists() and out.is_dir():
        raise InputError(f"{out} is a folder; give a file name for this format")
    if not out.parent.exists():
        raise InputError(f"folder {out.parent} does not exist")


_UNSAFE = re.compile(r"[^\w.\-() ]+", re.UNICODE)


def safe_name(name: str, fallback: str) -> str:
    """A single path component made from untrusted text: no separators, no '..', not empty."""
    s = _UNSAFE.sub("_", name).strip(" .")[:120]
    return s or fallback


def person_folders(data: list[dict]) -> dict[Optional[int], str]:
    """person id -> its folder's name: the person's name, or "Person 12" (its stable number), as
    the app and the CLI show it; None (no person) -> "unsorted". Two people whose names make the
    same folder name (case aside) get their number after it."""
    labels: dict[Optional[int], str] = {}
    for r in data:
        pid = r["person_id"]
        if pid is not None and pid not in labels:
            labels[pid] = safe_name(r["person_name"] or f"Person {pid}", f"Person {pid}")
    seen: dict[str, int] = {UNSORTED.casefold(): 1}
    for name in labels.values():
        seen[name.casefold()] = seen.get(name.casefold(), 0) + 1
    out: dict[Optional[int], str] = {None: UNSORTED}
    for pid, name in labels.items():
        out[pid] = name if seen[name.casefold()] == 1 else safe_name(f"{name} (Person {pid})", str(pid))
    return out


def _is_our_export(out: Path) -> Optional[dict]:
    """The manifest of an earlier peoplemap export in `out`, or None."""
    m = out / MANIFEST
    if m.is_symlink() or not m.is_file():
        return None
    try:
        data = json.loads(m.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or data.get("peoplemap_export") != 1 or \
            not isinstance(data.get("links"), dict):
        return None
    return data


def _inside(root: Path, rel: str) -> Optional[Path]:
    """root/FOLDER/NAME for a manifest entry "FOLDER/NAME" made of two plain names; None for
    anything else (a manifest is a file in a folder anyone may have edited)."""
    parts = rel.split("/")
    if len(parts) != 2 or any(p in ("", ".", "..") or os.sep in p or "\0" in p for p in parts):
        return None
    return root / parts[0] / parts[1]


def _folders(lib: "Library", data: list[dict], out: Path, model: Optional[str]) -> Path:
    if out.exists() and not out.is_dir():
        raise InputError(f"{out} exists and is not a folder")
    earlier = None
    if out.exists() and any(out.iterdir()):
        earlier = _is_our_export(out)
        if earlier is None:
            raise InputError(f"{out} is not empty and is not an earlier peoplemap export; export "
                             "into a new or empty folder (or into a folder peoplemap exported to "
                             "before, to update it)")
    out.mkdir(parents=True, exist_ok=True)
    root = out.resolve()
    folders = person_folders(data)
    wanted: dict[str, str] = {}
    for r in data:
        folder = folders[r["person_id"]]
        name = safe_name(f"{r['item_id']}-{os.path.basename(r['path'])}", str(r["item_id"]))
        wanted[f"{folder}/{name}"] = r["path"]

    # An earlier export: what is no longer true goes (only links it made; nothing else is touched).
    old_links = earlier["links"] if earlier else {}
    for rel, target in old_links.items():
        link = _inside(root, str(rel))
        if link is None or wanted.get(rel) == target:
            continue
        if link.parent.is_symlink() or not link.parent.is_dir():
            continue  # a folder replaced by a link since: what it points to is not ours
        if link.is_symlink():
            link.unlink()

    for rel, target in wanted.items():
        link = _inside(root, rel)
        assert link is not None  # made from safe names above
        d = link.parent
        d.mkdir(exist_ok=True)
        if d.is_symlink() or d.resolve() != root / d.name:  # belt and braces: never write outside
            raise InputError(f"refusing to write outside {root}: {d}")
        if link.is_symlink():
            if os.readlink(link) == target:
                continue
            link.unlink()
        elif link.exists():
            raise InputError(f"{link} exists and is not a link peoplemap made; move it away and "
                             "export again")
        try:
            os.symlink(target, link)
        except (OSError, ValueError) as e:  # '', a NUL byte, longer than PATH_MAX
            raise InputError(f"cannot link to {target!r} ({link.name}): {e}") from None

    # Folders of the earlier export left empty (a person merged away, renamed) go too.
    for folder in {str(rel).split("/")[0] for rel in old_links} - set(folders.values()):
        d = _inside(root, f"{folder}/x")
        if d is not None and d.parent.is_dir() and not d.parent.is_symlink():
            try:
                d.parent.rmdir()  # only when empty: a file the user put there keeps it
            except OSError:
                pass
    _write_manifest(root, lib, model, wanted)
    return out


def _write_manifest(root: Path, lib: "Library", model: Optional[str], links: dict[str, str]) -> None:
    tmp = root / f".{MANIFEST}.{os.getpid()}.tmp"
    tmp.write_text(json.dumps({"peoplemap_export": 1, "library": str(lib.path),
                               "model": lib.vector_set(model).model, "written_at": time.time(),
                               "links": links}, indent=1, ensure_ascii=False), encoding="utf-8")
    os.replace(tmp, root / MANIFEST)
