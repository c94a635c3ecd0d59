"""Nothing lost, nothing let in: a folder of hostile and odd inputs, generated here, indexed whole.

Every bad input must end up in the summary's skipped list with the right reason, every good one
must be indexed, the counts must add up, and memory must stay bounded (a decompression bomb is
refused from its header, before any pixel is decoded).

Unreadable files: the tests run as root, and root reads a chmod-000 file anyway. So
`test_hostile_corpus_as_other_user` runs the index in a child process that drops to the `nobody`
user (os.setuid, when we are root), where the kernel really refuses the read. The in-process tests
simulate the same refusal by making os.open raise EACCES for that one path (what the kernel does
for a non-root user); when the suite runs as a non-root user, chmod 000 is enough on its own.
"""
from __future__ import annotations

import errno
import io
import json
import os
import struct
import subprocess
import sys
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
from PIL import Image

import peoplemap.indexing
from peoplemap import Library

TESTS = Path(__file__).resolve().parent
RSS_GROWTH_LIMIT_MB = 300
"""Peak RSS growth allowed for indexing the whole corpus (the bomb alone would need ~7.5 GB)."""
BIG_SIDE = 8000
"""The very large but valid JPEG: 8000 x 8000 (64 Mpixel), under the 100 Mpixel limit."""
SPARSE_BYTES = 600 * 1024 * 1024
"""A sparse file over the 512 MiB file-size limit: no disk used, refused without being read."""


# -- the corpus ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Hostile:
    name: str
    """Path relative to the corpus root."""
    reason: str | None
    """Substring expected in the skip reason; None = a valid (if odd) image that must be indexed."""
    make: Callable[[Path], None]
    scan_level: bool = False
    """Refused by the folder scan (not a regular file): not counted in files_seen."""
    hidden: bool = False
    """A name starting with '.': left out silently by design (like `ls`), neither indexed nor
    skipped."""


def _jpeg(arr: np.ndarray, **kw) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, "JPEG", quality=90, **kw)
    return buf.getvalue()


def _picture(seed: int, size=(96, 72)) -> np.ndarray:
    """A small smooth RGB picture, different for each seed."""
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 256, size=(4, 4, 3)).astype(np.float32)
    big = np.kron(base, np.ones((size[1] // 4, size[0] // 4, 1)))
    return np.clip(big + rng.normal(0, 5, big.shape), 0, 255).astype(np.uint8)


def _write(data: bytes) -> Callable[[Path], None]:
    return lambda p: p.write_bytes(data)


def _png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def png_bomb(width: int = 50_000, height: int = 50_000) -> bytes:
    """A PNG whose hand-made IHDR declares width x height 8-bit RGB pixels (7.5 GB for 50k x 50k),
    with the start of a real all-zero image stream: small on disk, enormous once decoded."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    rows = zlib.compressobj(9)
    idat = rows.compress(b"\x00" * (1 + 3 * width) * 64) + rows.flush(zlib.Z_SYNC_FLUSH)
    return (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", idat)
            + _png_chunk(b"IEND", b""))


def _png_bad_crc() -> bytes:
    data = bytearray(png_bomb(32, 32))
    data[29] ^= 0xFF  # last byte of the IHDR CRC
    return bytes(data)


def _jpeg_bomb() -> bytes:
    """A valid small JPEG whose SOF header is patched to declare 65500 x 65500 pixels."""
    data = bytearray(_jpeg(_picture(1, (64, 64))))
    i = 2
    while i < len(data):
        marker = data[i + 1]
        length = struct.unpack(">H", data[i + 2:i + 4])[0]
        if marker in (0xC0, 0xC1, 0xC2):
            data[i + 5:i + 9] = struct.pack(">HH", 65500, 65500)
            return bytes(data)
        i += 2 + length
    raise AssertionError("no SOF marker")


def _gif_bomb() -> bytes:
    """A hand-made GIF declaring a 65535 x 65535 screen and image, with a 2-colour table."""
    lsd = struct.pack("<HHBBB", 65535, 65535, 0x80, 0, 0) + b"\x00\x00\x00\xff\xff\xff"
    desc = b"\x2c" + struct.pack("<HHHHB", 0, 0, 65535, 65535, 0)
    return b"GIF89a" + lsd + desc + b"\x02\x02\x4c\x01\x00" + b"\x3b"


def _truncated_jpeg() -> bytes:
    rng = np.random.default_rng(3)
    data = _jpeg(rng.integers(0, 256, (256, 256, 3), dtype=np.uint8))
    return data[: len(data) // 2]


def _random_bytes() -> bytes:
    rng = np.random.default_rng(4)
    return b"\x00" + rng.integers(0, 256, 4096, dtype=np.uint8).tobytes()


def _cmyk(p: Path) -> None:
    Image.fromarray(_picture(5)).convert("CMYK").save(p, "JPEG", quality=90)


def _png16(p: Path) -> None:
    a = (_picture(6)[..., 0].astype(np.uint16) * 257)
    Image.fromarray(a).save(p, "PNG")
    assert Image.open(p).mode.startswith("I")


def _palette_transparent(p: Path) -> None:
    im = Image.fromarray(_picture(7)).convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    im.save(p, "PNG", transparency=0)
    assert "transparency" in Image.open(p).info


def _animated_gif(p: Path) -> None:
    frames = [Image.fromarray(_picture(s)).convert("P") for s in (8, 9, 10)]
    frames[0].save(p, "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)
    assert Image.open(p).n_frames == 3


def _multipage_tiff(p: Path) -> None:
    pages = [Image.fromarray(_picture(s)) for s in (11, 12)]
    pages[0].save(p, "TIFF", save_all=True, append_images=pages[1:])
    assert Image.open(p).n_frames == 2


def _exif_orientation(value: int) -> Callable[[Path], None]:
    def make(p: Path) -> None:
        exif = Image.Exif()
        exif[0x0112] = value
        p.write_bytes(_jpeg(_picture(13), exif=exif.tobytes()))
    return make


_BIG_JPEG: dict[str, bytes] = {}


def _big_jpeg(p: Path) -> None:
    """8000 x 8000 JPEG, made once per session (a few MB): coarse colour blocks, cheap to encode."""
    if "data" not in _BIG_JPEG:
        small = _picture(14, (80, 80))
        img = Image.fromarray(small).resize((BIG_SIDE, BIG_SIDE), Image.NEAREST)
        buf = io.BytesIO()
        img.save(buf, "JPEG", quality=75)
        _BIG_JPEG["data"] = buf.getvalue()
    p.write_bytes(_BIG_JPEG["data"])


def _sparse(p: Path) -> None:
    with open(p, "wb") as f:
        f.truncate(SPARSE_BYTES)


def _fifo(p: Path) -> None:
    os.mkfifo(p)


def _unreadable(p: Path) -> None:
    p.write_bytes(_jpeg(_picture(15)))
    p.chmod(0)


def _symlink(target: str) -> Callable[[Path], None]:
    return lambda p: os.symlink(target, p)


def _folder_with_image(p: Path) -> None:
    p.mkdir()
    Image.fromarray(_picture(16)).save(p / "inside.png")


UNREADABLE = "unreadable.jpg"
VANISHING = "vanishing.jpg"

HOSTILE: list[Hostile] = [
    # refused: not image data
    Hostile("empty.jpg", "empty file", _write(b"")),
    Hostile("truncated.jpg", "truncated or corrupt", _write(_truncated_jpeg())),
    Hostile("random-bytes.jpg", "not an image", _write(_random_bytes())),
    Hostile("text.png", "looks like text", _write(b"hello, I am not a PNG\n" * 20)),
    Hostile("document.jpg", "looks like a PDF", _write(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n" + b"0" * 100)),
    Hostile("phone.jpg", "unsupported image format: HEIC",
            _write(b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic" + b"\x00" * 64)),
    Hostile("bad-crc.png", "truncated or corrupt", _write(_png_bad_crc())),
    # refused: decompression bombs, by their header
    Hostile("bomb.png", "image too large", _write(png_bomb())),
    Hostile("bomb.jpg", "image too large", _write(_jpeg_bomb())),
    Hostile("bomb.gif", "image too large", _write(_gif_bomb())),
    # refused: file system trouble
    Hostile("huge-sparse.jpg", "file too large", _sparse),
    Hostile(UNREADABLE, "permission denied", _unreadable),
    Hostile(VANISHING, "file disappeared", _write(_jpeg(_picture(17)))),
    Hostile("fifo.jpg", "not a regular file", _fifo, scan_level=True),
    Hostile("loop", "symlink loop", _symlink("."), scan_level=True),
    Hostile("self-link.jpg", "symlink loop", _symlink("self-link.jpg"), scan_level=True),
    Hostile("broken-link.jpg", "broken symlink", _symlink("no-such-file.jpg"), scan_level=True),
    # valid, if odd: must be indexed
    Hostile("big-8000.jpg", None, _big_jpeg),
    Hostile("cmyk.jpg", None, _cmyk),
    Hostile("sixteen-bit.png", None, _png16),
    Hostile("palette-transparent.png", None, _palette_transparent),
    Hostile("animated.gif", None, _animated_gif),
    Hostile("multipage.tif", None, _multipage_tiff),
    Hostile("exif-orientation-9.jpg", None, _exif_orientation(9)),
    Hostile("exif-orientation-0.jpg", None, _exif_orientation(0)),
    Hostile("name with spaces.jpg", None, _write(_jpeg(_picture(18)))),
    Hostile("ünïcødé 写真 🙂.jpg", None, _write(_jpeg(_picture(19)))),
    Hostile("new\nline.jpg", None, _write(_jpeg(_picture(20)))),
    Hostile("a..b.jpg", None, _write(_jpeg(_picture(21)))),
    Hostile("..jpg", None, _write(_jpeg(_picture(22))), hidden=True),
    Hostile(".hidden.jpg", None, _write(_jpeg(_picture(23))), hidden=True),
    Hostile("x.jpg/inside.png", None, lambda p: _folder_with_image(p.parent)),
]
N_HOSTILE_INPUTS = len(HOSTILE)
"""How many hostile or odd inputs the corpus holds (the README records this number)."""

BAD = {h.name: h.reason for h in HOSTILE if h.reason is not None}
GOOD = {h.name for h in HOSTILE if h.reason is None and not h.hidden}
NORMAL = [f"normal-{i}.{'jpg' if i % 2 else 'png'}" for i in range(4)]
"""A few ordinary images next to the hostile ones."""


def make_corpus(root: Path) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for h in HOSTILE:
        h.make(root / h.name)
    for i, name in enumerate(NORMAL):
        Image.fromarray(_picture(100 + i)).save(root / name)
    return root


def deny_read(path: str) -> Callable:
    """An os.open that fails with EACCES for one path: the kernel's answer to a non-root reader."""
    real_open = os.open

    def fake_open(p, flags, *args, **kw):
        if os.fspath(p) == path:
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), os.fspath(p))
        return real_open(p, flags, *args, **kw)
    return fake_open


def vanish_after_scan(root: Path, name: str) -> Callable:
    """A scan that yields `name` and deletes it right after: gone before it is read."""
    real_scan = peoplemap.indexing.scan
    victim = str(root / name)

    def scan(folder, **kw):
        for entry in real_scan(folder, **kw):
            yield entry
            if entry.path == victim:
                os.unlink(victim)
    return scan


def check_summary(root: Path, files_seen: int, skipped: dict[str, str], indexed: set[str]) -> None:
    """Every bad input skipped with its reason, every good one indexed, counts adding up."""
    rel_skipped = {os.path.relpath(p, root): r for p, r in skipped.items()}
    rel_indexed = {os.path.relpath(p, root) for p in indexed}
    for name, want in BAD.items():
        assert name in rel_skipped, f"{name!r} was not reported as skipped: {sorted(rel_skipped)}"
        assert want in rel_skipped[name], f"{name!r}: reason {rel_skipped[name]!r}, want {want!r}"
    assert set(rel_skipped) == set(BAD), f"unexpected skips: {set(rel_skipped) - set(BAD)}"
    want = GOOD | set(NORMAL)
    assert rel_indexed == want, f"missing: {want - rel_indexed}, extra: {rel_indexed - want}"
    file_level = [h for h in HOSTILE if h.reason is not None and not h.scan_level]
    assert files_seen == len(GOOD) + len(NORMAL) + len(file_level)
    assert files_seen == len(indexed) + len(skipped) - sum(h.scan_level for h in HOSTILE)


def _index_in_process(root: Path, lib: Library, model: str, monkeypatch) -> dict:
    with monkeypatch.context() as m:
        m.setattr(peoplemap.indexing, "scan", vanish_after_scan(root, VANISHING))
        if os.geteuid() == 0:  # root reads a chmod-000 file: refuse it as the kernel would a user
            m.setattr(os, "open", deny_read(str(root / UNREADABLE)))
        s = lib.index(root, model=model)
    return dict(files_seen=s.files_seen, skipped={k.path: k.reason for k in s.skipped},
                new=s.new, items_added=s.items_added)


def _indexed_paths(lib: Library, root: Path) -> set[str]:
    """Paths under root that have items in the library."""
    prefix = str(root) + os.sep
    return {p for (p,) in lib.catalog.query(
        "SELECT DISTINCT im.path FROM images im JOIN items i ON i.image_id = im.id")
        if p.startswith(prefix)}


def test_corpus_is_what_it_claims() -> None:
    assert N_HOSTILE_INPUTS == len(BAD) + len(GOOD) + sum(h.hidden for h in HOSTILE) >= 30
    assert len({h.name for h in HOSTILE}) == N_HOSTILE_INPUTS


def test_hostile_corpus_fake_model(tmp_path: Path, settings, monkeypatch) -> None:
    root = make_corpus(tmp_path / "corpus")
    with Library.open(tmp_path / "lib", create=True, settings=settings) as lib:
        r = _index_in_process(root, lib, "fake", monkeypatch)
        indexed = _indexed_paths(lib, root)
        check_summary(root, r["files_seen"], r["skipped"], indexed)
        assert r["items_added"] == len(indexed)  # one whole-image item per good file
        # what the catalog says about the odd-but-valid ones
        dims = {os.path.relpath(p, root): (w, h, f) for p, w, h, f in lib.catalog.query(
            "SELECT path, width, height, format FROM images")}
        assert dims["big-8000.jpg"] == (BIG_SIDE, BIG_SIDE, "JPEG")
        assert dims["exif-orientation-9.jpg"][:2] == (96, 72)  # out-of-range value: left as stored
        assert dims["multipage.tif"][2] == "TIFF" and dims["animated.gif"][2] == "GIF"
        assert {(s.path, s.reason) for s in lib.skipped()} == set(r["skipped"].items())
        # a second run: nothing new, every bad input still reported (the vanished one is gone)
        (root / VANISHING).write_bytes(b"")  # comes back as an empty file
        s2 = lib.index(root, model="fake")
        assert s2.items_added == 0
        again = {os.path.relpath(k.path, root): k.reason for k in s2.skipped}
        assert "empty file" in again[VANISHING]
        assert set(again) == set(BAD)


@pytest.mark.slow
def test_hostile_corpus_mobilenetv2(tmp_path: Path, settings, monkeypatch) -> None:
    """The same corpus through the real model: same verdicts, a finite 1280-d vector per image."""
    root = make_corpus(tmp_path / "corpus")
    with Library.open(tmp_path / "lib", create=True, settings=settings) as lib:
        r = _index_in_process(root, lib, "mobilenetv2", monkeypatch)
        indexed = _indexed_paths(lib, root)
        check_summary(root, r["files_seen"], r["skipped"], indexed)
        ids, X = lib.vectors("mobilenetv2")
        assert X.shape == (len(indexed), 1280) and np.isfinite(X).all()
        assert np.allclose(np.linalg.norm(X, axis=1), 1.0, atol=1e-3)


_CHILD = r"""
import json, os, sys
sys.path.insert(0, sys.argv[1])
import numpy as np
from PIL import Image
import conftest  # registers the "fake" embedder
import test_hostile as th
from peoplemap import Library
import peoplemap.indexing

root, lib_dir, warm = sys.argv[2], sys.argv[3], sys.argv[4]
lib = Library.open(lib_dir, create=True)
lib.index(warm, model="fake")  # warm up: imports, threads, SQLite, Pillow plugins
before = th.reset_peak_rss_kb()
peoplemap.indexing.scan = th.vanish_after_scan(th.Path(root), th.VANISHING)
s = lib.index(root, model="fake")
after = th.proc_status_kb("VmHWM")
indexed = sorted(th._indexed_paths(lib, th.Path(root)))
print(json.dumps(dict(can_read_mode_000=os.access(os.path.join(root, th.UNREADABLE), os.R_OK),
                      files_seen=s.files_seen, indexed=indexed,
                      skipped={k.path: k.reason for k in s.skipped}, rss_before_kb=before,
                      rss_after_kb=after)))
"""


def proc_status_kb(field: str) -> int:
    """A memory figure of this process from /proc/self/status, in kB (VmRSS, VmHWM)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise KeyError(field)


def reset_peak_rss_kb() -> int:
    """Reset this process's peak RSS (VmHWM) to its current RSS and return that, in kB.

    getrusage's ru_maxrss is no use in a child: it keeps the parent's peak across fork and exec."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    return proc_status_kb("VmHWM")


PR_CAPBSET_DROP = 24
CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH = 1, 2


def _drop_file_override() -> None:
    """(In the child, before exec.) Take CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH out of the
    capability bounding set: after exec, root is then bound by file modes like any other user, so a
    chmod-000 file really cannot be read. (Dropping to another uid is not an option here: the
    interpreter lives under /root, which is 0700.)"""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    for cap in (CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH):
        if libc.prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP) failed")


def test_hostile_corpus_in_child_process(tmp_path: Path) -> None:
    """In a child process: a real permission failure, and the peak memory of the whole run."""
    root = make_corpus(tmp_path / "corpus")
    warm = tmp_path / "warm"
    warm.mkdir()
    Image.fromarray(_picture(99)).save(warm / "w.jpg")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PEOPLEMAP_")}
    env.update(PEOPLEMAP_CACHE_DIR=str(tmp_path / "cache"), PYTHONDONTWRITEBYTECODE="1")
    proc = subprocess.run(
        [sys.executable, "-c", _CHILD, str(TESTS), str(root), str(tmp_path / "lib"), str(warm)],
        capture_output=True, text=True, timeout=120, cwd=tmp_path, env=env,
        preexec_fn=_drop_file_override if os.geteuid() == 0 else None)
    assert proc.returncode == 0, proc.stderr[-4000:]
    r = json.loads(proc.stdout.strip().splitlines()[-1])
    assert r["can_read_mode_000"] is False
    check_summary(root, r["files_seen"], r["skipped"], set(r["indexed"]))
    growth_mb = (r["rss_after_kb"] - r["rss_before_kb"]) / 1024
    print(f"peak RSS growth indexing the hostile corpus: {growth_mb:.1f} MB "
          f"(from {r['rss_before_kb'] / 1024:.0f} MB)")
    assert growth_mb < RSS_GROWTH_LIMIT_MB, f"peak RSS grew by {growth_mb:.0f} MB"
