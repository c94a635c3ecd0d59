"""Nothing let in: no code from data files, checked uploads, contained exports, no network.

- the source never unpickles, evals or execs (grep, with the patterns checked on planted samples);
- a library from someone else is data: a pickle payload in its clustering state or its FAISS index
  never runs (a marker file it would create stays absent), damaged files raise PeoplemapError or
  are rebuilt, and its own files (lock, temporaries) cannot be symlinks that make us overwrite
  files outside it;
- search uploads are checked by content and size;
- export writes only inside its output folder, whatever the paths in the catalog;
- nothing connects to a non-loopback address at run time: index, cluster, search, export and the
  app's pages in-process with sockets blocked, and the app server in a child process with a
  sitecustomize that blocks and records connects, driven by headless Chromium whose every request
  is recorded too.
"""
from __future__ import annotations

import csv
import errno
import io
import ipaddress
import json
import os
import pickle
import re
import shutil
import socket
import sqlite3
import subprocess
import sys
import urllib.parse
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import make_person_images
from peoplemap import Library
from peoplemap.config import Settings
from peoplemap.errors import InputError, PeoplemapError
from test_hostile import png_bomb

REPO = Path(__file__).resolve().parents[1]
SRC = REPO / "src" / "peoplemap"


# -- the source ----------------------------------------------------------------------------------
FORBIDDEN = [
    (re.compile(r"^\s*(import|from)\s+(c?pickle|_pickle|dill|cloudpickle|shelve|marshal)\b", re.M),
     "pickle-like deserialiser"),
    (re.compile(r"\bcPickle\b"), "cPickle"),
    (re.compile(r"allow_pickle\s*=\s*True"), "allow_pickle=True"),
    (re.compile(r"\bjoblib\s*\.\s*load\b"), "joblib.load"),
    (re.compile(r"(?<![\w.])eval\s*\("), "eval("),
    (re.compile(r"(?<![\w.])exec\s*\("), "exec("),
    (re.compile(r"\byaml\s*\.\s*(unsafe_)?load\s*\((?![^)]*SafeLoader)"), "yaml.load without SafeLoader"),
    (re.compile(r"\b(read_pickle|from_pickle)\s*\("), "pandas/other pickle reader"),
    (re.compile(r"enable_load_extension\s*\(\s*True"), "SQLite extension loading"),
]


def _torch_load_calls(text: str) -> list[str]:
    """The full text of each torch.load(...) call (parentheses matched)."""
    calls = []
    for m in re.finditer(r"\btorch\s*\.\s*load\s*\(", text):
        depth, i = 1, m.end()
        while depth and i < len(text):
            depth += {"(": 1, ")": -1}.get(text[i], 0)
            i += 1
        calls.append(text[m.start():i])
    return calls


def source_problems(text: str) -> list[str]:
    found = [what for rx, what in FORBIDDEN if rx.search(text)]
    found += [f"{c!r} without weights_only=True" for c in _torch_load_calls(text)
              if not re.search(r"weights_only\s*=\s*True", c)]
    return found


@pytest.mark.parametrize("sample", [
    "import pickle", "from pickle import loads", "import cPickle as p", "x = cPickle.loads(b)",
    "np.load(p, allow_pickle=True)", "joblib.load(p)", "eval(text)", "y = exec(code)",
    "torch.load(path)", "torch.load(path, map_location='cpu')", "yaml.load(f)",
    "  import marshal", "df = pd.read_pickle(p)", "conn.enable_load_extension(True)",
])
def test_source_scan_catches_planted_samples(sample: str) -> None:
    assert source_problems(sample), sample


@pytest.mark.parametrize("sample", [
    "model.eval()", "evaluate(x)", "torch.load(w, weights_only=True, map_location='cpu')",
    "np.load(p, allow_pickle=False)", "# no pickle anywhere", "yaml.load(f, Loader=yaml.SafeLoader)",
])
def test_source_scan_passes_harmless_samples(sample: str) -> None:
    assert not source_problems(sample), sample


def test_source_never_unpickles_evals_or_execs() -> None:
    files = sorted(SRC.rglob("*.py"))
    assert len(files) >= 15
    problems = {str(f.relative_to(REPO)): p for f in files
                if (p := source_problems(f.read_text(encoding="utf-8")))}
    assert problems == {}


# -- a library from someone else -----------------------------------------------------------------
class Payload:
    """Unpickling this creates `marker` (and does nothing else): proof that code ran."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _fake_library(tmp_path: Path, settings: Settings) -> tuple[Library, bytes]:
    photos = tmp_path / "photos"
    make_person_images(photos)
    lib = Library.open(tmp_path / "lib", create=True, settings=settings)
    lib.index(photos, model="fake")
    lib.cluster(min_cluster_size=2)
    query = (photos / "person0" / "img0.jpg").read_bytes()
    assert lib.search(query, k=3)[0].hits  # writes indexes/set-1.faiss
    return lib, query


def test_payload_is_live(tmp_path: Path) -> None:
    """The payload used below really runs when unpickled (so its absence later means something)."""
    marker = tmp_path / "ran"
    pickle.loads(pickle.dumps(Payload(str(marker))))
    assert marker.exists()
    npz = tmp_path / "evil.npz"
    marker.unlink()
    np.savez(npz, meta=np.array([Payload(str(marker))], dtype=object))
    with np.load(npz, allow_pickle=True) as z:
        z["meta"]
    assert marker.exists()


def test_pickle_payloads_in_a_library_never_run(tmp_path: Path, settings: Settings) -> None:
    lib, query = _fake_library(tmp_path, settings)
    lib_dir = lib.path
    lib.close()
    marker = tmp_path / "PWNED"
    payload = Payload(str(marker))
    # the clustering state: every array an object array holding the payload
    models = list((lib_dir / "cluster-models").glob("clustering-*.npz"))
    assert len(models) == 1
    with np.load(models[0], allow_pickle=False) as z:
        keys = list(z.files)
    models[0].unlink()
    np.savez(models[0], **{k: np.array([payload], dtype=object) for k in keys})
    # the FAISS index: a pickle stream, with a sidecar that says it is current
    index = lib_dir / "indexes" / "set-1.faiss"
    index.write_bytes(pickle.dumps(payload))

    with Library.open(lib_dir, settings=settings) as lib:
        lib.info()
        lib.clusters()
        lib.export("json", tmp_path / "out.json")
        try:
            res = lib.search(query, k=3)
        except PeoplemapError as e:
            assert "clustering" in str(e) or "model" in str(e), e
        else:
            assert res[0].hits
        assert len(lib.index_for()) == 20  # the garbage index was rebuilt from the catalog
        lib.cluster(min_cluster_size=2)  # and a new clustering replaces the poisoned state
        assert lib.search(query, k=3)[0].cluster is not None
    assert not marker.exists(), "a pickle payload in a library file was executed"


def test_sql_in_a_library_cannot_load_code(tmp_path: Path, settings: Settings) -> None:
    """Triggers and views are part of an SQLite file: one that calls load_extension() must fail
    (extension loading is never enabled, and SQLite refuses it in schema code), not run."""
    lib, _query = _fake_library(tmp_path, settings)
    evil = str(tmp_path / "evil.so")
    conn = lib.catalog.conn()
    conn.execute(f"CREATE TRIGGER evil AFTER INSERT ON runs BEGIN SELECT load_extension('{evil}'); END")
    conn.execute(f"CREATE VIEW evil_view AS SELECT load_extension('{evil}') AS x")
    lib.close()
    with Library.open(tmp_path / "lib", settings=settings) as lib:
        with pytest.raises((PeoplemapError, sqlite3.DatabaseError)) as e:
            lib.cluster(min_cluster_size=2)  # inserts a run row: fires the trigger
        assert "load_extension" in str(e.value) or "not authorized" in str(e.value)
        with pytest.raises(sqlite3.DatabaseError):
            lib.catalog.query("SELECT * FROM evil_view")


def _fake_faiss_bomb(path: Path, claimed_vectors: int) -> None:
    """A tiny FAISS file whose header claims `claimed_vectors` 48-d vectors (faiss would allocate
    them before finding the file is short)."""
    import struct

    import faiss

    x = np.eye(5, 48, dtype=np.float32)
    idx = faiss.IndexIDMap2(faiss.IndexFlatL2(48))
    idx.add_with_ids(x, np.arange(5, dtype=np.int64))
    data = bytearray(faiss.serialize_index(idx).tobytes())
    i = data.index(b"IxF2")
    at = i + 4 + 4 + 8 + 8 + 8 + 1 + 4  # fourcc, d, ntotal, 2 dummies, is_trained, metric
    assert struct.unpack("<q", data[at:at + 8])[0] == 5 * 48  # the vector's length in floats
    data[at:at + 8] = struct.pack("<q", claimed_vectors * 48)
    data[i + 8:i + 16] = struct.pack("<q", claimed_vectors)
    data[8:16] = struct.pack("<q", claimed_vectors)
    path.write_bytes(bytes(data))


_FAISS_CHILD = r"""
import json, sys
sys.path.insert(0, sys.argv[1])
import conftest
from test_hostile import proc_status_kb, reset_peak_rss_kb
from peoplemap import Library
lib = Library.open(sys.argv[2])
query = open(sys.argv[3], "rb").read()
# Imports are not what is measured: load everything search touches first.
import faiss, hdbscan, sklearn.decomposition, sklearn.preprocessing  # noqa: E401,F401
import peoplemap.cluster, peoplemap.search, peoplemap.searching, peoplemap.people  # noqa: E401,F401
lib.embedder(lib.vector_set().model).embed([__import__("numpy").zeros((8, 8, 3), "uint8")])
before = reset_peak_rss_kb()
n = len(lib.search(query, k=3)[0].hits)
print(json.dumps(dict(hits=n, growth_kb=proc_status_kb("VmHWM") - before)))
"""


def test_damaged_faiss_index_cannot_exhaust_memory(tmp_path: Path, settings: Settings) -> None:
    lib, query = _fake_library(tmp_path, settings)
    lib_dir = lib.path
    lib.close()
    _fake_faiss_bomb(lib_dir / "indexes" / "set-1.faiss", claimed_vectors=5_000_000)  # 960 MB
    (tmp_path / "q.jpg").write_bytes(query)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PEOPLEMAP_")}
    env["PEOPLEMAP_CACHE_DIR"] = settings.cache_dir
    r = subprocess.run([sys.executable, "-c", _FAISS_CHILD, str(Path(__file__).parent), str(lib_dir),
                        str(tmp_path / "q.jpg")], capture_output=True, text=True, timeout=120, env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out["hits"] == 3  # rebuilt from the catalog
    assert out["growth_kb"] < 200 * 1024, f"loading a 1 KB index file took {out['growth_kb'] // 1024} MB"


def test_damaged_vectors_raise_a_library_error(tmp_path: Path, settings: Settings) -> None:
    """Vectors and sidecars from someone else: damage gives PeoplemapError, never a crash."""
    lib, query = _fake_library(tmp_path, settings)
    (lib.path / "indexes" / "set-1.faiss.json").write_text('{"format": 1, "kind": [], "n": "x"}')
    with lib.catalog.write() as c:  # a NaN vector: refused by the index builder
        c.execute("UPDATE vectors SET vector = ? WHERE item_id = (SELECT MIN(item_id) FROM vectors)",
                  (np.full(48, np.nan, "<f4").tobytes(),))
        c.execute("UPDATE vector_sets SET generation = generation + 1")
    with pytest.raises(PeoplemapError):
        lib.search(query, k=3)
    lib.close()


def test_vector_blob_of_wrong_length_is_a_library_error(tmp_path: Path, settings: Settings) -> None:
    lib, query = _fake_library(tmp_path, settings)
    with lib.catalog.write() as c:
        c.execute("UPDATE vectors SET vector = ? WHERE item_id = (SELECT MIN(item_id) FROM vectors)",
                  (b"abc",))
        c.execute("UPDATE vector_sets SET generation = generation + 1")
    try:
        for call in (lambda: lib.search(query, k=3), lambda: lib.cluster(), lib.vectors):
            with pytest.raises(PeoplemapError):
                call()
    finally:
        lib.close()


def _symlink_victim(tmp_path: Path, lib_dir: Path, name: str) -> Path:
    victim = tmp_path / "victim.txt"
    victim.write_bytes(b"precious\n")
    link = lib_dir / name
    link.unlink(missing_ok=True)
    os.symlink(victim, link)
    return victim


_SYMLINK_CASES = [
    pytest.param("writer.lock", "index"),
    pytest.param("indexes/set-1.faiss.tmp", "search"),
    pytest.param("indexes/set-1.faiss.json.tmp", "search"),
    pytest.param("cluster-models/clustering-2.npz.tmp", "cluster"),
    pytest.param("library.sqlite-wal", "index"),
]


@pytest.mark.parametrize("name, action", _SYMLINK_CASES)
def test_library_files_never_write_through_symlinks(tmp_path: Path, settings: Settings,
                                                    name: str, action: str) -> None:
    """A library from someone else may hold symlinks where we write: the files they point to
    (outside the library) must not change, whether we refuse the library or not."""
    lib, query = _fake_library(tmp_path, settings)
    lib_dir = lib.path
    lib.close()
    more = tmp_path / "more"
    make_person_images(more, seed=5)
    victim = _symlink_victim(tmp_path, lib_dir, name)
    try:
        with Library.open(lib_dir, settings=settings) as lib:
            lib.index(more, model="fake")  # makes the saved index stale
            if action == "search":
                lib.search(query, k=3)
            elif action == "cluster":
                lib.cluster(min_cluster_size=2)
    except PeoplemapError:
        pass  # refusing the library is fine
    assert victim.read_bytes() == b"precious\n", f"{name} -> {victim} was overwritten"


# -- uploads -------------------------------------------------------------------------------------
def _jpeg_bytes(size=(64, 64), pad: int = 0) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.full((size[1], size[0], 3), 128, np.uint8)).save(buf, "JPEG")
    return buf.getvalue() + b"\0" * pad


def test_uploads_are_checked_by_content_and_size(tmp_path: Path, settings: Settings) -> None:
    photos = tmp_path / "photos"
    make_person_images(photos)
    s = Settings(cache_dir=settings.cache_dir, max_upload_mb=1)
    with Library.open(tmp_path / "lib", create=True, settings=s) as lib:
        lib.index(photos, model="fake")
        assert lib.search(_jpeg_bytes(), k=2)[0].hits
        cases = {
            "text": (b"hello, this is not a photo\n" * 10, "not an image"),
            "empty": (b"", "empty"),
            "html named as image": (b"<!doctype html><script>alert(1)</script>", "not an image"),
            "over the limit": (_jpeg_bytes(pad=1024 * 1024), "limit is 1 MB"),
            "bomb": (png_bomb(), "too large"),
            "truncated": (_jpeg_bytes()[:200], "cannot be used"),
        }
        for what, (data, message) in cases.items():
            with pytest.raises(InputError) as e:
                lib.search(data, k=2)
            assert message in str(e.value), (what, str(e.value))
        for bad in (tmp_path, tmp_path / "missing.jpg"):
            with pytest.raises(InputError):
                lib.search(bad, k=2)
        with pytest.raises(InputError):
            lib.search(bytearray(b"x" * (1024 * 1024 + 1)), k=2)


def test_query_limits_come_from_the_library_settings(tmp_path: Path, settings: Settings) -> None:
    photos = tmp_path / "photos"
    make_person_images(photos)
    s = Settings(cache_dir=settings.cache_dir, max_image_pixels=1000)
    with Library.open(tmp_path / "lib", create=True, settings=s) as lib:
        lib.index(photos, model="fake")  # 64x80 = 5120 pixels: all refused at index time
        assert lib.info().images == 0
        assert all("image too large" in s.reason for s in lib.skipped())
        with pytest.raises(InputError):
            lib.search(_jpeg_bytes((100, 100)), k=2, model=None)


# -- export --------------------------------------------------------------------------------------
HOSTILE_PATHS = [
    "/../../evil.jpg", "../../evil.jpg", "..", ".", "/", "a/../../../etc/passwd", "x/..",
    "/photos/名前/ünï\ncode.jpg", "\n", "/p/a..b.jpg", "/p/..jpg", "C:\\..\\..\\evil.jpg",
    "/p/" + "a" * 1000 + ".jpg", "~/evil.jpg", "/p/$(touch pwned).jpg", "/p/\u202egpj.exe",
    "/p/.. /x", "/p/...", "/p/-rf", "/p/a\\..\\b.jpg", "/p/\r\n.jpg", "/p/%2e%2e%2fevil.jpg",
]
HOSTILE_NAMES = {0: "../../evil", 1: "/etc/cron.d", 2: "..", 3: "\n", 4: "名前 ü"}


def _add_hostile_rows(lib: Library, paths: list[str]) -> None:
    """Catalog rows naming hostile paths, as a library from someone else could hold."""
    set_id = lib.vector_set().id
    blob = lib.catalog.one("SELECT vector FROM vectors LIMIT 1")[0]
    with lib.catalog.write() as c:
        for p in paths:
            iid = c.execute("INSERT INTO images(path, sha256, size, mtime, width, height, format, "
                            "added_at) VALUES (?, 'x', 1, 0, 1, 1, 'JPEG', 0)", (p,)).lastrowid
            item = c.execute("INSERT INTO items(image_id, set_id) VALUES (?, ?)", (iid, set_id)).lastrowid
            c.execute("INSERT INTO vectors(item_id, vector) VALUES (?, ?)", (item, blob))
            c.execute("INSERT INTO processed(image_id, set_id, n_items) VALUES (?, ?, 1)", (iid, set_id))


def _tree(root: Path) -> set[str]:
    out = set()
    for d, dirs, files in os.walk(root):
        for n in dirs + files:
            out.add(os.path.join(d, n))
    return out


def test_export_stays_inside_its_folder(tmp_path: Path, settings: Settings, monkeypatch) -> None:
    photos = tmp_path / "photos"
    make_person_images(photos)
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)  # relative targets like ../../evil.jpg resolve against the cwd
    with Library.open(tmp_path / "lib", create=True, settings=settings) as lib:
        lib.index(photos, model="fake")
        lib.cluster(min_cluster_size=2)
        _add_hostile_rows(lib, HOSTILE_PATHS)
        n_items = len(lib.items())
        before = _tree(tmp_path)
        # names people gave clusters become folder names
        monkeypatch.setattr(lib, "person_names", lambda model=None: HOSTILE_NAMES, raising=False)
        out = work / "out"
        lib.export("folders", out)
        csv_out, json_out = lib.export("csv", work / "x.csv"), lib.export("json", work / "x.json")
    created = _tree(tmp_path) - before
    root = os.path.realpath(out)
    for p in created:
        where = os.path.realpath(os.path.dirname(p))  # the entry itself, not a link's target
        assert where == root or where.startswith(root + os.sep) or p in (str(out), str(csv_out),
                                                                           str(json_out)), p
    links = [p for p in created if os.path.islink(p)]
    assert len(links) == n_items  # one link per item, none lost to a name clash
    for p in created:
        assert os.path.basename(p) not in ("", ".", ".."), p
        if os.path.isdir(p) and not os.path.islink(p):
            assert os.path.dirname(p) in (str(out), str(work)), f"nested folder {p}"
    targets = sorted(os.readlink(p) for p in links)
    assert sorted(t for t in targets if t in HOSTILE_PATHS) == sorted(HOSTILE_PATHS)  # unchanged
    # csv and json round-trip every path exactly
    with open(csv_out, newline="", encoding="utf-8") as f:
        csv_paths = [r["path"] for r in csv.DictReader(f)]
    json_paths = [r["path"] for r in json.loads(Path(json_out).read_text(encoding="utf-8"))["items"]]
    assert sorted(csv_paths) == sorted(json_paths) and set(HOSTILE_PATHS) <= set(csv_paths)
    assert not (tmp_path / "evil.jpg").exists() and not Path("/evil.jpg").exists()


@pytest.mark.parametrize("path", [
    pytest.param("", id="empty"),
    pytest.param("/p/a\x00b.jpg", id="nul"),
    pytest.param("/p/" + "a" * 5000 + ".jpg", id="longer-than-PATH_MAX"),
])
def test_export_with_an_unlinkable_catalog_path(tmp_path: Path, settings: Settings, path: str) -> None:
    photos = tmp_path / "photos"
    make_person_images(photos)
    with Library.open(tmp_path / "lib", create=True, settings=settings) as lib:
        lib.index(photos, model="fake")
        _add_hostile_rows(lib, [path])
        try:
            lib.export("folders", tmp_path / "out")
        except PeoplemapError:
            pass
    assert {os.path.dirname(p) for p in _tree(tmp_path / "out")} <= {str(tmp_path / "out"),
                                                                     str(tmp_path / "out" / "unsorted")}


# -- no network ----------------------------------------------------------------------------------
def is_loopback(address, *, host_only: bool = False) -> bool:
    """True for a loopback IP address or "localhost"; a str/bytes address is an AF_UNIX path
    unless host_only (getaddrinfo's host argument)."""
    if isinstance(address, (str, bytes)) and not host_only:  # AF_UNIX
        return True
    host = address[0] if isinstance(address, tuple) else address
    if isinstance(host, bytes):
        host = host.decode()
    if host in ("localhost", "", None):
        return True
    try:
        return ipaddress.ip_address(host.split("%")[0]).is_loopback
    except ValueError:
        return False  # a host name: resolving it is network traffic already


class NetGuard:
    """Records every connect / DNS lookup made through Python's socket module; refuses non-loopback."""

    def __init__(self, monkeypatch):
        self.attempts: list[tuple[str, str, bool]] = []
        guard = self
        real_connect, real_connect_ex = socket.socket.connect, socket.socket.connect_ex
        real_sendto, real_gai = socket.socket.sendto, socket.getaddrinfo
        real_create = socket.create_connection

        def check(kind, address):
            ok = is_loopback(address, host_only=kind == "getaddrinfo")
            guard.attempts.append((kind, repr(address), ok))
            if not ok:
                raise OSError(errno.ENETUNREACH, f"network blocked by the test: {address!r}")

        def connect(self, address):
            check("connect", address)
            return real_connect(self, address)

        def connect_ex(self, address):
            check("connect_ex", address)
            return real_connect_ex(self, address)

        def sendto(self, data, *args):
            check("sendto", args[-1])
            return real_sendto(self, data, *args)

        def getaddrinfo(host, *args, **kw):
            check("getaddrinfo", host)
            return real_gai(host, *args, **kw)

        def create_connection(address, *args, **kw):
            check("create_connection", address)
            return real_create(address, *args, **kw)

        monkeypatch.setattr(socket.socket, "connect", connect)
        monkeypatch.setattr(socket.socket, "connect_ex", connect_ex)
        monkeypatch.setattr(socket.socket, "sendto", sendto)
        monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
        monkeypatch.setattr(socket, "create_connection", create_connection)

    def outside(self) -> list[tuple[str, str, bool]]:
        return [a for a in self.attempts if not a[2]]


def test_net_guard_blocks_and_records(monkeypatch) -> None:
    guard = NetGuard(monkeypatch)
    with pytest.raises(OSError):
        socket.create_connection(("192.0.2.1", 80), timeout=1)
    with pytest.raises(OSError):
        socket.getaddrinfo("example.com", 443)
    socket.getaddrinfo("localhost", 80)
    assert [a[0] for a in guard.outside()] == ["create_connection", "getaddrinfo"]
    assert guard.attempts[-1][2] is True


@pytest.mark.slow
def test_no_network_in_process(tmp_path: Path, settings: Settings, monkeypatch) -> None:
    """index (real model), cluster, search, export, and every page of the app, with sockets blocked."""
    from streamlit.testing.v1 import AppTest

    import peoplemap.ui

    ui = Path(peoplemap.ui.__file__).parent
    pages = sorted(p.stem for p in ui.glob("pages_*.py"))
    assert {"pages_index", "pages_clusters", "pages_search"} <= set(pages)
    guard = NetGuard(monkeypatch)
    photos = tmp_path / "photos"
    make_person_images(photos, per_person=4)
    lib_dir = tmp_path / "lib"
    with Library.open(lib_dir, create=True, settings=settings) as lib:
        lib.index(photos, model="mobilenetv2")
        lib.cluster(min_cluster_size=2)
        query = photos / "person1" / "img0.jpg"
        assert lib.search(query, k=3)[0].hits[0].path == str(query)
        assert lib.search(query.read_bytes(), k=3)[0].hits
        lib.export("folders", tmp_path / "out")
        lib.export("json", tmp_path / "out.json")
        lib.info()
    monkeypatch.setenv("PEOPLEMAP_LIBRARY", str(lib_dir))
    monkeypatch.setenv("PEOPLEMAP_CACHE_DIR", settings.cache_dir)
    for page in pages:
        at = AppTest.from_string(f"from peoplemap.ui import {page}\n{page}.page()\n",
                                 default_timeout=120).run()
        assert not at.exception, (page, [e.value for e in at.exception])
        assert not at.error, (page, [e.value for e in at.error])
    at = AppTest.from_file(str(ui / "app.py"), default_timeout=120).run()
    assert not at.exception and [t.value for t in at.title] == ["Index"]
    assert guard.outside() == [], guard.outside()


def test_streamlit_usage_stats_off() -> None:
    from peoplemap.ui import launch

    cmd = launch.app_command("/tmp/lib")
    i = cmd.index("--browser.gatherUsageStats")
    assert cmd[i + 1] == "false"
    assert launch._env()["STREAMLIT_BROWSER_GATHER_USAGE_STATS"] == "false"
    assert cmd[cmd.index("--server.address") + 1] == "localhost"


SITECUSTOMIZE = r'''
"""Test guard: record every connect/DNS lookup of this process; refuse non-loopback ones."""
import ipaddress, json, os, socket

_LOG = os.environ.get("NET_GUARD_LOG")


def _loopback(address, host_only=False):
    if isinstance(address, (str, bytes)) and not host_only:
        return True
    host = address[0] if isinstance(address, tuple) else address
    if isinstance(host, bytes):
        host = host.decode()
    if host in ("localhost", "", None):
        return True
    try:
        return ipaddress.ip_address(str(host).split("%")[0]).is_loopback
    except ValueError:
        return False


def _check(kind, address):
    ok = _loopback(address, host_only=kind == "getaddrinfo")
    with open(_LOG, "a") as f:
        f.write(json.dumps([os.getpid(), kind, repr(address), ok]) + "\n")
    if not ok:
        raise OSError(101, "network blocked by the test: %r" % (address,))


if _LOG:
    _connect, _connect_ex = socket.socket.connect, socket.socket.connect_ex
    _gai, _sendto = socket.getaddrinfo, socket.socket.sendto

    def connect(self, address):
        _check("connect", address)
        return _connect(self, address)

    def connect_ex(self, address):
        _check("connect_ex", address)
        return _connect_ex(self, address)

    def sendto(self, data, *args):
        _check("sendto", args[-1])
        return _sendto(self, data, *args)

    def getaddrinfo(host, *args, **kw):
        _check("getaddrinfo", host)
        return _gai(host, *args, **kw)

    socket.socket.connect, socket.socket.connect_ex = connect, connect_ex
    socket.socket.sendto, socket.getaddrinfo = sendto, getaddrinfo
    with open(_LOG, "a") as f:
        f.write(json.dumps([os.getpid(), "loaded", "", True]) + "\n")
'''


@pytest.mark.slow
@pytest.mark.browser
def test_no_network_from_the_app(tmp_path: Path, settings: Settings, monkeypatch) -> None:
    """The app server (child process, connects blocked and recorded) and the browser (every request
    recorded) only ever talk to 127.0.0.1, through all three pages and a search."""
    sync_api = pytest.importorskip("playwright.sync_api")
    from test_ui_browser import CHROMIUM_ARGS, _free_port, _no_proxy_env, _stop, _wait_healthy
    from peoplemap.ui.launch import start_app

    photos = tmp_path / "photos"
    make_person_images(photos, per_person=4)
    lib_dir = tmp_path / "lib"
    with Library.open(lib_dir, create=True, settings=settings) as lib:
        lib.index(photos, model="mobilenetv2")
        lib.cluster(min_cluster_size=2)
    guard_dir = tmp_path / "guard"
    guard_dir.mkdir()
    (guard_dir / "sitecustomize.py").write_text(SITECUSTOMIZE)
    net_log = tmp_path / "net.jsonl"
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(
        [str(guard_dir)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]))
    monkeypatch.setenv("NET_GUARD_LOG", str(net_log))
    monkeypatch.setenv("PEOPLEMAP_CACHE_DIR", settings.cache_dir)
    port = _free_port()
    log = tmp_path / "streamlit.log"
    with open(log, "wb") as out:
        proc = start_app(str(lib_dir), port=port, address="127.0.0.1", stdout=out,
                         stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    requests: list[str] = []
    try:
        _wait_healthy(url, proc, log, 60)
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        with opener.open(url + "/", timeout=10) as r:
            assert r.status == 200 and b"<html" in r.read().lower()
        with sync_api.sync_playwright() as p:
            browser = p.chromium.launch(executable_path=os.environ.get("PEOPLEMAP_CHROMIUM")
                                        or shutil.which("chromium") or None,
                                        headless=True, args=CHROMIUM_ARGS, env=_no_proxy_env())
            try:
                page = browser.new_context().new_page()
                page.on("request", lambda req: requests.append(req.url))
                page.set_default_timeout(90_000)
                page.goto(url)
                page.locator("h1", has_text="Index").first.wait_for()
                for title in ("Clusters", "Search"):
                    page.locator('[data-testid="stSidebarNav"] a', has_text=title).first.click()
                    page.locator("h1", has_text=title).first.wait_for()
                page.locator('[data-testid="stFileUploader"] input[type="file"]').set_input_files(
                    str(photos / "person2" / "img0.jpg"))
                page.locator('[data-testid="stMarkdownContainer"]',
                             has_text=re.compile(r"#1 · ")).first.wait_for()
                assert page.locator('[data-testid="stException"]').count() == 0
            finally:
                browser.close()
    finally:
        _stop(proc)
    entries = [json.loads(line) for line in net_log.read_text().splitlines()]
    assert [proc.pid, "loaded", "", True] in entries, "the guard was not active in the server"
    blocked = [e for e in entries if not e[3]]
    assert blocked == [], blocked
    hosts = {urllib.parse.urlsplit(u).hostname for u in requests if not u.startswith(("data:", "blob:"))}
    assert hosts == {"127.0.0.1"}, sorted(u for u in requests if "127.0.0.1" not in u)[:10]
    print(f"app: {len(entries) - 1} socket calls in the server, all loopback; "
          f"{len(requests)} browser requests, all to 127.0.0.1")
