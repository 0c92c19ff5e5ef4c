"""SQLite implementation of :class:`gateway.rounds.RoundJournal`.

Adapter (file I/O). One table, append-only, WAL with ``synchronous=FULL``:
an entry is durable when :meth:`SqliteJournal.append` returns, before the
gateway forwards the message it describes. Weights are stored as an
``.npz`` blob (``allow_pickle=False`` on load). Rounds older than the last
``keep_rounds`` of a session may be pruned with :meth:`prune`.
"""

from __future__ import annotations

import io
import json
import sqlite3
import threading
from pathlib import Path

import numpy as np

from gateway.rounds import JournalEntry
from protocol.errors import SpoolError

__all__ = ["SqliteJournal"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS journal (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    session TEXT NOT NULL, round INTEGER NOT NULL, kind TEXT NOT NULL,
    device TEXT NOT NULL, seq INTEGER NOT NULL, samples INTEGER NOT NULL,
    epsilon REAL NOT NULL, leaf BLOB NOT NULL, weights BLOB, info TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS journal_round ON journal(session, round, id);
"""


def _pack(ws: tuple[np.ndarray, ...]) -> bytes | None:
    if not ws:
        return None
    buf = io.BytesIO()
    np.savez(buf, *ws)
    return buf.getvalue()


def _unpack(blob: bytes | None) -> tuple[np.ndarray, ...]:
    if not blob:
        return ()
    with np.load(io.BytesIO(blob), allow_pickle=False) as z:
        return tuple(np.array(z[f"arr_{i}"]) for i in range(len(z.files)))


class SqliteJournal:
    """Durable round journal in one SQLite file."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.executescript(_SCHEMA)
        except (sqlite3.Error, OSError) as exc:
            raise SpoolError(f"cannot open round journal {self.path}: {exc}") from exc

    def append(self, session: str, round_no: int, entry: JournalEntry) -> None:
        row = (
            session,
            round_no,
            entry.kind,
            entry.device,
            entry.seq,
            entry.samples,
            float(entry.epsilon),
            entry.leaf,
            _pack(entry.weights),
            json.dumps(dict(entry.info)),
        )
        with self._lock:
            try:
                self._db.execute(
                    "INSERT INTO journal(session, round, kind, device, seq, samples, epsilon,"
                    " leaf, weights, info) VALUES (?,?,?,?,?,?,?,?,?,?)",
                    row,
                )
            except sqlite3.Error as exc:
                raise SpoolError(f"cannot write round journal: {exc}") from exc

    def load(self, session: str, round_no: int) -> list[JournalEntry]:
        with self._lock:
            try:
                rows = self._db.execute(
                    "SELECT kind, device, seq, samples, epsilon, leaf, weights, info FROM journal"
                    " WHERE session=? AND round=? ORDER BY id",
                    (session, round_no),
                ).fetchall()
            except sqlite3.Error as exc:
                raise SpoolError(f"cannot read round journal: {exc}") from exc
        return [
            JournalEntry(
                kind=k,
                device=d,
                seq=s,
                samples=n,
                epsilon=e,
                leaf=bytes(lf),
                weights=_unpack(w),
                info=json.loads(i),
            )
            for k, d, s, n, e, lf, w, i in rows
        ]

    def latest_round(self, session: str) -> int | None:
        """The highest round number journaled for ``session``, if any."""
        with self._lock:
            row = self._db.execute(
                "SELECT MAX(round) FROM journal WHERE session=?", (session,)
            ).fetchone()
        return None if row is None or row[0] is None else int(row[0])

    def prune(self, session: str, *, keep_rounds: int = 3) -> None:
        """Delete journal entries of rounds older than the last ``keep_rounds``."""
        last = self.latest_round(session)
        if last is None:
            return
        with self._lock:
            self._db.execute(
                "DELETE FROM journal WHERE session=? AND round<=?", (session, last - keep_rounds)
            )

    def close(self) -> None:
        with self._lock:
            self._db.close()
