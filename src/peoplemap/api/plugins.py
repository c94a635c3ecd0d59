"""Extra modules the server and its job workers import at start: a hook for tests only.

PEOPLEMAP_TEST_PLUGINS="mod1,mod2" imports those modules (from sys.path) before the library is
used, so a test can register its fast fake model in a server it starts as a subprocess. It is an
environment variable set by whoever starts the server, with the same trust as PYTHONPATH; no
client of the HTTP API can reach it.
"""
from __future__ import annotations

import importlib
import logging
import os

PLUGINS_ENV = "PEOPLEMAP_TEST_PLUGINS"

log = logging.getLogger(__name__)


def load_test_plugins() -> list[str]:
    """Import the modules named in PEOPLEMAP_TEST_PLUGINS; returns their names."""
    names = [n.strip() for n in os.environ.get(PLUGINS_ENV, "").split(",") if n.strip()]
    for name in names:
        importlib.import_module(name)
        log.warning("imported test plugin %s (%s)", name, PLUGINS_ENV)
    return names
