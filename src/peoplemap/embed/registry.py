"""Name -> factory registry of models. Unknown names list the valid ones."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from ..errors import ModelError
from .base import Model, check_model


@dataclass(frozen=True)
class ModelInfo:
    name: str
    description: str
    factory: Callable[..., Model]


_REGISTRY: dict[str, ModelInfo] = {}


def register(name: str, description: str) -> Callable[[Callable[..., Model]], Callable[..., Model]]:
    """Decorator: make a factory available under `name`."""

    def deco(factory: Callable[..., Model]) -> Callable[..., Model]:
        _REGISTRY[name] = ModelInfo(name, description, factory)
        return factory

    return deco


def _load_builtin() -> None:
    # Importing a model module registers it; the modules import their heavy packages lazily.
    from . import mobilenetv2  # noqa: F401
    for optional in ("face", "body", "onnx_model"):
        try:
            __import__(f"{__package__}.{optional}")
        except ModuleNotFoundError as e:
            if e.name != f"{__package__}.{optional}":
                raise


def available_models() -> dict[str, str]:
    """Registered model names with a one-line description."""
    _load_builtin()
    return {name: info.description for name, info in sorted(_REGISTRY.items())}


def create_embedder(name: str, **options: Any) -> Model:
    """Build the model registered as `name` ("onnx:PATH" builds a user-supplied ONNX model);
    ModelError when it does not declare its capabilities (see base.ModelBase)."""
    _load_builtin()
    if name.startswith("onnx:") and "onnx" in _REGISTRY:
        return check_model(_REGISTRY["onnx"].factory(path=name[len("onnx:"):], **options))
    info = _REGISTRY.get(name)
    if info is None:
        valid = sorted(n for n in _REGISTRY if n != "onnx") + (["onnx:PATH"] if "onnx" in _REGISTRY else [])
        raise ModelError(f"Unknown model: {name!r}. Must be one of {valid}")
    return check_model(info.factory(**options))
