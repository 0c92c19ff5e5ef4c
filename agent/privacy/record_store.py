"""Per-record privacy tallies in SQLite (adapter for :mod:`agent.privacy.accountant`).

One row per record id: ``rho`` (sum of Gaussian-DP mu^2) and ``pure`` (sum of
pure epsilon).  ``put_many`` writes a batch in one transaction (WAL,
``synchronous=FULL``: durable on return), so a spend costs O(batch), not
O(records ever seen).  The accountant writes here BEFORE its JSON summary;
after a crash between the two, the table is ahead of the summary, which the
accountant resolves upwards (over-count, never under-count).
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterable, Mapping
from pathlib import Path

from agent.privacy.errors import AccountantStateError

_CHUNK = 500


class RecordStore:
    """SQLite table ``records(id TEXT PRIMARY KEY, rho REAL, pure REAL)``."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        try:
            self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.execute("CREATE TABLE IF NOT EXISTS records ("
                             "id TEXT PRIMARY KEY, rho REAL NOT NULL, pure REAL NOT NULL)")
        except sqlite3.Error as exc:
            raise AccountantStateError(f"cannot open privacy record table {self.path}: {exc}"
                                       ) from exc

    def get_many(self, ids: Iterable[str]) -> dict[str, tuple[float, float]]:
        keys = list(dict.fromkeys(ids))
        out: dict[str, tuple[float, float]] = {}
        with self._lock:
            try:
                for i in range(0, len(keys), _CHUNK):
                    chunk = keys[i:i + _CHUNK]
                    marks = ",".join("?" * len(chunk))
                    for rid, rho, pure in self._db.execute(
                            f"SELECT id, rho, pure FROM records WHERE id IN ({marks})",  # noqa: S608 - placeholders only
                            chunk):
                        out[str(rid)] = (float(rho), float(pure))
            except sqlite3.Error as exc:
                raise AccountantStateError(f"privacy record table read failed: {exc}") from exc
        return out

    def put_many(self, tallies: Mapping[str, tuple[float, float]]) -> None:
        if not tallies:
            return
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
                self._db.executemany(
                    "INSERT INTO records(id, rho, pure) VALUES (?, ?, ?) ON CONFLICT(id) "
                    "DO UPDATE SET rho = excluded.rho, pure = excluded.pure",
                    [(k, v[0], v[1]) for k, v in tallies.items()])
                self._db.execute("COMMIT")
            except sqlite3.Error as exc:
                raise AccountantStateError(f"privacy record table write failed: {exc}") from exc

    def summary(self) -> tuple[int, float, float]:
        """(row count, max rho, max pure)."""
        with self._lock:
            try:
                n, rho, pure = self._db.execute(
                    "SELECT COUNT(*), COALESCE(MAX(rho), 0), COALESCE(MAX(pure), 0) FROM records"
                ).fetchone()
            except sqlite3.Error as exc:
                raise AccountantStateError(f"privacy record table read failed: {exc}") from exc
        return int(n), float(rho), float(pure)

    def close(self) -> None:
        with self._lock:
            self._db.close()
