"""Start the Streamlit app as a child process: `run_app` for the CLI, `start_app` for tests.

The app runs in its own `python -m streamlit run` process so Streamlit's server, signal handling and
script threads stay out of the caller; the library path travels as a script argument after `--`.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from ..config import load_settings

APP = Path(__file__).with_name("app.py")


def app_command(library: str, *, port: int = 8501, address: str = "localhost",
                headless: bool = True) -> list[str]:
    """The command line that serves the app for `library` on address:port."""
    settings = load_settings()
    return [
        sys.executable, "-m", "streamlit", "run", str(APP),
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


def run_app(library: str, *, port: int = 8501, address: str = "localhost",
            headless: bool = True) -> int:
    """Serve the app until it stops (Ctrl-C); returns the server's exit code."""
    proc = start_app(library, port=port, address=address, headless=headless)
    try:
        return proc.wait()
    except KeyboardInterrupt:
        # Streamlit got the same Ctrl-C from the terminal and shuts down by itself.
        try:
            return proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            return proc.wait()
