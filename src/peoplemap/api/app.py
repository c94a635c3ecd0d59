"""The FastAPI app over one Library: routes, error answers, the Guard, and offline docs.

One Library object serves every request thread (it is thread-safe; SQLite in WAL mode lets reads
go on while a job's worker process writes). The interactive docs at /docs use the Swagger UI
files shipped in the `swagger-ui-py` package, so the docs page loads nothing from the internet.
"""
from __future__ import annotations

import importlib.util
import os
import threading
from contextlib import asynccontextmanager
from pathlib import Path
from typing import AsyncIterator, Optional

from fastapi import FastAPI
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse

from .. import __version__
from ..library import Library
from . import errors, routes_jobs, routes_media, routes_people
from .config import TOKEN_ENV, ServerConfig
from .guard import Guard
from .jobs import JobManager

DESCRIPTION = """Who is in this photo? Search a peoplemap library with a photo, name and fix its
people, and run index and cluster jobs. The JSON is the same as the CLI's `--json`.

Servers listening beyond this machine need `Authorization: Bearer TOKEN` on every request.
Errors answer `{"status", "error", "message"}`. See docs/api.md for curl examples."""


def swagger_assets() -> Optional[Path]:
    """The Swagger UI files of the swagger-ui-py package, when it is installed."""
    spec = importlib.util.find_spec("swagger_ui")
    if spec is None or not spec.submodule_search_locations:
        return None
    static = Path(list(spec.submodule_search_locations)[0]) / "static"
    return static if (static / "swagger-ui-bundle.js").is_file() else None


def search_slots() -> int:
    """Searches decoding and embedding at once: about the cores (the work is CPU-bound), at most 8,
    since a photo at the pixel limit decodes to ~300 MB (100 M pixels x 3 bytes)."""
    return max(2, min(8, os.cpu_count() or 2))


def worker_env() -> dict[str, str]:
    """The environment job workers run in: the server's, without its token."""
    env = dict(os.environ)
    env.pop(TOKEN_ENV, None)
    return env


def create_app(lib: Library, config: ServerConfig, jobs: Optional[JobManager] = None) -> FastAPI:
    """The HTTP API over `lib`. Jobs run in worker processes that open the library themselves."""
    jobs = jobs or JobManager(lib.path, config.roots, env=worker_env())

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        yield
        jobs.shutdown()

    app = FastAPI(title="peoplemap", version=__version__, description=DESCRIPTION,
                  docs_url=None, redoc_url=None, openapi_url="/openapi.json", lifespan=lifespan)
    app.state.lib = lib
    app.state.config = config
    app.state.jobs = jobs
    app.state.search_slots = threading.BoundedSemaphore(search_slots())
    errors.install(app)
    app.include_router(routes_media.router)
    app.include_router(routes_people.router)
    app.include_router(routes_people.review_router)
    app.include_router(routes_jobs.router)
    _docs(app, config)
    app.add_middleware(Guard, config=config)
    return app


def _docs(app: FastAPI, config: ServerConfig) -> None:
    assets = swagger_assets()
    if assets is not None:
        from fastapi.staticfiles import StaticFiles

        app.mount("/docs-assets", StaticFiles(directory=assets), name="docs-assets")

    @app.get("/docs", include_in_schema=False)
    def docs() -> HTMLResponse:
        if assets is None:
            return HTMLResponse("<p>The interactive docs need the swagger-ui-py package "
                                "(pip install 'peoplemap[server]'); /openapi.json is the API's "
                                "document.</p>")
        return get_swagger_ui_html(openapi_url="/openapi.json", title="peoplemap API",
                                   swagger_js_url="/docs-assets/swagger-ui-bundle.js",
                                   swagger_css_url="/docs-assets/swagger-ui.css",
                                   swagger_favicon_url="/docs-assets/favicon-32x32.png")

    def openapi() -> dict:
        if app.openapi_schema is None:
            from fastapi.openapi.utils import get_openapi

            schema = get_openapi(title=app.title, version=app.version, description=app.description,
                                 routes=app.routes)
            if config.token is not None:
                schema.setdefault("components", {})["securitySchemes"] = {
                    "bearer": {"type": "http", "scheme": "bearer"}}
                schema["security"] = [{"bearer": []}]
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
