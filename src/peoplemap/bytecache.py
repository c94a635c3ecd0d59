"""A bounded in-memory cache of bytes (thumbnails, photos with boxes), least recently used first out.

Shared by the app and the HTTP API; thread-safe, values are immutable bytes."""
from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Optional


class ByteCache:
    """Bytes by key; the least recently used are dropped once the total passes max_bytes."""

    def __init__(self, max_bytes: int):
        self.max_bytes = max_bytes
        self._data: OrderedDict[tuple, bytes] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def get(self, key: tuple) -> Optional[bytes]:
        with self._lock:
            data = self._data.get(key)
            if data is not None:
                self._data.move_to_end(key)
            return data

    def put(self, key: tuple, data: bytes) -> None:
        with self._lock:
            old = self._data.pop(key, None)
            self._bytes += len(data) - (len(old) if old is not None else 0)
            self._data[key] = data
            while self._bytes > self.max_bytes and len(self._data) > 1:
                _k, dropped = self._data.popitem(last=False)
                self._bytes -= len(dropped)

    def clear(self) -> None:
        with self._lock:
            self._data.clear()
            self._bytes = 0

    def __len__(self) -> int:
        return len(self._data)
