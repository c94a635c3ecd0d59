"""The words a user reads, in one place for the CLI and the app: what an item is called for each
model ("face", "photo"), counts with the right plural, plain names for models and clustering
profiles, and how a search verdict is phrased (a person, a guess, or nobody).

Technical names (model ids, profile ids, cluster numbers) stay in JSON output and behind a
"technical details" click; this module is what is shown before that click.
"""
from __future__ import annotations

from typing import Optional

NOUNS = {"face": ("face", "faces"), "body": ("person", "people"), "image": ("photo", "photos")}
"""What one item of a model's kind is called (singular, plural)."""

MODEL_LABELS = {
    "face": "Faces (fast)",
    "face-cnn": "Faces (accurate)",
    "body": "Whole people (cut-out figures)",
    "mobilenetv2": "Whole photos (original design)",
}
"""Plain names of the built-in models; `peoplemap models` and the app show the technical
description one step away."""

MODEL_HINTS = {
    "face": "Finds every face in a photo and groups faces by person.",
    "face-cnn": "Like “Faces (fast)”, but finds more faces (turned, small, badly lit); slower.",
    "body": "For photos that each show one whole person (security-camera crops, say).",
    "mobilenetv2": "Compares whole photos by how they look; no face finding.",
}

PROFILE_LABELS = {"default": "Recommended", "seed": "Original design"}
"""Plain names of the clustering profiles (peoplemap.cluster)."""

PROFILE_DETAILS = {
    "default": "HDBSCAN on the unit vectors, min_cluster_size 2, min_samples 2, "
               "cluster_selection_epsilon 0.25; two faces from one photo are never one person.",
    "seed": "StandardScaler, PCA(50), HDBSCAN(min_cluster_size=3): the original design exactly.",
}

GUESS_BELOW = 0.5
"""A search match with a confidence below this is shown as a guess ("probably Ada"), not as a
fact. Confidence (peoplemap.cluster.assign) is the neighbours' vote times closeness, in [0, 1]."""


def noun(kind: str, n: int = 1) -> str:
    """What `n` items of `kind` are called: "face" / "faces"; unknown kinds are "items"."""
    one, many = NOUNS.get(kind, ("item", "items"))
    return one if n == 1 else many


def count(n: int, kind: str) -> str:
    """"1 face", "12 faces", "0 photos"."""
    return f"{n:,} {noun(kind, n)}"


def plural(n: int, one: str, many: Optional[str] = None) -> str:
    """"1 person", "3 people"; "1 file", "2 files" (many defaults to one + "s")."""
    return f"{n:,} {one if n == 1 else (many or one + 's')}"


def model_label(name: str) -> str:
    """A model's plain name ("Faces (fast)"); the id itself for models without one."""
    return MODEL_LABELS.get(name, name)


def profile_label(name: str) -> str:
    return PROFILE_LABELS.get(name, name)


def person_label(name: Optional[str], person_id: Optional[int]) -> Optional[str]:
    """A person as shown everywhere: the name, or "Person 12" (its stable number); None for no
    person. Matches peoplemap.responses.Person.label."""
    if name:
        return name
    return None if person_id is None else f"Person {person_id}"


def verdict(person: Optional[str], confidence: float) -> str:
    """Who a searched face is, in words: "Ada", "probably Ada (a guess)", or "unknown"."""
    if person is None:
        return "unknown"
    if confidence < GUESS_BELOW:
        return f"probably {person} (a guess)"
    return person


def duration(seconds: float) -> str:
    """"45 s", "3 min 05 s", "2 h 04 min": an ETA or an elapsed time."""
    s = max(0, int(round(seconds)))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s // 3600} h {s % 3600 // 60:02d} min"
