"""Who an item belongs to: the one rule, used after a clustering, when new items are placed, and
when a search query is given a person.

Inputs are the clustering's labels, the current membership (person and whether the user confirmed
it) and the user's decisions; the output says which person each item joins. Nothing here reads or
writes the catalog: the storage layer calls these functions inside its transactions.

The rule:
- A confirmed member (the user merged, split, moved or confirmed it) stays with its person,
  whatever a clustering says.
- A cluster goes to the person that most of its items already belong to (confirmed members vote
  too; ties go to the older person); a cluster with no such items becomes a new person. Several
  clusters may go to one person, so a merge survives re-clustering.
- An item the user rejected from a person ("not this person") never joins that person again: it is
  left without a person instead.
- A new item (indexed after the clustering) joins the person of the cluster it is placed in, under
  the same rejection rule; a search query is given that same person.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping, Optional

from .types import NOISE


@dataclass(frozen=True)
class Member:
    person_id: int
    confirmed: bool


@dataclass
class MembershipPlan:
    """What a clustering changes: unconfirmed items' persons. Person ids below zero stand for
    new people (-1 is the first new person, -2 the second, ...)."""

    rows: list[tuple[int, int]] = field(default_factory=list)
    new_people: int = 0


def owner(votes: Mapping[int, int]) -> Optional[int]:
    """The person most items vote for (ties: the lowest, i.e. oldest, id); None without votes."""
    if not votes:
        return None
    return max(votes.items(), key=lambda kv: (kv[1], -kv[0]))[0]


def after_clustering(labels: Mapping[int, int], current: Mapping[int, Member],
                     rejected: set[tuple[int, int]]) -> MembershipPlan:
    """Persons for the unconfirmed items of a fresh clustering (see the module's rule)."""
    clusters: dict[int, list[int]] = {}
    votes: dict[int, dict[int, int]] = {}
    for item_id, label in labels.items():
        if label == NOISE:
            continue
        m = current.get(item_id)
        if m is not None:
            v = votes.setdefault(label, {})
            v[m.person_id] = v.get(m.person_id, 0) + 1
        if m is None or not m.confirmed:
            clusters.setdefault(label, []).append(item_id)
    plan = MembershipPlan()
    for label in sorted(clusters):
        person = owner(votes.get(label, {}))
        if person is None:
            plan.new_people += 1
            person = -plan.new_people
        plan.rows.extend((i, person) for i in clusters[label] if (i, person) not in rejected)
    return plan


def place(new_labels: Mapping[int, int], votes: Mapping[int, Mapping[int, int]],
          rejected: set[tuple[int, int]]) -> list[tuple[int, int]]:
    """(item id, person id) for new items placed in existing clusters: each joins its cluster's
    owner unless the user rejected it from that person; items in no cluster join no one."""
    owners = {label: owner(v) for label, v in votes.items()}
    out = []
    for item_id, label in new_labels.items():
        person = owners.get(label)
        if label != NOISE and person is not None and (item_id, person) not in rejected:
            out.append((item_id, person))
    return out


def person_of_cluster(votes: Mapping[int, int]) -> Optional[int]:
    """The person a query placed in a cluster is given: the cluster's owner."""
    return owner(votes)
