"""The end of an index run: names from face regions become people, old photos get their dates.

A face that came with a name (a region in the photo's XMP) joins the person of that name, or a new
person is made with it, as a confirmed member: clustering keeps confirmed members where they are
(peoplemap.membership), so the people start from the user's own names.
"""
from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from ..errors import InputError
from .reading import read_photo

if TYPE_CHECKING:
    from ..library import Library

log = logging.getLogger(__name__)


def apply_region_names(lib: "Library", model: str) -> dict[str, int]:
    """Make the set's faces that came with a name confirmed members of the person of that name
    (matched as `peoplemap.people.resolve` matches names: ignoring case), creating the person when
    nobody has the name yet. Returns name -> faces added."""
    s = lib.vector_set(model)
    pending = lib.store.photos.pending_names(s.id)
    if not pending:
        return {}
    from ..people import valid_name

    by_name: dict[str, list[int]] = {}
    shown: dict[str, str] = {}
    bad: list[int] = []
    for item_id, name in pending:
        try:
            clean = valid_name(name)
        except InputError as e:
            log.info("face %d: region name %r not used: %s", item_id, name, e)
            bad.append(item_id)
            continue
        by_name.setdefault(clean.casefold(), []).append(item_id)
        shown.setdefault(clean.casefold(), clean)
    people: dict[str, int] = {}
    for pid, name, _hidden, _item in lib.store.people.rows(s.id):
        if name:
            people.setdefault(name.casefold(), pid)
    added = {}
    for key, ids in by_name.items():
        pid = people.get(key)
        if pid is None:
            pid = lib.store.people.create(s.id, shown[key], ids)
            people[key] = pid
        else:
            lib.store.people.confirm(s.id, pid, ids)
        added[shown[key]] = len(ids)
    lib.store.photos.names_done([i for ids in by_name.values() for i in ids] + bad)
    log.info("faces named by their photos' regions: %s", added)
    return added


def backfill_metadata(lib: "Library", root: str) -> int:
    """Read the dates, orientation and places of photos under `root` indexed before peoplemap read
    them (a library from an older release); their faces are left as they are. Returns how many."""
    missing = lib.store.photos.missing_under(root)
    rows = []
    for image_id, path, width, height in missing:
        try:
            meta, _ = read_photo(path, width, height, lib.settings, regions=False)
        except Exception as e:  # metadata never costs anything else
            log.debug("metadata of %s not read: %s", path, e)
            continue
        rows.append((image_id, meta))
        if len(rows) >= 500:
            lib.store.photos.put(rows)
            rows = []
    if rows:
        lib.store.photos.put(rows)
    return len(missing)


def reread_sidecars(lib: "Library", root: str, model: str, sidecars: dict[str, float]) -> int:
    """Photos already indexed whose XMP sidecars changed since their regions were read (names
    given in another program afterwards; libraries from before regions were read): their regions
    name the faces they overlap, and the regions that overlap none become faces of their own (the
    photo is read and those crops embedded; nothing else is redone). Returns the faces added."""
    s = lib.vector_set(model)
    if not lib.settings.import_regions or not sidecars or s.item_kind != "face":
        return 0
    from .reading import sidecar_paths

    added = 0
    for path, (image_id, width, height, read_at) in lib.store.photos.sidecars_read(root, s.id).items():
        mtimes = [sidecars[p] for p in sidecar_paths(path) if p in sidecars]
        if not mtimes or max(mtimes) == read_at:
            continue
        try:
            meta, regions = read_photo(path, width, height, lib.settings, regions=True)
        except Exception as e:  # metadata never costs anything else
            log.warning("sidecars of %s not read: %s", path, e)
            continue
        items = lib.store.photos.boxes(image_id, s.id)
        from . import faces_from_regions

        names, extra = faces_from_regions(regions, [box for _, box in items])
        named = [(item_id, n) for (item_id, _), n in zip(items, names) if n]
        for item_id, name in _new_faces(lib, s.model, s.id, image_id, path, extra):
            added += 1
            if name:
                named.append((item_id, name))
        lib.store.photos.regions_read(image_id, meta.sidecar_mtime, named, meta.sidecar_problems,
                                      meta.sidecars)
    return added


def _new_faces(lib: "Library", model: str, set_id: int, image_id: int, path: str,
               regions: list) -> list[tuple[int, str]]:
    """Regions no face of the photo overlaps, as new faces: (item id, name or "")."""
    if not regions:
        return []
    from ..ingest import read_image
    from ..store import FoundItem

    try:
        _sha, img = read_image(path, settings=lib.settings)
    except Exception as e:
        log.info("%s not read for its regions: %s", path, e)
        return []
    crops, kept = [], []
    for r in regions:
        x, y, w, h = r.box
        pixels = img.pixels[y:y + h, x:x + w]
        if min(pixels.shape[:2]) >= 8:
            crops.append(pixels)
            kept.append(r)
    if not crops:
        return []
    vectors = lib.embedder(model).embed(crops)
    return [(lib.store.images.add_item(image_id, set_id, FoundItem(r.box, 1.0, v)), r.name or "")
            for r, v in zip(kept, vectors)]
