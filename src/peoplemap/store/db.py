"""One library's SQLite file: per-thread connections in WAL mode, write transactions, snapshots.

Only the storage package uses this; stage modules get the repositories built on it.
"""
from __future__ import annotations

import sqlite3
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from ..errors import LibraryError

DB_NAME = "library.sqlite"


class Database:
    """Thread-safe access to one library's SQLite file: one connection per thread, WAL mode."""

    def __init__(self, db_path: Path):
        self.db_path = db_path
        self._local = threading.local()
        self._all: dict[int, sqlite3.Connection] = {}  # thread ident -> its connection
        self._lock = threading.Lock()

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

    def connections(self) -> int:
        """How many connections are open (one per live thread that used the library)."""
        with self._lock:
            return len(self._all)

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

    @contextmanager
    def snapshot(self) -> Iterator[sqlite3.Connection]:
        """Several reads that see one state of the file (a read transaction, unless one is open)."""
        c = self.conn()
        own = not c.in_transaction
        if own:
            c.execute("BEGIN")
        try:
            yield c
        finally:
            if own:
                c.execute("COMMIT")

    def query(self, sql: str, params: tuple | list = ()) -> list[tuple]:
        return self.conn().execute(sql, params).fetchall()

    def one(self, sql: str, params: tuple | list = ()) -> tuple | None:
        return self.conn().execute(sql, params).fetchone()

    def checkpoint(self) -> None:
        """Fold the WAL into the main file and empty it (after deleting biometric data)."""
        self.conn().execute("PRAGMA wal_checkpoint(TRUNCATE)")

    def close(self) -> None:
        with self._lock:
            for c in self._all.values():
                try:
                    c.close()
                except sqlite3.Error:
                    pass
            self._all.clear()
        self._local = threading.local()


def in_chunks(seq, n: int = 500):
    """Slices of at most n: SQLite limits the number of ? in one statement."""
    seq = list(seq)
    for i in range(0, len(seq), n):
        yield seq[i:i + n]


def marks(n: int) -> str:
    return ",".join("?" * n)
