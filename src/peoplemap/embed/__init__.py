"""Models: a detector (what to embed in an image) and an embedder (crops -> L2-normalised float32
vectors) with declared capabilities; a registry of them by name."""
from .base import Detector, Embedder, Model, ModelBase, l2_normalize
from .registry import available_models, create_embedder

__all__ = ["Detector", "Embedder", "Model", "ModelBase", "l2_normalize", "available_models",
           "create_embedder"]
