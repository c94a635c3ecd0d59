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
