"""A job's worker process: `python -m peoplemap.api.worker SPEC_JSON` runs one index or cluster
run on the library and reports on stdout, one JSON object a line:

    {"event": "progress", "stage": "index", "done": 64, "total": 1000}
    {"event": "result", "result": {...}}              the run's summary (its to_json())
    {"event": "cancelled", "message": "..."}
    {"event": "error", "status": 409, "message": "..."}

A line "cancel" (or "shutdown") on stdin, or stdin closing (the server is gone), asks the run to
stop. The progress callback then raises JobCancelled: an index run stops between batches and
keeps every committed one, so the next index of the folder resumes; a clustering stores nothing. The run holds the
library's writer lock itself (Library.index / Library.cluster), like a CLI run would.
"""
from __future__ import annotations

import json
import logging
import os
import sys
import threading
import time
import traceback
from pathlib import Path
from typing import Any, Callable, Optional

from ..errors import InputError, LibraryBusyError, LibraryError, ModelError, PeoplemapError

log = logging.getLogger(__name__)

PROGRESS_EVERY_S = 0.2
"""Progress lines at most this often (besides the first and the last of a stage)."""


class JobCancelled(PeoplemapError):
    """A client cancelled the job; raised from the progress callback between batches."""


class Events:
    """Writes event lines to the server; a closed pipe means the server is gone: cancel."""

    def __init__(self, fd: int, cancel: threading.Event):
        self._out = os.fdopen(fd, "w", buffering=1, encoding="utf-8")
        self._lock = threading.Lock()
        self._cancel = cancel

    def send(self, event: str, **fields: Any) -> None:
        line = json.dumps({"event": event, **fields}, ensure_ascii=False)
        with self._lock:
            try:
                self._out.write(line + "\n")
                self._out.flush()
            except (OSError, ValueError):
                self._cancel.set()


REASONS = {"cancel": "by a client", "shutdown": "because the server is stopping"}
stop_reason = ["because the server went away"]
"""Why the job is asked to stop: the last line read from the server (stdin closing: gone)."""


def watch_stdin(cancel: threading.Event) -> None:
    """Set `cancel` on a "cancel" / "shutdown" line or when stdin closes (the server ended)."""
    try:
        for line in sys.stdin:
            if line.strip() in REASONS:
                stop_reason[0] = REASONS[line.strip()]
                break
    except (OSError, ValueError):
        pass
    cancel.set()


def progress_callback(kind: str, cancel: threading.Event,
                      events: Events) -> Callable[[str, int, Optional[int]], None]:
    """Report progress, throttled; raise JobCancelled when a cancel is pending. An index run is
    stopped only in its "index" stage (between committed batches): the placement of new items
    that follows is short and leaves the library consistent when it is let finish."""
    last = [0.0, ""]

    def cb(stage: str, done: int, total: Optional[int]) -> None:
        if cancel.is_set() and (kind != "index" or stage == "index"):
            raise JobCancelled(f"{kind} job cancelled {stop_reason[0]}"
                               + ("; every committed batch is kept, and indexing the folder again "
                                  "resumes" if kind == "index" else "; nothing was stored"))
        now = time.monotonic()
        if stage != last[1] or done == 0 or done == total or now - last[0] >= PROGRESS_EVERY_S:
            last[0], last[1] = now, stage
            events.send("progress", stage=stage, done=int(done),
                        total=None if total is None else int(total))

    return cb


def run(spec: dict, cancel: threading.Event, events: Events) -> None:
    from ..library import Library
    from ..responses import jsonable
    from .roots import escaping_links

    kind, params = spec["kind"], spec["params"]
    lib = Library.open(spec["library"])
    try:
        progress = progress_callback(kind, cancel, events)
        if kind == "index":
            folder = Path(params["folder"])
            links = escaping_links(folder, [Path(r) for r in spec["roots"]])
            if links:
                shown = "; ".join(f"{a} -> {b}" for a, b in links)
                events.send("error", status=403, message=(
                    f"{folder} holds symlinks leading outside the folders this server may index: "
                    f"{shown}. Remove them, or start the server with their target as a --root"))
                return
            summary: Any = lib.index(folder, model=params.get("model"),
                                     rebuild=bool(params.get("rebuild")), progress=progress)
        elif kind == "cluster":
            summary = lib.cluster(model=params.get("model"), profile=params.get("profile", "default"),
                                  min_cluster_size=params.get("min_cluster_size"), progress=progress)
        else:
            raise InputError(f"unknown job kind {kind!r}; must be index or cluster")
        events.send("result", result=jsonable(summary))
    finally:
        lib.close()


def main(argv: list[str]) -> int:
    # Event lines go to a private copy of stdout; anything else printing to stdout (a library's
    # stray print) lands on stderr instead of corrupting the protocol.
    event_fd = os.dup(1)
    os.dup2(2, 1)
    cancel = threading.Event()
    events = Events(event_fd, cancel)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s [job]: %(message)s")
    try:
        spec = json.loads(argv[1])
        from .plugins import load_test_plugins

        load_test_plugins()
        threading.Thread(target=watch_stdin, args=(cancel,), daemon=True,
                         name="peoplemap-job-cancel").start()
        run(spec, cancel, events)
    except JobCancelled as e:
        events.send("cancelled", message=str(e))
    except LibraryBusyError as e:
        events.send("error", status=409, message=str(e))
    except (InputError, ModelError) as e:
        events.send("error", status=422, message=str(e))
    except LibraryError as e:
        events.send("error", status=409, message=str(e))
    except PeoplemapError as e:
        events.send("error", status=422, message=str(e))
    except BaseException as e:  # noqa: BLE001 - the server must hear why, whatever it was
        traceback.print_exc()
        events.send("error", status=500, message=f"the job failed: {type(e).__name__}: {e}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
