"""peoplemap as an HTTP service: `peoplemap serve` (FastAPI served by uvicorn).

The service is a thin layer over `peoplemap.Library`, like the CLI and the app: its JSON is the
response types' `to_json()` (peoplemap.responses), the same as the CLI's `--json`. Index and
cluster runs are jobs in a worker process of their own (peoplemap.api.jobs), so a killed job is
reported failed and the server keeps serving. Safe to expose: loopback by default, a bearer
token for any other address, index jobs confined to the operator's roots, uploads checked by
content (peoplemap.api.guard, peoplemap.api.roots, peoplemap.api.media). See docs/api.md.

Nothing heavy is imported here: FastAPI and uvicorn load only when the app is made.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

__all__ = ["ServerConfig", "create_app", "run_server"]

if TYPE_CHECKING:
    from .app import create_app
    from .config import ServerConfig
    from .server import run_server


def __getattr__(name: str) -> Any:
    if name == "create_app":
        from .app import create_app
        return create_app
    if name == "ServerConfig":
        from .config import ServerConfig
        return ServerConfig
    if name == "run_server":
        from .server import run_server
        return run_server
    raise AttributeError(f"module 'peoplemap.api' has no attribute {name!r}")
