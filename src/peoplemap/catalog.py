"""The SQLite catalog: schema, connections, and the small queries every stage shares.

SQLite is the source of truth. Everything else in a library directory (FAISS indexes, fitted
clustering state) is derived from it and can be rebuilt.
"""
from __future__ import annotations

import json
import logging
import os
import sqlite3
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from .errors import LibraryError

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1
DB_NAME = "library.sqlite"

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS images (
    id INTEGER PRIMARY KEY,
    path TEXT NOT NULL UNIQUE,
    sha256 TEXT NOT NULL,
    size INTEGER NOT NULL,
    mtime REAL NOT NULL,
    width INTEGER NOT NULL,
    height INTEGER NOT NULL,
    format TEXT NOT NULL,
    added_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS images_sha ON images(sha256);
CREATE TABLE IF NOT EXISTS skipped (
    path TEXT PRIMARY KEY,
    reason TEXT NOT NULL,
    size INTEGER,
    mtime REAL,
    seen_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS vector_sets (
    id INTEGER PRIMARY KEY,
    model TEXT NOT NULL UNIQUE,
    version TEXT NOT NULL,
    dim INTEGER NOT NULL,
    item_kind TEXT NOT NULL,
    description TEXT NOT NULL,
    generation INTEGER NOT NULL DEFAULT 0,
    created_at REAL NOT NULL
);
-- Which images a vector set has processed, and how many items it found in each.
CREATE TABLE IF NOT EXISTS processed (
    image_id INTEGER NOT NULL REFERENCES images(id) ON DELETE CASCADE,
    set_id INTEGER NOT NULL REFERENCES vector_sets(id) ON DELETE CASCADE,
    n_items INTEGER NOT NULL,
    PRIMARY KEY (image_id, set_id)
);
CREATE TABLE IF NOT EXISTS items (
    id INTEGER PRIMARY KEY,
    image_id INTEGER NOT NULL REFERENCES images(id) ON DELETE CASCADE,
    set_id INTEGER NOT NULL REFERENCES vector_sets(id) ON DELETE CASCADE,
    x INTEGER, y INTEGER, w INTEGER, h INTEGER,
    score REAL NOT NULL DEFAULT 1.0
);
CREATE INDEX IF NOT EXISTS items_image ON items(image_id);
CREATE INDEX IF NOT EXISTS items_set ON items(set_id);
CREATE TABLE IF NOT EXISTS vectors (
    item_id INTEGER PRIMARY KEY REFERENCES items(id) ON DELETE CASCADE,
    vector BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS clusterings (
    id INTEGER PRIMARY KEY,
    set_id INTEGER NOT NULL REFERENCES vector_sets(id) ON DELETE CASCADE,
    profile TEXT NOT NULL,
    params TEXT NOT NULL,
    set_generation INTEGER NOT NULL,
    n_items INTEGER NOT NULL,
    n_clusters INTEGER NOT NULL,
    n_noise INTEGER NOT NULL,
    seconds REAL NOT NULL,
    created_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS cluster_labels (
    clustering_id INTEGER NOT NULL REFERENCES clusterings(id) ON DELETE CASCADE,
    item_id INTEGER NOT NULL REFERENCES items(id) ON DELETE CASCADE,
    label INTEGER NOT NULL,
    probability REAL NOT NULL,
    PRIMARY KEY (clustering_id, item_id)
);
CREATE INDEX IF NOT EXISTS cluster_labels_label ON cluster_labels(clustering_id, label);
CREATE TABLE IF NOT EXISTS runs (
    id INTEGER PRIMARY KEY,
    kind TEXT NOT NULL,
    status TEXT NOT NULL,
    params TEXT NOT NULL,
    summary TEXT,
    started_at REAL NOT NULL,
    finished_at REAL
);
-- People: clusters that users can name, merge, split, hide. A person outlives re-clustering:
-- new clusters are matched to existing people by the items they share.
CREATE TABLE IF NOT EXISTS people (
    id INTEGER PRIMARY KEY,
    set_id INTEGER NOT NULL REFERENCES vector_sets(id) ON DELETE CASCADE,
    name TEXT,
    hidden INTEGER NOT NULL DEFAULT 0,
    created_at REAL NOT NULL
);
-- Which person an item belongs to. pinned = a user's decision (merge, split, move), kept as is
-- by re-clustering, while unpinned rows follow the clustering.
CREATE TABLE IF NOT EXISTS person_items (
    item_id INTEGER PRIMARY KEY REFERENCES items(id) ON DELETE CASCADE,
    person_id INTEGER NOT NULL REFERENCES people(id) ON DELETE CASCADE,
    pinned INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS person_items_person ON person_items(person_id);
"""


def vector_to_blob(v: np.ndarray) -> bytes:
    return np.ascontiguousarray(v, dtype="<f4").tobytes()


def blobs_to_matrix(blobs: list[bytes], dim: int, *, first: int = 0) -> np.ndarray:
    """Stored float32 vectors as an (n, dim) array; LibraryError naming a damaged one (numbered
    from `first`)."""
    if not blobs:
        return np.zeros((0, dim), dtype=np.float32)
    bad = next((i for i, b in enumerate(blobs) if len(b) != 4 * dim), None)
    if bad is not None:
        raise LibraryError(f"the library's vectors are damaged: vector {first + bad} has "
                           f"{len(blobs[bad])} bytes, not {4 * dim} ({dim} float32); re-index with --rebuild")
    X = np.frombuffer(b"".join(blobs), dtype="<f4").reshape(len(blobs), dim)
    return X.astype(np.float32, copy=True)


class Catalog:
    """Thread-safe access to one library's SQLite file: one connection per thread, WAL mode."""

    def __init__(self, db_path: Path):
        self.db_path = db_path
        self._local = threading.local()
        self._all: dict[int, sqlite3.Connection] = {}  # thread ident -> its connection
        self._lock = threading.Lock()
        conn = self.conn()
        self._check_or_create(conn)

    def conn(self) -> sqlite3.Connection:
        c = getattr(self._local, "conn", None)
        if c is None:
            try:
                c = sqlite3.connect(str(self.db_path), timeout=60.0, isolation_level=None,
                                    check_same_thread=False)
                c.execute("PRAGMA busy_timeout = 60000")
                c.execute("PRAGMA journal_mode = WAL")
                c.execute("PRAGMA synchronous = NORMAL")
                c.execute("PRAGMA foreign_keys = ON")
            except sqlite3.DatabaseError as e:
                raise LibraryError(f"{self.db_path} is not a peoplemap library ({e})") from None
            self._local.conn = c
            with self._lock:
                # Threads come and go (the app runs each page load on a new one): close the
                # connections of threads that have ended so they don't pile up.
                alive = {t.ident for t in threading.enumerate()}
                for ident in [i for i in self._all if i not in alive]:
                    try:
                        self._all.pop(ident).close()
                    except sqlite3.Error:
                        pass
                self._all[threading.get_ident()] = c
        return c

    def _check_or_create(self, conn: sqlite3.Connection) -> None:
        try:
            row = conn.execute(
                "SELECT name FROM sqlite_master WHERE type='table' AND name='meta'").fetchone()
            if row is None:
                with self.write() as c:
                    for stmt in SCHEMA.split(";"):
                        if stmt.strip():
                            c.execute(stmt)
                    c.execute("INSERT OR REPLACE INTO meta VALUES ('schema_version', ?)",
                              (str(SCHEMA_VERSION),))
                    c.execute("INSERT OR REPLACE INTO meta VALUES ('created_at', ?)",
                              (str(time.time()),))
                return
            v = conn.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
            has_people = conn.execute(
                "SELECT 1 FROM sqlite_master WHERE type='table' AND name='person_items'").fetchone()
            if v is not None and not has_people:  # libraries made before people existed
                with self.write() as c:
                    for stmt in SCHEMA.split(";"):
                        if stmt.strip():
                            c.execute(stmt)
        except sqlite3.DatabaseError as e:
            raise LibraryError(f"{self.db_path} is not a peoplemap library ({e})") from None
        if v is None or not str(v[0]).isdigit():
            raise LibraryError(f"{self.db_path} is not a peoplemap library (no schema version)")
        if int(v[0]) > SCHEMA_VERSION:
            raise LibraryError(
                f"{self.db_path} was written by a newer peoplemap (schema {v[0]}, this one reads "
                f"{SCHEMA_VERSION}); upgrade peoplemap")

    @contextmanager
    def write(self) -> Iterator[sqlite3.Connection]:
        """One write transaction (BEGIN IMMEDIATE: takes the write lock up front, waits if busy)."""
        c = self.conn()
        c.execute("BEGIN IMMEDIATE")
        try:
            yield c
        except BaseException:
            c.execute("ROLLBACK")
            raise
        else:
            c.execute("COMMIT")

    def query(self, sql: str, params: tuple | list = ()) -> list[tuple]:
        return self.conn().execute(sql, params).fetchall()

    def one(self, sql: str, params: tuple | list = ()) -> tuple | None:
        return self.conn().execute(sql, params).fetchone()

    def close(self) -> None:
        with self._lock:
            for c in self._all.values():
                try:
                    c.close()
                except sqlite3.Error:
                    pass
            self._all.clear()
        self._local = threading.local()

    # -- runs ---------------------------------------------------------------------------------
    def start_run(self, kind: str, params: dict[str, Any]) -> int:
        with self.write() as c:
            cur = c.execute(
                "INSERT INTO runs(kind, status, params, started_at) VALUES (?, 'running', ?, ?)",
                (kind, json.dumps(params), time.time()))
            return int(cur.lastrowid)

    def finish_run(self, run_id: int, status: str, summary: dict[str, Any]) -> None:
        with self.write() as c:
            c.execute("UPDATE runs SET status=?, summary=?, finished_at=? WHERE id=?",
                      (status, json.dumps(summary), time.time(), run_id))


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
