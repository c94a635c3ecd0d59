"""What every `peoplemap` command shares: the group class that turns library errors into
`Error: ...`, the progress bar, opening a library, and printing a response as JSON.

Command modules import from here only (never from the package or from each other), so the CLI
has no import cycle; `peoplemap.cli` imports the command modules and registers their commands.
"""
from __future__ import annotations

import json
import sys
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Iterator, Optional

import click

from ..errors import PeoplemapError
from ..responses import jsonable
from ..types import ProgressCallback

if TYPE_CHECKING:
    from ..library import Library

LIBRARY_HELP = "Library folder (created by `index` if missing)."

library_option = click.option("--library", "-l", required=True, help=LIBRARY_HELP)
"""The `--library/-l` option every command that works on a library takes."""


class PeoplemapGroup(click.Group):
    """A click group whose commands report library errors as `Error: ...` with exit code 1."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except PeoplemapError as e:
            click.echo(f"Error: {e}", err=True)
            sys.exit(1)
        except KeyboardInterrupt:
            click.echo("Interrupted; work committed so far is kept. Run the command again to "
                       "continue.", err=True)
            sys.exit(130)


@contextmanager
def progress_bar(desc: str) -> Iterator[ProgressCallback]:
    """A progress callback rendered as a tqdm bar per stage on stderr (quiet when not a terminal)."""
    from tqdm import tqdm

    bars: dict[str, tqdm] = {}

    def cb(stage: str, done: int, total: Optional[int]) -> None:
        bar = bars.get(stage)
        if bar is None:
            bar = bars[stage] = tqdm(total=total, desc=f"{desc} {stage}".strip(), unit="file"
                                     if stage == "index" else "step", file=sys.stderr,
                                     disable=None, leave=False)
        if total is not None and bar.total != total:
            bar.total = total
        bar.n = done
        bar.refresh()

    try:
        yield cb
    finally:
        for b in bars.values():
            b.close()


def open_library(library: str, create: bool = False) -> "Library":
    """Open the library folder `library` (imported here so `--help` does not load it)."""
    from ..library import Library

    return Library.open(library, create=create)


def print_json(obj: Any) -> None:
    """Print `obj` in its one JSON form (`peoplemap.responses.jsonable`)."""
    click.echo(json.dumps(jsonable(obj), indent=1, ensure_ascii=False))
