"""What every `peoplemap` command shares: the group class that turns library errors into
`Error: ...`, the progress bar, opening a library, and printing a response as JSON.

Command modules import from here only (never from the package or from each other), so the CLI
has no import cycle; `peoplemap.cli` imports the command modules and registers their commands.
"""
from __future__ import annotations

import json
import os
import sys
import time
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Iterator, Optional

import click

from ..errors import PeoplemapError
from ..responses import jsonable
from ..types import ProgressCallback
from ..wording import duration

if TYPE_CHECKING:
    from ..library import Library

LIBRARY_HELP = "Library folder (created by `index` if missing)."

library_option = click.option("--library", "-l", required=True, help=LIBRARY_HELP)
"""The `--library/-l` option every command that works on a library takes."""


class PeoplemapGroup(click.Group):
    """A click group whose commands report every user error as `Error: ...` with exit code 1:
    library errors without a traceback, and click's usage errors (a missing argument, a bad
    option value) with exit code 1 instead of click's 2."""

    def make_context(self, *args: Any, **kwargs: Any) -> click.Context:
        try:
            return super().make_context(*args, **kwargs)
        except click.UsageError as e:
            e.exit_code = 1
            raise

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except click.UsageError as e:
            e.exit_code = 1
            raise
        except PeoplemapError as e:
            click.echo(f"Error: {e}", err=True)
            sys.exit(1)
        except OSError as e:  # a path the user gave that cannot be read or written
            where = f": {e.filename}" if e.filename else ""
            click.echo(f"Error: {e.strerror or e}{where}", err=True)
            sys.exit(1)
        except KeyboardInterrupt:
            click.echo("Interrupted; work committed so far is kept. Run the command again to "
                       "continue.", err=True)
            sys.exit(130)


STAGES = {"index": ("Indexing", "files"), "assign": ("Placing new faces with people", "faces"),
          "cluster": ("Grouping by person", "steps"), "ivfpq": ("Building the search index", "steps"),
          "review": ("Preparing the review questions", "steps")}
"""What each progress stage of the library is called, and what it counts."""

PROGRESS_EVERY_S = 5.0
"""When stderr is not a terminal, a progress line is printed this often (PEOPLEMAP_PROGRESS_EVERY
to change), so a log shows the run is alive."""


class ProgressLines:
    """A library progress callback printed as plain lines on stderr: the first call, then at most
    every `every` seconds, and the end of each stage. Each line has the count, the rate and the
    time left: "Indexing: 120/1,234 files (10%), 8.3 files/s, about 2 min 14 s left"."""

    def __init__(self, every: float, out: Any = None, clock: Any = time.monotonic):
        self.every = every
        self.out = out
        self.clock = clock
        self._stage: Optional[str] = None
        self._start = 0.0
        self._first_done = 0
        self._last_print = -float("inf")
        self._last: tuple[int, Optional[int]] = (0, None)
        self._printed: Optional[tuple[int, Optional[int]]] = None

    def __call__(self, stage: str, done: int, total: Optional[int]) -> None:
        now = self.clock()
        if stage != self._stage:
            self.finish()
            self._stage, self._start, self._first_done = stage, now, done
            self._last_print = -float("inf")
        self._last = (done, total)
        final = total is not None and done >= total
        if final or now - self._last_print >= self.every:
            self._print(now)
            if final:
                self._stage = None

    def finish(self) -> None:
        """End the current stage, printing where it stopped if that was not printed yet."""
        if self._stage is not None and self._printed != self._last:
            self._print(self.clock())
        self._stage = None

    def line(self, now: float) -> str:
        assert self._stage is not None
        done, total = self._last
        label, unit = STAGES.get(self._stage, (self._stage.capitalize(), "steps"))
        text = f"{label}: {done:,}" + (f"/{total:,} {unit} ({100 * done // max(total, 1)}%)"
                                      if total is not None else f" {unit}")
        elapsed = now - self._start
        rate = (done - self._first_done) / elapsed if elapsed > 0 else 0.0
        if rate > 0:
            text += f", {rate:,.1f} {unit}/s"
            if total is not None and done < total:
                text += f", about {duration((total - done) / rate)} left"
        if total is not None and done >= total:
            text += f", done in {duration(elapsed)}"
        return text

    def _print(self, now: float) -> None:
        self._last_print = now
        self._printed = self._last
        click.echo(self.line(now), file=self.out or sys.stderr)


@contextmanager
def progress_bar(desc: str = "") -> Iterator[ProgressCallback]:
    """A progress callback for a library run: in a terminal, a bar per stage on stderr with the
    count, rate and time left (tqdm); otherwise a line on stderr every few seconds (ProgressLines).
    Every callback moves it: a library that reports each file shows each file."""
    if not sys.stderr.isatty():
        every = float(os.environ.get("PEOPLEMAP_PROGRESS_EVERY") or PROGRESS_EVERY_S)
        lines = ProgressLines(every)
        try:
            yield lines
        finally:
            lines.finish()
        return

    from tqdm import tqdm

    bars: dict[str, tqdm] = {}

    def cb(stage: str, done: int, total: Optional[int]) -> None:
        bar = bars.get(stage)
        label, unit = STAGES.get(stage, (stage.capitalize(), "steps"))
        if bar is None:
            bar = bars[stage] = tqdm(total=total, desc=f"{desc} {label}".strip(), unit=f" {unit}",
                                     file=sys.stderr, leave=False, mininterval=0.2, smoothing=0.1,
                                     initial=done, disable=False)  # a terminal: checked above
        if total is not None and bar.total != total:
            bar.total = total
            bar.refresh()
        if done != bar.n:
            bar.update(done - bar.n)  # update(), not n =: tqdm's rate and ETA come from updates

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
