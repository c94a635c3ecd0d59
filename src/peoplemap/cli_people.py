"""`peoplemap people ...` and `peoplemap library ...`: naming and fixing people, forgetting them,
deleting a library. Thin wrappers over Library."""
from __future__ import annotations

import json
from typing import Optional

import click

from .cli import LIBRARY_HELP, _open, main

_MODEL = click.option("--model", "-m", default=None,
                      help="Vector set (default: the latest indexed).")
_LIB = click.option("--library", "-l", required=True, help=LIBRARY_HELP)


def _show(p) -> str:
    hidden = " (hidden)" if p.hidden else ""
    return f"{p.id:5d}  {p.label}{hidden}: {p.size} items"


@main.group()
def people() -> None:
    """List, name, merge, split, hide and forget people (the clusters of a library).

    \b
    Example:
      peoplemap people list --library people.lib
      peoplemap people name 3 "Ada Lovelace" --library people.lib
    """


@people.command("list")
@_LIB
@_MODEL
@click.option("--all", "show_all", is_flag=True, help="Include hidden people.")
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
def list_cmd(library: str, model: Optional[str], show_all: bool, as_json: bool) -> None:
    """List the people of a library, largest first.

    \b
    Example:
      peoplemap people list --library people.lib --all
    """
    found = _open(library).people(model, include_hidden=show_all)
    if as_json:
        click.echo(json.dumps([dict(id=p.id, name=p.name, hidden=p.hidden, size=p.size,
                                    item_ids=p.item_ids) for p in found], indent=1, ensure_ascii=False))
        return
    if not found:
        click.echo("No people yet: run `peoplemap cluster` first.")
    for p in found:
        click.echo(_show(p))


@people.command("name")
@click.argument("person")
@click.argument("name")
@_LIB
@_MODEL
def name_cmd(person: str, name: str, library: str, model: Optional[str]) -> None:
    """Give PERSON (an id or a current name) a NAME; it survives re-indexing and re-clustering.

    \b
    Example:
      peoplemap people name 3 "Ada Lovelace" --library people.lib
    """
    click.echo(_show(_open(library).name_person(person, name, model)))


@people.command("merge")
@click.argument("target")
@click.argument("others", nargs=-1, required=True)
@_LIB
@_MODEL
def merge_cmd(target: str, others: tuple[str, ...], library: str, model: Optional[str]) -> None:
    """Merge OTHERS into TARGET: they are one person.

    \b
    Example:
      peoplemap people merge "Ada Lovelace" 7 12 --library people.lib
    """
    click.echo(_show(_open(library).merge_people(target, list(others), model)))


@people.command("split")
@click.argument("person")
@click.argument("item_ids", nargs=-1, required=True, type=int)
@_LIB
@_MODEL
@click.option("--name", default=None, help="Name for the new person.")
def split_cmd(person: str, item_ids: tuple[int, ...], library: str, model: Optional[str],
              name: Optional[str]) -> None:
    """Move ITEM_IDS out of PERSON into a new person (item ids: `people list --json`).

    \b
    Example:
      peoplemap people split 3 1041 1042 --library people.lib --name "Someone else"
    """
    click.echo(_show(_open(library).split_person(person, list(item_ids), model, name)))


@people.command("hide")
@click.argument("person")
@_LIB
@_MODEL
@click.option("--unhide", is_flag=True, help="Show the person again.")
def hide_cmd(person: str, library: str, model: Optional[str], unhide: bool) -> None:
    """Hide PERSON from lists and the app (nothing is deleted; see `forget`).

    \b
    Example:
      peoplemap people hide 5 --library people.lib
    """
    click.echo(_show(_open(library).hide_person(person, not unhide, model)))


@people.command("forget")
@click.argument("person")
@_LIB
@_MODEL
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
def forget_cmd(person: str, library: str, model: Optional[str], yes: bool) -> None:
    """Delete PERSON's items, face vectors and derived data from the library for good.

    The original photos are not touched.

    \b
    Example:
      peoplemap people forget "Ada Lovelace" --library people.lib --yes
    """
    lib = _open(library)
    p = lib.person(person, model)
    if not yes:
        click.confirm(f"Forget {p.label} ({p.size} items)? This cannot be undone", abort=True)
    n = lib.forget_person(p.id, model)
    click.echo(f"Forgot {p.label}: {n} items removed. Run `peoplemap cluster` to refresh clusters.")


@main.group("library")
def library_group() -> None:
    """Manage a library as a whole.

    \b
    Example:
      peoplemap library delete --library people.lib --yes
    """


@library_group.command("delete")
@_LIB
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
def delete_cmd(library: str, yes: bool) -> None:
    """Delete a library folder completely (vectors, clusters, names). Originals are untouched.

    \b
    Example:
      peoplemap library delete --library people.lib --yes
    """
    lib = _open(library)
    if not yes:
        click.confirm(f"Delete the library {lib.path} and everything in it?", abort=True)
    path = lib.path
    lib.delete()
    click.echo(f"Deleted {path}")
