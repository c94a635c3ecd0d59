"""peoplemap: find out who is in a pile of images.

Nothing heavy is imported here; `Library` and friends load on first use.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .errors import (ImageError, InputError, LibraryBusyError, LibraryError, ModelError,
                     PeoplemapError)
from .types import NOISE, Assignment, Hit, Item, QueryResult, Region

__version__ = "0.1.0"

__all__ = [
    "Library", "NOISE", "Item", "Hit", "Region", "Assignment", "QueryResult",
    "PeoplemapError", "InputError", "ImageError", "ModelError", "LibraryError", "LibraryBusyError",
    "available_models", "create_embedder", "__version__",
]

if TYPE_CHECKING:
    from .embed.registry import available_models, create_embedder
    from .library import Library


def __getattr__(name: str) -> Any:
    if name == "Library":
        from .library import Library
        return Library
    if name in ("available_models", "create_embedder"):
        from .embed import registry
        return getattr(registry, name)
    raise AttributeError(f"module 'peoplemap' has no attribute {name!r}")
