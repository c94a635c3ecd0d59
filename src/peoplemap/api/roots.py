"""Index jobs read only under the roots the operator named (`peoplemap serve --root DIR`).

A client's folder is resolved the way the kernel will open it (`..`, symlinks, absolute paths)
and must land inside a root. The scan of a folder follows symlinks, so before a job indexes a
folder, every symlink in it is resolved too, and one leading outside the roots refuses the job.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

MAX_PATH_CHARS = 4096


class OutsideRoots(Exception):
    """A folder a client named resolves outside every root; `status` is the HTTP answer."""

    def __init__(self, message: str, status: int = 403):
        super().__init__(message)
        self.status = status


def inside(path: str, root: str) -> bool:
    """True when `path` is `root` or below it (both already resolved)."""
    try:
        return os.path.commonpath([path, root]) == root
    except ValueError:  # different drives, or one relative and one absolute
        return False


def resolve_folder(folder: str, roots: Sequence[Path]) -> Path:
    """The real folder a client means: relative names are taken from the first root; the result
    (symlinks followed, `..` resolved) must be inside a root and be a folder. OutsideRoots says
    why not (403 outside the roots, 404 missing, 422 malformed)."""
    if not roots:
        raise OutsideRoots("this server indexes no folders: it was started without --root "
                           "(peoplemap serve --root DIR ...)")
    if not isinstance(folder, str) or not folder.strip():
        raise OutsideRoots("folder must be a non-empty path", 422)
    if "\x00" in folder or len(folder) > MAX_PATH_CHARS:
        raise OutsideRoots(f"folder must be a path of at most {MAX_PATH_CHARS} characters "
                           "without NUL bytes", 422)
    raw = folder if os.path.isabs(folder) else os.path.join(str(roots[0]), folder)
    real = os.path.realpath(raw)
    allowed = [str(r) for r in roots]
    if not any(inside(real, r) for r in allowed):
        raise OutsideRoots(f"folder {folder!r} is outside the folders this server may index "
                           f"({', '.join(allowed)})")
    if not os.path.isdir(real):
        raise OutsideRoots(f"folder {folder!r} does not exist or is not a folder", 404)
    return Path(real)


def escaping_links(folder: Path, roots: Sequence[Path], limit: int = 10) -> list[tuple[str, str]]:
    """Up to `limit` (link, target) pairs under `folder` whose targets resolve outside the roots.
    Walks without following links (each link is resolved on its own), so a loop cannot trap it."""
    allowed = [str(r) for r in roots]
    found: list[tuple[str, str]] = []
    for top, dirs, files in os.walk(folder, followlinks=False):
        for name in [*dirs, *files]:
            if name.startswith("."):
                continue  # the scan leaves hidden names out
            p = os.path.join(top, name)
            if not os.path.islink(p):
                continue
            target = os.path.realpath(p)
            if not any(inside(target, r) for r in allowed):
                found.append((p, target))
                if len(found) >= limit:
                    return found
        dirs[:] = [d for d in dirs if not d.startswith(".")]
    return found
