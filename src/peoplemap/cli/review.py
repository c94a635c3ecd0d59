"""`peoplemap review ...`: finish the people page from the command line: merge suggestions, groups
of unsorted faces to name at once, and the answers peoplemap remembers through re-clustering.
Thin wrappers over Library (peoplemap.review and peoplemap.people)."""
from __future__ import annotations

from typing import Optional

import click

from .common import library_option, open_library, print_json

model_option = click.option("--model", "-m", default=None, help="Vector set (default: the latest indexed).")
items_argument = click.argument("item_ids", nargs=-1, type=int, required=True)


@click.group()
def review() -> None:
    """Suggestions and questions that finish the grouping: answer them and peoplemap keeps the
    answers through every later clustering.

    \b
    Example:
      peoplemap review suggestions --library people.lib
      peoplemap review same 12 17 --library people.lib
      peoplemap review groups --library people.lib --json
      peoplemap review confirm "Ada" 301 302 305 --library people.lib
    """


@review.command("suggestions")
@library_option
@model_option
@click.option("--person", type=int, default=None, help="Only suggestions for this person id.")
@click.option("--limit", type=int, default=20, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print a JSON array of suggestions.")
def suggestions_cmd(library: str, model: Optional[str], person: Optional[int], limit: int,
                    as_json: bool) -> None:
    """People who may be the same person, likeliest first.

    \b
    Example:
      peoplemap review suggestions --library people.lib --limit 10
    """
    lib = open_library(library)
    found = lib.merge_suggestions(model, person=person, limit=limit)
    if as_json:
        print_json(found)
        return
    if not found:
        click.echo("No suggestions: every person looks distinct.")
    names = {p.id: p.label for p in lib.people(model, include_hidden=True)}
    for s in found:
        click.echo(f"{names.get(s.person_id, s.person_id)} and {names.get(s.other_id, s.other_id)}: "
                   f"distance {s.distance:.3f}  (same: `peoplemap review same {s.person_id} "
                   f"{s.other_id}`, different: `peoplemap review different {s.person_id} {s.other_id}`)")


@review.command("groups")
@library_option
@model_option
@click.option("--limit", type=int, default=20, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print a JSON array of review groups.")
def groups_cmd(library: str, model: Optional[str], limit: int, as_json: bool) -> None:
    """Unsorted and uncertain faces, grouped by likeness, each with the person they most resemble.

    \b
    Example:
      peoplemap review groups --library people.lib --json
    """
    found = open_library(library).review_groups(model, limit=limit)
    if as_json:
        print_json(found)
        return
    if not found:
        click.echo("Nothing to review.")
    for g in found:
        who = g.candidate_name or (f"Person {g.candidate_id}" if g.candidate_id else "nobody yet")
        n = len(g.item_ids)
        click.echo(f"{n} {g.kind} face{'s' if n != 1 else ''}, {'are these' if n > 1 else 'is this'} "
                   f"{who}? faces {' '.join(map(str, g.item_ids))}")


@review.command("same")
@click.argument("person")
@click.argument("others", nargs=-1, required=True)
@library_option
@model_option
def same_cmd(person: str, others: tuple[str, ...], library: str, model: Optional[str]) -> None:
    """Answer a suggestion: these people are one person (merged into PERSON).

    \b
    Example:
      peoplemap review same 12 17 --library people.lib
    """
    p = open_library(library).merge_people(person, list(others), model)
    click.echo(f"Merged into {p.label}: {p.size} faces")


@review.command("different")
@click.argument("person")
@click.argument("other")
@library_option
@model_option
def different_cmd(person: str, other: str, library: str, model: Optional[str]) -> None:
    """Answer a suggestion: two different people (never suggested or merged together again).

    \b
    Example:
      peoplemap review different 12 17 --library people.lib
    """
    open_library(library).mark_different(person, other, model)
    click.echo(f"Remembered: {person} and {other} are different people")


@review.command("confirm")
@click.argument("person")
@items_argument
@library_option
@model_option
def confirm_cmd(person: str, item_ids: tuple[int, ...], library: str, model: Optional[str]) -> None:
    """These faces are PERSON (from wherever they were), for good.

    \b
    Example:
      peoplemap review confirm "Ada" 301 302 305 --library people.lib
    """
    p = open_library(library).confirm_items(person, list(item_ids), model)
    click.echo(f"{p.label}: {p.size} faces")


@review.command("reject")
@click.argument("person")
@items_argument
@library_option
@model_option
def reject_cmd(person: str, item_ids: tuple[int, ...], library: str, model: Optional[str]) -> None:
    """Not this person: the faces leave PERSON and are never put back.

    \b
    Example:
      peoplemap review reject "Ada" 318 --library people.lib
    """
    p = open_library(library).reject_items(person, list(item_ids), model)
    click.echo(f"Removed {len(item_ids)} face(s) from {person}" + (f"; {p.label} has {p.size}" if p else ""))


@review.command("new")
@items_argument
@library_option
@model_option
@click.option("--name", default=None, help="Name the new person at once.")
def new_cmd(item_ids: tuple[int, ...], library: str, model: Optional[str], name: Optional[str]) -> None:
    """Make a new person of these faces (naming many faces at once).

    \b
    Example:
      peoplemap review new 401 402 403 --name "Grace Hopper" --library people.lib
    """
    p = open_library(library).new_person(list(item_ids), name, model)
    click.echo(f"New person {p.label}: {p.size} faces")


COMMANDS = [review]
