"""Detectors: find people (faces) in a photo and return regions with boxes and aligned crops."""
from .faces import FaceDetector, auto_upsample, is_fallback

__all__ = ["FaceDetector", "auto_upsample", "is_fallback"]
