"""Serving the app with uvicorn, with limits set for a service that may face a network."""
from __future__ import annotations

import logging
import os
from typing import TYPE_CHECKING, Optional

from ..config import load_settings
from .app import worker_env
from .config import ServerConfig
from .guard import MAX_HEADER_BYTES

if TYPE_CHECKING:
    from ..library import Library

log = logging.getLogger(__name__)

MAX_CONNECTIONS = 200
"""Concurrent connections and requests beyond which uvicorn answers 503 at once."""
KEEP_ALIVE_S = 5


def run_server(config: ServerConfig, lib: Optional["Library"] = None) -> None:
    """Serve the library (opened here unless given) until interrupted (SIGINT / SIGTERM): running
    jobs are cancelled then, keeping what they committed."""
    # Requests run in parallel threads, each search a small FAISS call: OpenMP teams per call
    # only oversubscribe the cores (a search took 17 ms instead of 6 ms on a busy 2-core machine).
    # Set before FAISS loads; job workers get the environment as it was.
    env = worker_env()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import uvicorn

    from ..library import Library
    from .app import create_app
    from .jobs import JobManager
    from .plugins import load_test_plugins

    load_test_plugins()
    if lib is None:
        lib = Library.open(config.library, create=True, settings=load_settings())
    try:
        app = create_app(lib, config, JobManager(lib.path, config.roots, env=env))
        uvicorn.run(app, host=config.host, port=config.port, http="h11", ws="none",
                    lifespan="on", server_header=False, proxy_headers=False,
                    access_log=config.access_log, log_level="info",
                    limit_concurrency=MAX_CONNECTIONS, timeout_keep_alive=KEEP_ALIVE_S,
                    h11_max_incomplete_event_size=MAX_HEADER_BYTES, timeout_graceful_shutdown=30)
    finally:
        lib.close()
