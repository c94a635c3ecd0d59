"""The `peoplemap` command: a thin layer over peoplemap.Library.

Library errors become `Error: ...` with exit code 1 and no traceback. Heavy packages are imported
inside the commands, so `peoplemap --help` is fast and works without any model installed. The
commands live in one module per verb family (index, people, eval); they share only `common`, and
this module registers them, so there is no import cycle.
"""
from __future__ import annotations

import logging

import click

from . import eval as eval_commands
from . import index as index_commands
from . import people as people_commands
from . import review as review_commands
from . import serve as serve_commands
from .common import PeoplemapGroup

__all__ = ["main"]


@click.group(cls=PeoplemapGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-v", "--verbose", count=True, help="Log more (-v info, -vv debug).")
@click.version_option(package_name="peoplemap")
def main(verbose: int) -> None:
    """Find out who is in a pile of images: index a folder, group it by person, search by photo.

    \b
    Example:
      peoplemap index ~/Pictures --library people.lib
      peoplemap cluster --library people.lib
      peoplemap search me.jpg --library people.lib -k 5
      peoplemap ui --library people.lib
    """
    level = logging.WARNING - 10 * min(verbose, 2)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")


for command in (*index_commands.COMMANDS, *people_commands.COMMANDS, *eval_commands.COMMANDS,
                *review_commands.COMMANDS, *serve_commands.COMMANDS):
    main.add_command(command)
del command
