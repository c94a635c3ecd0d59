"""Synthetic photo-sized JPEGs for decode-heavy benchmarks (generated, so free to use anywhere).

    python benchmarks/make_jpegs.py [--out /tmp/peoplemap-bench/jpeg12mp] [--n 200] [--size 4000x3000]

Each image is smooth colour gradients (a low-resolution random field upsampled), a few filled shapes
and per-pixel noise, saved at quality 90, 4:2:0: about the size and entropy of a phone photo, so
decoding costs what it costs on real photos. Files that already exist are kept.
"""
from __future__ import annotations

import argparse
import os
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

DEFAULT_OUT = Path("/tmp/peoplemap-bench/jpeg12mp")


def make_image(seed: int, width: int, height: int) -> Image.Image:
    rng = np.random.default_rng(seed)
    # Smooth background: an 8x6 colour field, bicubic-upsampled to full size.
    field = rng.integers(30, 225, size=(6, 8, 3), dtype=np.uint8)
    img = Image.fromarray(field).resize((width, height), Image.Resampling.BICUBIC)
    draw = ImageDraw.Draw(img)
    for _ in range(int(rng.integers(12, 30))):
        x0, y0 = int(rng.integers(0, width)), int(rng.integers(0, height))
        w, h = int(rng.integers(width // 30, width // 4)), int(rng.integers(height // 30, height // 3))
        colour = tuple(int(c) for c in rng.integers(0, 256, size=3))
        box = (x0, y0, x0 + w, y0 + h)
        (draw.ellipse if rng.random() < 0.5 else draw.rectangle)(box, fill=colour)
    img = img.filter(ImageFilter.GaussianBlur(2))  # soft edges, like a lens
    # Sensor-like noise, generated at 1/2 resolution to keep generation quick, plus fine grain.
    a = np.asarray(img, dtype=np.int16)
    coarse = rng.normal(0, 6, size=(height // 2, width // 2, 1)).astype(np.int16)
    a = a + np.repeat(np.repeat(coarse, 2, axis=0), 2, axis=1)[:height, :width]
    a = a + rng.integers(-4, 5, size=a.shape, dtype=np.int16)
    return Image.fromarray(np.clip(a, 0, 255).astype(np.uint8))


def ensure_jpegs(out: Path = DEFAULT_OUT, n: int = 200, width: int = 4000, height: int = 3000,
                 quality: int = 90) -> list[Path]:
    """The n JPEGs under out (named img_0000.jpg ...), generating the ones missing."""
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        p = out / f"img_{i:04d}.jpg"
        if not p.exists():
            tmp = p.with_suffix(".tmp")
            make_image(i, width, height).save(tmp, "JPEG", quality=quality, subsampling=2)
            os.replace(tmp, p)
        paths.append(p)
    return paths


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    ap.add_argument("--n", type=int, default=200)
    ap.add_argument("--size", default="4000x3000", help="WIDTHxHEIGHT")
    args = ap.parse_args()
    w, h = (int(v) for v in args.size.lower().split("x"))
    paths = ensure_jpegs(args.out, args.n, w, h)
    sizes = [p.stat().st_size for p in paths]
    print(f"{len(paths)} JPEGs in {args.out}, median {sorted(sizes)[len(sizes) // 2] / 1e6:.2f} MB")


if __name__ == "__main__":
    main()
