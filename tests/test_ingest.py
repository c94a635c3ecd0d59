"""ingest: scan, read, sniff, decode. Every image is generated here in tmp_path."""
from __future__ import annotations

import hashlib
import io
import os
import struct
import time
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageOps

from peoplemap import ingest
from peoplemap.config import Settings
from peoplemap.errors import ImageError, InputError
from peoplemap.ingest import DecodedImage, FileEntry, Skipped, decode_image, read_image, scan, sniff_format

RED, GREEN, BLUE, WHITE = (255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 255)
SETTINGS = Settings(cache_dir="/nonexistent-cache")


def encode(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


def decode(data: bytes, **kw) -> DecodedImage:
    return decode_image(data, settings=SETTINGS, **kw)


def reason_of(data: bytes, **kw) -> str:
    with pytest.raises(ImageError) as ei:
        decode(data, **kw)
    return ei.value.reason


def marked(w: int = 40, h: int = 20) -> Image.Image:
    """Blue image with a red block in the top-left corner."""
    img = Image.new("RGB", (w, h), BLUE)
    img.paste(RED, (0, 0, w // 4, h // 4))
    return img


def close(pixel, colour, tol: int = 12) -> bool:
    return bool(np.all(np.abs(np.asarray(pixel, int) - np.asarray(colour, int)) <= tol))


def check_rgb(d: DecodedImage) -> None:
    assert d.pixels.dtype == np.uint8 and d.pixels.ndim == 3 and d.pixels.shape[2] == 3
    assert d.pixels.flags.c_contiguous


def png_header_only(w: int, h: int) -> bytes:
    """A PNG whose valid IHDR declares w x h, followed by a tiny IDAT: cheap to write, huge to decode."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
    ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 16)) + chunk(b"IEND", b"")


# ------------------------------------------------------------------------------------ formats
@pytest.mark.parametrize("fmt, kw, sniffed", [
    ("JPEG", {"quality": 95}, "JPEG"),
    ("PNG", {}, "PNG"),
    ("WEBP", {"lossless": True}, "WEBP"),
    ("BMP", {}, "BMP"),
    ("GIF", {}, "GIF"),
    ("TIFF", {}, "TIFF"),
    ("PPM", {}, "PPM"),
])
def test_each_format_decodes(fmt, kw, sniffed):
    d = decode(encode(marked(), fmt, **kw))
    check_rgb(d)
    assert d.format == sniffed and (d.width, d.height) == (40, 20) and d.pixels.shape == (20, 40, 3)
    assert d.scale == 1.0
    assert close(d.pixels[1, 1], RED, 20) and close(d.pixels[-1, -1], BLUE, 20)


def test_gif_first_frame_of_animation():
    frames = [Image.new("RGB", (16, 16), c) for c in (RED, GREEN, BLUE)]
    data = encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)
    assert Image.open(io.BytesIO(data)).n_frames == 3
    d = decode(data)
    assert d.format == "GIF" and close(d.pixels[8, 8], RED, 0)


def test_tiff_first_page_of_many():
    pages = [Image.new("RGB", (16, 12), GREEN), Image.new("RGB", (30, 30), BLUE)]
    data = encode(pages[0], "TIFF", save_all=True, append_images=pages[1:])
    assert Image.open(io.BytesIO(data)).n_frames == 2
    d = decode(data)
    assert d.format == "TIFF" and d.pixels.shape == (12, 16, 3) and close(d.pixels[5, 5], GREEN, 0)


def test_pnm_variants():
    g8 = np.array([[0, 128, 255]], np.uint8)
    d = decode(b"P5\n3 1\n255\n" + g8.tobytes())
    assert d.format == "PGM" and d.pixels[0, :, 0].tolist() == [0, 128, 255]
    assert (d.pixels[..., 0] == d.pixels[..., 2]).all()

    g16 = np.array([[0, 1000, 32768, 65535]], np.uint16)
    d = decode(b"P5\n4 1\n65535\n" + g16.astype(">u2").tobytes())
    assert d.format == "PGM" and d.pixels[0, :, 0].tolist() == [0, 4, 128, 255]  # scaled, not clipped

    rgb = np.array([[RED, GREEN]], np.uint8)
    d = decode(b"P6\n2 1\n255\n" + rgb.tobytes())
    assert d.format == "PPM" and d.pixels[0].tolist() == [list(RED), list(GREEN)]

    d = decode(b"P3\n2 1\n255\n255 0 0  0 0 255\n")
    assert d.format == "PPM" and d.pixels[0].tolist() == [list(RED), list(BLUE)]

    d = decode(b"P4\n8 1\n" + bytes([0b10100000]))  # PBM: 1 = black
    assert d.format == "PBM" and d.pixels[0, :3, 0].tolist() == [0, 255, 0]


# --------------------------------------------------------------------------------- colour modes
def test_grey_jpeg_and_png():
    g = Image.new("L", (8, 8), 200)
    for fmt in ("JPEG", "PNG"):
        d = decode(encode(g, fmt))
        check_rgb(d)
        assert close(d.pixels[4, 4], (200, 200, 200), 2)


def test_cmyk_jpeg_keeps_colour():
    img = Image.new("CMYK", (16, 16), (0, 255, 255, 0))  # pure red in CMYK
    img.paste((0, 0, 0, 0), (0, 0, 8, 16))  # no ink: white
    d = decode(encode(img, "JPEG", quality=95))
    check_rgb(d)
    assert close(d.pixels[8, 2], WHITE) and close(d.pixels[8, 13], RED)


def test_16bit_png_scaled_not_clipped():
    a = np.array([[0, 1000, 32768, 65535]], np.uint16)
    img = Image.fromarray(a)
    assert img.mode == "I;16"
    d = decode(encode(img, "PNG"))
    check_rgb(d)
    assert d.pixels[0, :, 0].tolist() == [0, 4, 128, 255]


def test_palette_with_transparency_over_white():
    img = Image.new("P", (8, 8), 0)
    img.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    img.paste(1, (4, 0, 8, 8))
    d = decode(encode(img, "PNG", transparency=0))
    check_rgb(d)
    assert close(d.pixels[0, 0], WHITE, 0) and close(d.pixels[0, 6], RED, 0)


def test_rgba_composited_over_white():
    img = Image.new("RGBA", (8, 8), (0, 0, 0, 0))
    img.paste((255, 255, 255, 255), (0, 0, 2, 8))
    img.paste((0, 0, 255, 255), (2, 0, 4, 8))
    img.paste((0, 0, 0, 128), (4, 0, 8, 8))
    d = decode(encode(img, "PNG"))
    assert close(d.pixels[0, 0], WHITE, 0) and close(d.pixels[0, 3], BLUE, 0)
    assert close(d.pixels[0, 6], (127, 127, 127), 1)
    d = decode(encode(Image.new("LA", (4, 4), (0, 0)), "PNG"))
    assert close(d.pixels[1, 1], WHITE, 0)


def test_float_bilevel_and_lab_modes():
    d = decode(encode(Image.new("1", (8, 8), 1), "TIFF"))
    assert close(d.pixels[0, 0], WHITE, 0)
    d = decode(encode(Image.new("LAB", (4, 4), (255, 128, 128)), "TIFF"))  # L*=100: white
    assert close(d.pixels[0, 0], WHITE, 3)
    f = Image.fromarray(np.array([[0.0, 0.5, 1.0]], np.float32))
    d = decode(encode(f, "TIFF"))
    assert d.pixels[0, :, 0].tolist() == [0, 128, 255]


# ---------------------------------------------------------------------------------- orientation
def with_orientation(img: Image.Image, value: int, fmt: str = "PNG", **kw) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = value
    return encode(img, fmt, exif=exif, **kw)


def test_orientation_6_rotates_jpeg():
    d = decode(with_orientation(marked(40, 20), 6, "JPEG", quality=95))
    assert d.pixels.shape == (40, 20, 3) and (d.width, d.height) == (20, 40)
    # stored top-left is displayed top-right after a clockwise quarter turn
    assert close(d.pixels[2, -2], RED, 30) and close(d.pixels[2, 2], BLUE, 30)


@pytest.mark.parametrize("value", range(1, 9))
def test_every_orientation_matches_pillow(value):
    data = with_orientation(marked(40, 20), value)
    d = decode(data)
    expected = np.asarray(ImageOps.exif_transpose(Image.open(io.BytesIO(data))).convert("RGB"))
    assert np.array_equal(d.pixels, expected)
    assert (d.width, d.height) == (expected.shape[1], expected.shape[0])


@pytest.mark.parametrize("value", [0, 9, 99])
def test_out_of_range_orientation_ignored(value):
    d = decode(with_orientation(marked(40, 20), value, "JPEG"))
    assert d.pixels.shape == (20, 40, 3) and (d.width, d.height) == (40, 20)
    assert close(d.pixels[1, 1], RED, 30)


# --------------------------------------------------------------------------------- draft decode
def test_draft_decodes_large_jpeg_reduced():
    big = Image.new("RGB", (4000, 3000), BLUE)
    big.paste(RED, (0, 0, 1000, 750))
    data = encode(big, "JPEG", quality=80)
    t = time.perf_counter()
    d = decode(data, min_side=224)
    assert time.perf_counter() - t < 2
    assert (d.width, d.height) == (4000, 3000)
    assert min(d.pixels.shape[:2]) >= 224 and d.pixels.shape[:2] == (375, 500)
    assert d.scale == pytest.approx(1 / 8)
    assert close(d.pixels[10, 10], RED, 20) and close(d.pixels[-10, -10], BLUE, 20)

    d = decode(data, min_side=1000)  # 1/2 is the largest reduction keeping 1500 >= 1000
    assert d.pixels.shape[:2] == (1500, 2000) and d.scale == pytest.approx(0.5)
    assert decode(data, min_side=5000).pixels.shape[:2] == (3000, 4000)


def test_draft_with_orientation_reports_oriented_original():
    data = with_orientation(marked(1600, 1200), 6, "JPEG", quality=80)
    d = decode(data, min_side=224)
    assert (d.width, d.height) == (1200, 1600)
    assert d.pixels.shape[:2] == (400, 300) and min(d.pixels.shape[:2]) >= 224
    assert close(d.pixels[5, -5], RED, 30)


def test_min_side_reduces_other_formats_by_an_integer_factor():
    d = decode(encode(marked(800, 600), "PNG"), min_side=100)
    assert d.pixels.shape[:2] == (100, 134) and d.scale == pytest.approx(134 / 800)  # ceil(800 / 6)
    d = decode(encode(marked(800, 600), "PNG"), min_side=400)  # factor 1: untouched
    assert d.pixels.shape[:2] == (600, 800) and d.scale == 1.0


def test_bad_min_side_is_input_error():
    with pytest.raises(InputError, match="min_side"):
        decode(encode(marked(), "PNG"), min_side=0)


# ----------------------------------------------------------------------------------- bad input
def test_sniff_format():
    assert sniff_format(encode(marked(), "PNG")[:32]) == "PNG"
    assert sniff_format(encode(marked(), "JPEG")[:32]) == "JPEG"
    assert sniff_format(encode(marked(), "WEBP")[:32]) == "WEBP"
    assert sniff_format(encode(marked(), "BMP")[:32]) == "BMP"
    assert sniff_format(b"BM is how this text starts") is None
    assert sniff_format(b"Photos of Paul") is None
    assert sniff_format(b"") is None


def test_content_not_extension(tmp_path):
    p = tmp_path / "really-a-png.jpg"
    p.write_bytes(encode(marked(), "PNG"))
    assert read_image(p, settings=SETTINGS)[1].format == "PNG"

    t = tmp_path / "notes.png"
    t.write_text("these are my holiday notes\n")
    with pytest.raises(ImageError) as ei:
        read_image(t, settings=SETTINGS)
    assert "not an image" in ei.value.reason and "text" in ei.value.reason
    assert ei.value.path == str(t)


def test_not_image_hints():
    assert "PDF" in reason_of(b"%PDF-1.7\n...")
    assert "HEIC" in reason_of(b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic")
    assert "not an image" in reason_of(b"<html><body>hi</body></html>")


def test_zero_byte(tmp_path):
    p = tmp_path / "empty.jpg"
    p.write_bytes(b"")
    with pytest.raises(ImageError, match="empty file"):
        read_image(p, settings=SETTINGS)
    assert reason_of(b"") == "empty file"


def test_truncated_jpeg():
    data = encode(Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), np.uint8)), "JPEG")
    assert reason_of(data[: len(data) // 2]).startswith("truncated or corrupt image")
    assert reason_of(data[:12]).startswith("truncated or corrupt image")


def test_corrupt_png_body():
    data = bytearray(encode(marked(), "PNG"))
    data[40:60] = b"\x00" * 20
    assert reason_of(bytes(data)).startswith("truncated or corrupt image")


def test_random_bytes():
    data = np.random.default_rng(1).integers(0, 256, 4096, np.uint8).tobytes()
    assert reason_of(data).startswith("not an image")


def test_decompression_bomb_refused_before_decoding():
    data = png_header_only(50000, 50000)
    t = time.perf_counter()
    r = reason_of(data)
    assert time.perf_counter() - t < 0.5
    assert "too large" in r and "2500000000" in r


def test_bomb_between_pillow_limits_names_size():
    # 150M pixels: Pillow only warns here; with warnings as errors nothing but ImageError may escape
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        r = reason_of(png_header_only(15000, 10000))
    assert r == "image too large: 15000x10000 = 150000000 pixels (limit 100000000)"
    small = Settings(cache_dir="/x", max_image_pixels=1000)
    with pytest.raises(ImageError, match=r"too large: 40x40 = 1600 pixels \(limit 1000\)"):
        decode_image(encode(marked(40, 40), "PNG"), settings=small)


def test_file_too_large_refused_without_reading(tmp_path, monkeypatch):
    p = tmp_path / "big.png"
    p.write_bytes(encode(marked(), "PNG"))
    monkeypatch.setattr(ingest.os, "fdopen", lambda *a, **k: pytest.fail("file was read"), raising=True)
    with pytest.raises(ImageError, match="file too large"):
        read_image(p, settings=Settings(cache_dir="/x", max_file_bytes=10))


def test_read_errors(tmp_path, monkeypatch):
    d = tmp_path / "x.jpg"
    d.mkdir()
    with pytest.raises(ImageError, match="not a regular file"):
        read_image(d, settings=SETTINGS)
    with pytest.raises(ImageError, match="file disappeared"):
        read_image(tmp_path / "gone.jpg", settings=SETTINGS)

    p = tmp_path / "locked.png"
    p.write_bytes(encode(marked(), "PNG"))

    def denied(*a, **k):
        raise PermissionError(13, "Permission denied")
    monkeypatch.setattr(ingest.os, "open", denied)
    with pytest.raises(ImageError, match="permission denied"):
        read_image(p, settings=SETTINGS)


def test_read_image_hash_matches_bytes(tmp_path):
    data = encode(marked(), "JPEG")
    p = tmp_path / "a.jpg"
    p.write_bytes(data)
    digest, img = read_image(p, settings=SETTINGS)
    assert digest == hashlib.sha256(data).hexdigest() == ingest.sha256_bytes(data)
    assert img.format == "JPEG" and img.pixels.shape == (20, 40, 3)


def test_read_image_uses_env_settings(tmp_path, monkeypatch):
    p = tmp_path / "a.png"
    p.write_bytes(encode(marked(), "PNG"))
    monkeypatch.setenv("PEOPLEMAP_MAX_IMAGE_PIXELS", "100")
    with pytest.raises(ImageError, match="too large"):
        read_image(p)


# ------------------------------------------------------------------------------------------ scan
def collect(root, **kw) -> tuple[list[str], list[Skipped]]:
    skipped: list[Skipped] = []
    found = [e.path for e in scan(root, on_skip=skipped.append, **kw)]
    return found, skipped


def test_scan_recursive_sorted_hidden_skipped(tmp_path):
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "z.png").write_bytes(b"1")
    (tmp_path / "b" / "a.txt").write_bytes(b"22")
    (tmp_path / "a.jpg").write_bytes(b"x")
    (tmp_path / ".hidden.jpg").write_bytes(b"x")
    (tmp_path / ".cache").mkdir()
    (tmp_path / ".cache" / "c.jpg").write_bytes(b"x")
    (tmp_path / "c" / "x.jpg").mkdir(parents=True)  # a folder named like an image

    entries = list(scan(tmp_path))
    assert all(isinstance(e, FileEntry) and os.path.isabs(e.path) for e in entries)
    assert [os.path.relpath(e.path, tmp_path) for e in entries] == ["a.jpg", "b/a.txt", "b/z.png"]
    assert entries[1].size == 2 and entries[1].mtime == pytest.approx(os.stat(entries[1].path).st_mtime)
    assert [e.path for e in scan(str(tmp_path))] == [e.path for e in entries]  # deterministic


def test_scan_odd_names(tmp_path):
    names = ["with space.png", "ünïcødé-😀.png", "new\nline.png"]
    for n in names:
        (tmp_path / n).write_bytes(encode(marked(), "PNG"))
    found, skipped = collect(tmp_path)
    assert sorted(os.path.basename(p) for p in found) == sorted(names) and not skipped
    for p in found:
        assert read_image(p, settings=SETTINGS)[1].format == "PNG"


def test_scan_symlinks(tmp_path):
    root = tmp_path / "root"
    (root / "sub").mkdir(parents=True)
    (root / "sub" / "img.png").write_bytes(b"x")
    (root / "sub" / "up").symlink_to(root)  # loop back to the root
    (root / "broken.jpg").symlink_to(tmp_path / "nowhere.jpg")
    (root / "self").symlink_to(root / "self")  # ELOOP
    (root / "link.png").symlink_to(root / "sub" / "img.png")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "o.png").write_bytes(b"x")
    (root / "alias").symlink_to(outside)

    found, skipped = collect(root)
    rel = [os.path.relpath(p, root) for p in found]
    assert rel == ["alias/o.png", "link.png", "sub/img.png"]
    reasons = {os.path.relpath(s.path, root): s.reason for s in skipped}
    assert reasons == {"broken.jpg": "broken symlink", "self": "symlink loop", "sub/up": "symlink loop"}


def test_scan_folder_reached_twice_scanned_once(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "x.png").write_bytes(b"x")
    (tmp_path / "b").symlink_to(tmp_path / "a")
    found, skipped = collect(tmp_path)
    assert found == [str(tmp_path / "a" / "x.png")]
    assert [(s.path, "already scanned" in s.reason) for s in skipped] == [(str(tmp_path / "b"), True)]


def test_scan_unreadable_dir_reported(tmp_path, monkeypatch):
    (tmp_path / "ok.png").write_bytes(b"x")
    locked = tmp_path / "locked"
    locked.mkdir()
    (locked / "in.png").write_bytes(b"x")
    real = os.scandir

    def scandir(path="."):
        if os.fspath(path) == str(locked):
            raise PermissionError(13, "Permission denied", str(path))
        return real(path)
    monkeypatch.setattr(ingest.os, "scandir", scandir)
    found, skipped = collect(tmp_path)
    assert [os.path.basename(p) for p in found] == ["ok.png"]
    assert skipped == [Skipped(str(locked), "cannot list folder: permission denied")]


def test_scan_chmod_000_dir(tmp_path):
    """Real permissions: as root chmod 000 does not stop listing, so assert what actually happens."""
    locked = tmp_path / "locked"
    locked.mkdir()
    (locked / "in.png").write_bytes(b"x")
    locked.chmod(0)
    try:
        try:
            os.listdir(locked)
            listable = True  # root, or a filesystem that ignores modes
        except PermissionError:
            listable = False
        found, skipped = collect(tmp_path)
    finally:
        locked.chmod(0o755)
    if listable:
        assert [os.path.basename(p) for p in found] == ["in.png"] and not skipped
    else:
        assert not found and skipped == [Skipped(str(locked), "cannot list folder: permission denied")]


def test_scan_special_file_reported(tmp_path):
    os.mkfifo(tmp_path / "pipe")
    found, skipped = collect(tmp_path)
    assert not found and skipped == [Skipped(str(tmp_path / "pipe"), "not a regular file")]
    with pytest.raises(ImageError, match="not a regular file"):  # and reading it does not hang
        read_image(tmp_path / "pipe", settings=SETTINGS)


def test_scan_bad_root(tmp_path):
    with pytest.raises(InputError, match="folder not found"):
        scan(tmp_path / "missing")
    f = tmp_path / "file.jpg"
    f.write_bytes(b"x")
    with pytest.raises(InputError, match="not a folder"):
        scan(f)


def test_file_deleted_between_scan_and_read(tmp_path):
    p = tmp_path / "a.png"
    p.write_bytes(encode(marked(), "PNG"))
    (entry,) = scan(tmp_path)
    p.unlink()
    with pytest.raises(ImageError) as ei:
        read_image(entry.path, settings=SETTINGS)
    assert ei.value.reason == "file disappeared" and ei.value.path == entry.path


def test_large_png_is_reduced_to_model_size_but_keeps_original_size(tmp_path):
    """Non-JPEG images are shrunk by an integer factor so memory stays bounded."""
    import numpy as np
    from PIL import Image

    from peoplemap.ingest import read_image

    p = tmp_path / "big.png"
    Image.fromarray(np.full((3000, 4000, 3), 200, np.uint8)).save(p)
    _sha, img = read_image(p, min_side=224)
    assert (img.width, img.height) == (4000, 3000)
    assert min(img.pixels.shape[:2]) >= 224 and img.pixels.shape[0] < 3000 // 6
    assert img.scale == img.pixels.shape[1] / 4000
    assert int(img.pixels.mean()) == 200
