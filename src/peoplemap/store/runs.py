"""Runs: each index, cluster and forget, with its parameters, outcome and summary."""
from __future__ import annotations

import json
import time
from typing import Any

from ..responses import RunInfo
from .db import Database


class RunsRepo:
    def __init__(self, db: Database):
        self.db = db

    def start(self, kind: str, params: dict[str, Any]) -> int:
        with self.db.write() as c:
            return int(c.execute(
                "INSERT INTO runs(kind, status, params, started_at) VALUES (?, 'running', ?, ?)",
                (kind, json.dumps(params), time.time())).lastrowid)

    def finish(self, run_id: int, status: str, summary: dict[str, Any]) -> None:
        with self.db.write() as c:
            c.execute("UPDATE runs SET status=?, summary=?, finished_at=? WHERE id=?",
                      (status, json.dumps(summary), time.time(), run_id))

    def last(self, limit: int = 5, kind: str | None = None) -> list[RunInfo]:
        """The newest runs first; a summary's list of skipped files is given as its length."""
        sql = "SELECT id, kind, status, params, summary, started_at, finished_at FROM runs"
        params: tuple = ()
        if kind is not None:
            sql, params = sql + " WHERE kind = ?", (kind,)
        out = []
        for i, k, st, p, s, a, b in self.db.query(sql + " ORDER BY id DESC LIMIT ?", (*params, int(limit))):
            summary = json.loads(s) if s else None
            if summary and isinstance(summary.get("skipped"), list):
                summary["skipped"] = len(summary["skipped"])
            out.append(RunInfo(int(i), k, st, json.loads(p), summary, a, b))
        return out
