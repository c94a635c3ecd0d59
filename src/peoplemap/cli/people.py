"""`peoplemap people ...` and `peoplemap library ...`: naming and fixing people, forgetting them,
deleting a library. Thin wrappers over Library."""
from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Optional

import click

from ..errors import InputError, NameTakenError
from ..wording import count
from .common import library_option, open_library, print_json

if TYPE_CHECKING:
    from ..library import Library
    from ..responses import Person

model_option = click.option("--model", "-m", default=None, help="Vector set (default: the latest indexed).")


def show(p: "Person", kind: str = "face") -> str:
    """One line for a person: its label ("Ada", or "Person 12": its stable number, which every
    command takes), its number when named, (hidden), its size."""
    number = f" (Person {p.id})" if p.name else ""
    hidden = " (hidden)" if p.hidden else ""
    return f"{p.label}{number}{hidden}: {count(p.size, kind)}"


def _kind(lib: "Library", model: Optional[str]) -> str:
    return lib.vector_set(model).item_kind


@click.group()
def people() -> None:
    """List, name, merge, split, hide and forget people (the groups `peoplemap cluster` made).

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
    lib = open_library(library)
    found = lib.people(model, include_hidden=show_all)
    if as_json:
        print_json(found)
        return
    if not found:
        click.echo("No people yet: run `peoplemap cluster` first.")
    kind = _kind(lib, model)
    for p in found:
        click.echo(show(p, kind))


@people.command("name")
@click.argument("person")
@click.argument("name")
@library_option
@model_option
@click.option("--merge", "same", flag_value="merge", default=None,
              help="If someone else already has NAME, they are the same person: merge the two.")
@click.option("--keep-apart", "same", flag_value="keep_apart",
              help="If someone else already has NAME, they are different people: this one is "
                   "named NAME (2) (the first free number).")
def name_cmd(person: str, name: str, library: str, model: Optional[str], same: Optional[str]) -> None:
    """Give PERSON (its number, "Person 12", or its current name) a NAME; the name survives
    re-indexing and re-clustering.

    If another person already has NAME, you are asked whether they are the same person (merge)
    or not (keep apart); --merge or --keep-apart answer ahead, as scripts must.

    \b
    Example:
      peoplemap people name 3 "Ada Lovelace" --library people.lib
      peoplemap people name 7 "Ada Lovelace" --merge --library people.lib
    """
    lib = open_library(library)
    kind = _kind(lib, model)
    try:
        p = lib.name_person(person, name, model, on_duplicate=same or "error")
    except NameTakenError as e:
        who = " and ".join(show(o, kind) for o in e.others)
        if not sys.stdin.isatty():
            raise InputError(f"{e.name!r} is already the name of {who}. Run this again with "
                             "--merge if they are the same person, or with --keep-apart if not") from None
        this = lib.person(person, model)
        click.echo(f"{e.name!r} is already the name of {who}.")
        answer = click.prompt(f"Is {this.label} the same person? [m]erge them / [k]eep them apart "
                              "/ [c]ancel", type=click.Choice(["m", "k", "c"]), show_choices=False)
        if answer == "c":
            click.echo("Nothing changed.")
            return
        p = lib.name_person(this.id, name, model, on_duplicate="merge" if answer == "m" else "keep_apart")
        if answer == "m":
            click.echo(f"Merged {this.label} into {p.label}.")
    click.echo(show(p, kind))


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
    lib = open_library(library)
    click.echo(show(lib.merge_people(target, list(others), model), _kind(lib, model)))


@people.command("split")
@click.argument("person")
@click.argument("item_ids", nargs=-1, required=True, type=int)
@library_option
@model_option
@click.option("--name", default=None, help="Name for the new person.")
def split_cmd(person: str, item_ids: tuple[int, ...], library: str, model: Optional[str],
              name: Optional[str]) -> None:
    """Move faces ITEM_IDS out of PERSON into a new person (their numbers: `people list --json`).

    \b
    Example:
      peoplemap people split 3 1041 1042 --library people.lib --name "Someone else"
    """
    lib = open_library(library)
    click.echo(show(lib.split_person(person, list(item_ids), model, name), _kind(lib, model)))


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
    lib = open_library(library)
    click.echo(show(lib.hide_person(person, not unhide, model), _kind(lib, model)))


@people.command("forget")
@click.argument("person")
@library_option
@model_option
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
def forget_cmd(person: str, library: str, model: Optional[str], yes: bool) -> None:
    """Delete PERSON's faces and what was computed from them from the library, for good.

    The original photos are not touched.

    \b
    Example:
      peoplemap people forget "Ada Lovelace" --library people.lib --yes
    """
    lib = open_library(library)
    p = lib.person(person, model)
    kind = _kind(lib, model)
    if not yes:
        click.confirm(f"Forget {p.label} ({count(p.size, kind)})? This cannot be undone", abort=True)
    n = lib.forget_person(p.id, model)
    click.echo(f"Forgot {p.label}: {count(n, kind)} removed. Run `peoplemap cluster` to regroup.")


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
