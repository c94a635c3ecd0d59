"""`peoplemap serve`: the library as an HTTP API (peoplemap.api). A thin wrapper: options in,
peoplemap.api.run_server out."""
from __future__ import annotations

from typing import Optional

import click

from .common import library_option, open_library


@click.command()
@library_option
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on. Anything but a loopback address needs a token.")
@click.option("--port", type=click.IntRange(0, 65535), default=8600, show_default=True)
@click.option("--root", "roots", multiple=True, type=click.Path(file_okay=False, exists=True),
              help="A folder index jobs may read (repeatable). Without one the API indexes nothing.")
@click.option("--token", default=None, envvar="PEOPLEMAP_API_TOKEN", show_envvar=True,
              help="The bearer token clients must send (at least 16 characters). Default: one "
                   "generated into LIBRARY/api-token (mode 0600) when a token is needed.")
@click.option("--require-token", is_flag=True,
              help="Require the token on a loopback address too (other local users share it).")
@click.option("--access-log", is_flag=True, help="Log every request.")
def serve(library: str, host: str, port: int, roots: tuple[str, ...], token: Optional[str],
          require_token: bool, access_log: bool) -> None:
    """Serve a library as an HTTP API: search by photo, people, items, index and cluster jobs.

    Interactive docs at http://HOST:PORT/docs; docs/api.md has curl examples. Listening on
    anything but 127.0.0.1 / ::1 needs a token, sent as `Authorization: Bearer TOKEN`.

    \b
    Example:
      peoplemap serve --library people.lib --root ~/Pictures
      peoplemap serve --library people.lib --host 0.0.0.0 --port 8600 --root /srv/photos
    """
    from ..api.config import ServerConfig
    from ..api.server import run_server
    from ..config import load_settings

    settings = load_settings()
    lib = open_library(library, create=True)  # first: the token file goes into a library
    config = ServerConfig.make(lib.path, host=host, port=port, roots=roots, token=token,
                               require_token=require_token, max_upload_mb=settings.max_upload_mb,
                               access_log=access_log)
    click.echo(f"Serving {config.library} on {config.url} (docs: {config.url}/docs)", err=True)
    if config.token is not None:
        click.echo(f"Clients must send Authorization: Bearer TOKEN (the token: "
                   f"{config.token_source}).", err=True)
    else:
        click.echo("No token: only this machine can connect (--require-token to ask for one).",
                   err=True)
    click.echo("Index jobs may read: " + (", ".join(map(str, config.roots)) or
                                          "nothing (no --root given)"), err=True)
    run_server(config, lib)


COMMANDS = [serve]
"""Registered on the `peoplemap` group by `peoplemap.cli`."""
