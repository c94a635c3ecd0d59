"""Embedders: models that turn images (or face/body crops) into L2-normalised float32 vectors."""
from .base import Embedder, l2_normalize
from .registry import available_models, create_embedder

__all__ = ["Embedder", "l2_normalize", "available_models", "create_embedder"]
