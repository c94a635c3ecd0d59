"""Serving the app with uvicorn, with limits set for a service that may face a network."""
from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Optional

from ..config import load_settings
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
    import uvicorn

    from ..library import Library
    from .app import create_app
    from .plugins import load_test_plugins

    load_test_plugins()
    if lib is None:
        lib = Library.open(config.library, create=True, settings=load_settings())
    try:
        app = create_app(lib, config)
        uvicorn.run(app, host=config.host, port=config.port, http="h11", ws="none",
                    lifespan="on", server_header=False, proxy_headers=False,
                    access_log=config.access_log, log_level="info",
                    limit_concurrency=MAX_CONNECTIONS, timeout_keep_alive=KEEP_ALIVE_S,
                    h11_max_incomplete_event_size=MAX_HEADER_BYTES, timeout_graceful_shutdown=30)
    finally:
        lib.close()
