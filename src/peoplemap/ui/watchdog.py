"""`python -m peoplemap.ui.watchdog run APP ...`: Streamlit's own command line, in a process that
stops when the process that started it is gone.

`peoplemap ui` starts the app server as a child process and stops it on SIGINT, SIGTERM and
SIGHUP; this covers the rest: when the parent dies without a word (SIGKILL, a crash), the server
notices within PARENT_POLL_S, shuts down as on Ctrl-C, and frees its port. No orphan server is
left serving a library on a port.
"""
from __future__ import annotations

import os
import signal
import sys
import threading
import time

PARENT_POLL_S = 0.2
GRACE_S = 3.0
"""After asking the server to stop, how long it has before the process exits anyway."""


def _watch(parent: int) -> None:
    # Signals sent to the process must reach the main thread (Streamlit's handlers run there).
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM, signal.SIGHUP})
    while os.getppid() == parent:
        time.sleep(PARENT_POLL_S)
    signal.pthread_kill(threading.main_thread().ident, signal.SIGTERM)  # Streamlit stops cleanly
    time.sleep(GRACE_S)
    os._exit(1)


def main(argv: list[str]) -> None:
    parent = os.getppid()
    if parent > 1:
        threading.Thread(target=_watch, args=(parent,), name="peoplemap-parent-watch",
                         daemon=True).start()
    from streamlit.web import cli

    sys.argv = ["streamlit", *argv]
    cli.main(prog_name="streamlit")


if __name__ == "__main__":
    main(sys.argv[1:])
