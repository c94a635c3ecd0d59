"""`peoplemap people ...` and `peoplemap library ...`: naming and fixing people, forgetting them,
deleting a library. Thin wrappers over Library."""
from __future__ import annotations

from typing import TYPE_CHECKING, Optional

import click

from .common import library_option, open_library, print_json

if TYPE_CHECKING:
    from ..responses import Person

model_option = click.option("--model", "-m", default=None, help="Vector set (default: the latest indexed).")


def show(p: "Person") -> str:
    """One line for a person: id, label, (hidden), size."""
    hidden = " (hidden)" if p.hidden else ""
    return f"{p.id:5d}  {p.label}{hidden}: {p.size} items"


@click.group()
def people() -> None:
    """List, name, merge, split, hide and forget people (the clusters of a library).

    \b
    Example:
      peoplemap people list --library people.lib
      peoplemap people name 3 "Ada Lovelace" --library people.lib
    """


@people.command("list")
@library_option
@model_option
@click.option("--all", "show_all", is_flag=True, help="Include hidden people.")
@click.option("--json", "as_json", is_flag=True,
              help="Print a JSON array of people: id, name, hidden, size, item_ids.")
def list_cmd(library: str, model: Optional[str], show_all: bool, as_json: bool) -> None:
    """List the people of a library, largest first.

    \b
    Example:
      peoplemap people list --library people.lib --all
      peoplemap people list --library people.lib --json
    """
    found = open_library(library).people(model, include_hidden=show_all)
    if as_json:
        print_json(found)
        return
    if not found:
        click.echo("No people yet: run `peoplemap cluster` first.")
    for p in found:
        click.echo(show(p))


@people.command("name")
@click.argument("person")
@click.argument("name")
@library_option
@model_option
def name_cmd(person: str, name: str, library: str, model: Optional[str]) -> None:
    """Give PERSON (an id or a current name) a NAME; it survives re-indexing and re-clustering.

    \b
    Example:
      peoplemap people name 3 "Ada Lovelace" --library people.lib
    """
    click.echo(show(open_library(library).name_person(person, name, model)))


@people.command("merge")
@click.argument("target")
@click.argument("others", nargs=-1, required=True)
@library_option
@model_option
def merge_cmd(target: str, others: tuple[str, ...], library: str, model: Optional[str]) -> None:
    """Merge OTHERS into TARGET: they are one person.

    \b
    Example:
      peoplemap people merge "Ada Lovelace" 7 12 --library people.lib
    """
    click.echo(show(open_library(library).merge_people(target, list(others), model)))


@people.command("split")
@click.argument("person")
@click.argument("item_ids", nargs=-1, required=True, type=int)
@library_option
@model_option
@click.option("--name", default=None, help="Name for the new person.")
def split_cmd(person: str, item_ids: tuple[int, ...], library: str, model: Optional[str],
              name: Optional[str]) -> None:
    """Move ITEM_IDS out of PERSON into a new person (item ids: `people list --json`).

    \b
    Example:
      peoplemap people split 3 1041 1042 --library people.lib --name "Someone else"
    """
    click.echo(show(open_library(library).split_person(person, list(item_ids), model, name)))


@people.command("hide")
@click.argument("person")
@library_option
@model_option
@click.option("--unhide", is_flag=True, help="Show the person again.")
def hide_cmd(person: str, library: str, model: Optional[str], unhide: bool) -> None:
    """Hide PERSON from lists and the app (nothing is deleted; see `forget`).

    \b
    Example:
      peoplemap people hide 5 --library people.lib
    """
    click.echo(show(open_library(library).hide_person(person, not unhide, model)))


@people.command("forget")
@click.argument("person")
@library_option
@model_option
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
def forget_cmd(person: str, library: str, model: Optional[str], yes: bool) -> None:
    """Delete PERSON's items, face vectors and derived data from the library for good.

    The original photos are not touched.

    \b
    Example:
      peoplemap people forget "Ada Lovelace" --library people.lib --yes
    """
    lib = open_library(library)
    p = lib.person(person, model)
    if not yes:
        click.confirm(f"Forget {p.label} ({p.size} items)? This cannot be undone", abort=True)
    n = lib.forget_person(p.id, model)
    click.echo(f"Forgot {p.label}: {n} items removed. Run `peoplemap cluster` to refresh clusters.")


@click.group("library")
def library_group() -> None:
    """Manage a library as a whole.

    \b
    Example:
      peoplemap library delete --library people.lib --yes
    """


@library_group.command("delete")
@library_option
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
def delete_cmd(library: str, yes: bool) -> None:
    """Delete a library folder completely (vectors, clusters, names). Originals are untouched.

    \b
    Example:
      peoplemap library delete --library people.lib --yes
    """
    lib = open_library(library)
    if not yes:
        click.confirm(f"Delete the library {lib.path} and everything in it?", abort=True)
    path = lib.path
    lib.delete()
    click.echo(f"Deleted {path}")


COMMANDS = [people, library_group]
"""Registered on the `peoplemap` group by `peoplemap.cli`."""
