"""Start the Streamlit app as a child process: `run_app` for the CLI, `start_app` for tests.

The app runs in its own process (`python -m peoplemap.ui.watchdog run APP ...`, Streamlit's command
line) so Streamlit's server, signal handling and script threads stay out of the caller; the library
path travels as a script argument after `--`. Nothing outlives `peoplemap ui`: on SIGINT, SIGTERM
or SIGHUP it stops the server and waits for it, and the server stops by itself when its parent
dies (peoplemap.ui.watchdog).
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any, Optional

from ..config import load_settings

APP = Path(__file__).with_name("app.py")


def app_command(library: str, *, port: int = 8501, address: str = "localhost",
                headless: bool = True) -> list[str]:
    """The command line that serves the app for `library` on address:port."""
    settings = load_settings()
    return [
        sys.executable, "-m", "peoplemap.ui.watchdog", "run", str(APP),
        "--server.port", str(int(port)),
        "--server.address", address,
        "--server.headless", "true" if headless else "false",
        "--browser.gatherUsageStats", "false",
        "--server.maxUploadSize", str(settings.max_upload_mb),
        "--server.fileWatcherType", "none",
        "--global.developmentMode", "false",
        "--client.toolbarMode", "minimal",  # no "Deploy" button: this is a local app
        "--", "--library", str(library),
    ]


def _env(base: dict[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ if base is None else base)
    env["STREAMLIT_BROWSER_GATHER_USAGE_STATS"] = "false"
    return env


def start_app(library: str, *, port: int = 8501, address: str = "localhost", headless: bool = True,
              **popen: Any) -> subprocess.Popen:
    """Start the app server and return at once; the caller waits for /_stcore/health and stops it."""
    env = _env(popen.pop("env", None))
    return subprocess.Popen(app_command(library, port=port, address=address, headless=headless),
                            env=env, **popen)


STOP_GRACE_S = 3.0
"""How long the server has to stop after SIGTERM before it is killed."""
POLL_S = 0.2


class _Stop(Exception):
    def __init__(self, signum: int):
        self.signum = signum


def _raise_stop(signum: int, _frame: Any) -> None:
    raise _Stop(signum)


def stop_app(proc: subprocess.Popen, grace_s: float = STOP_GRACE_S) -> int:
    """Ask the server to stop (SIGTERM: Streamlit shuts down cleanly), kill it after grace_s."""
    if proc.poll() is None:
        proc.terminate()
        try:
            return proc.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            proc.kill()
    return proc.wait()


def run_app(library: str, *, port: int = 8501, address: str = "localhost",
            headless: bool = True) -> int:
    """Serve the app until it stops; returns the exit code. Ctrl-C, SIGTERM, SIGHUP (the terminal
    closed) and the death of this process's parent stop the server too, within seconds, unless
    SIGHUP is ignored (`nohup peoplemap ui ...` keeps serving after the terminal is gone)."""
    watch_parent = signal.getsignal(signal.SIGHUP) is not signal.SIG_IGN
    parent = os.getppid()
    old = {s: signal.signal(s, _raise_stop) for s in (signal.SIGTERM, signal.SIGHUP)
           if signal.getsignal(s) is not signal.SIG_IGN}
    proc: Optional[subprocess.Popen] = None
    try:
        proc = start_app(library, port=port, address=address, headless=headless)
        while True:
            try:
                return proc.wait(timeout=POLL_S)  # a short wait: signals are handled between
            except subprocess.TimeoutExpired:
                pass
            if watch_parent and os.getppid() != parent:
                stop_app(proc)
                return 1
    except KeyboardInterrupt:
        if proc is not None:
            stop_app(proc)
        return 130
    except _Stop as e:
        if proc is not None:
            stop_app(proc)
        return 128 + e.signum
    finally:
        if proc is not None and proc.poll() is None:  # anything else that ends this process
            stop_app(proc)
        for s, handler in old.items():
            signal.signal(s, handler)
