"""Would worker processes started now re-run the caller's script?

Indexing with a process-parallel model (dlib faces) starts worker processes with the "spawn"
method, and a spawned process imports the parent's main script first. A script that calls
`lib.index(...)` at its top level, without `if __name__ == "__main__":`, would then index again in
every worker, where it finds the library locked by its own parent. `caller_rerun_by_workers`
tells the Library to do the work in-process instead, so such a script (the README's example, as
written) works, only on one core.
"""
from __future__ import annotations

import ast
import os
import sys
from functools import lru_cache
from types import FrameType
from typing import Optional


def _main_rerun_path() -> Optional[str]:
    """The file a spawned child runs as `__mp_main__`, or None when it runs none (interactive,
    `python -c`, `python -m pkg` whose __main__ is a package's `__main__.py`), following
    multiprocessing.spawn.get_preparation_data and _fixup_main_from_*."""
    main = sys.modules.get("__main__")
    if main is None:
        return None
    spec = getattr(main, "__spec__", None)
    if spec is not None and getattr(spec, "name", None):
        if spec.name == "__main__" or spec.name.endswith(".__main__"):
            return None
        return getattr(main, "__file__", None)
    path = getattr(main, "__file__", None)
    if path is None or os.path.splitext(os.path.basename(path))[0] == "ipython":
        return None
    return path


def _is_main_test(node: ast.expr) -> bool:
    """`__name__ == "__main__"` (either way round)."""
    if not (isinstance(node, ast.Compare) and len(node.ops) == 1 and isinstance(node.ops[0], ast.Eq)):
        return False
    sides = [node.left, node.comparators[0]]
    names = [s for s in sides if isinstance(s, ast.Name) and s.id == "__name__"]
    consts = [s for s in sides if isinstance(s, ast.Constant) and s.value == "__main__"]
    return len(names) == 1 and len(consts) == 1


@lru_cache(maxsize=16)
def _guarded_lines(path: str, mtime: float) -> Optional[tuple[tuple[int, int], ...]]:
    """Line ranges of the bodies of top-level `if __name__ == "__main__":` blocks; None when the
    file cannot be read or parsed."""
    try:
        with open(path, "rb") as f:
            tree = ast.parse(f.read(), path)
    except (OSError, SyntaxError, ValueError):
        return None
    ranges = []
    for node in tree.body:
        if isinstance(node, ast.If) and _is_main_test(node.test) and node.body:
            ranges.append((node.body[0].lineno, max(getattr(n, "end_lineno", n.lineno) or n.lineno
                                                    for n in node.body)))
    return tuple(ranges)


def caller_rerun_by_workers(frame: Optional[FrameType] = None) -> bool:
    """True when spawned workers would re-run the code now calling us: the main script's
    top-level code is on this thread's stack at a line outside `if __name__ == "__main__":`.
    False when there is no such script (interactive use, a notebook, `python -m pytest`,
    `streamlit run`, a thread of a server) or the call comes from inside the guard."""
    path = _main_rerun_path()
    if path is None:
        return False
    try:
        real = os.path.realpath(path)
        mtime = os.stat(real).st_mtime
    except OSError:
        return True  # cannot read the script: assume it is unguarded
    f = frame or sys._getframe(1)
    while f is not None:
        code = f.f_code
        if (code.co_name == "<module>" and f.f_globals.get("__name__") == "__main__"
                and os.path.realpath(code.co_filename) == real):
            guarded = _guarded_lines(real, mtime)
            if guarded is None:
                return True
            line = f.f_lineno
            return not any(a <= line <= b for a, b in guarded)
        f = f.f_back
    return False


def busy_message(library: object, holder: str) -> str:
    """The "library is busy" error, saying who holds the writer lock and, when that is this
    process or the process that started this one, what really happened."""
    import re

    m = re.search(r"\(pid (\d+)\)", holder)
    pid = int(m.group(1)) if m else None
    base = f"the library {library} is busy: {holder} is writing to it"
    if pid == os.getpid():
        return (base + ". That is this same process: a second write (index, cluster, forget) was "
                "started while the first is still running; run them one after the other")
    main = sys.modules.get("__main__")
    spawned = getattr(main, "__name__", "") == "__mp_main__"
    if not spawned:
        import multiprocessing

        spawned = multiprocessing.parent_process() is not None
    if pid is not None and spawned and pid == os.getppid():
        return (base + ". That is the process that started this one: it started worker "
                "processes, and each worker runs the main script's top-level code again, which "
                "writes to the library a second time. Put the script's code under "
                "`if __name__ == \"__main__\":`")
    return base + ". Wait for it to finish, then run this again"
