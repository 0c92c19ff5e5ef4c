"""SQLite implementation of :class:`gateway.rounds.RoundJournal`.

Adapter (file I/O). One table, append-only, WAL with ``synchronous=FULL``:
an entry is durable when :meth:`SqliteJournal.append` returns, before the
gateway forwards the message it describes. Weights are stored as an
``.npz`` blob (``allow_pickle=False`` on load). Rounds older than the last
``keep_rounds`` of a session may be pruned with :meth:`prune`.

Forwarding state: a ``leaf``/``weights`` row carries the message's original
bytes in ``data`` until a ``forwarded`` or ``trained`` row for the same
(session, round, device, seq) is appended; that append clears ``data`` in
the same transaction, so the journal holds the bytes only of messages that
may still have to be forwarded after a restart. A journal written before
this column existed is migrated on open (``ALTER TABLE ... ADD COLUMN``).

Counters: table ``counters`` keeps persisted metric totals (rejections and
the like) across gateway restarts: :meth:`add_counters` adds a batch of
increments in one transaction, :meth:`load_counters` reads the totals.
"""

from __future__ import annotations

import io
import json
import sqlite3
import threading
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from gateway.rounds import JournalEntry
from protocol.errors import SpoolError
from service.files import open_sqlite

__all__ = ["SqliteJournal"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS journal (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    session TEXT NOT NULL, round INTEGER NOT NULL, kind TEXT NOT NULL,
    device TEXT NOT NULL, seq INTEGER NOT NULL, samples INTEGER NOT NULL,
    epsilon REAL NOT NULL, leaf BLOB NOT NULL, weights BLOB, info TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS journal_round ON journal(session, round, id);
CREATE TABLE IF NOT EXISTS counters (
    name TEXT NOT NULL, labels TEXT NOT NULL, value REAL NOT NULL,
    PRIMARY KEY (name, labels)
);
"""
_CLEARS_DATA = frozenset({"forwarded", "trained"})


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
            self._db = open_sqlite(self.path, _SCHEMA, create_parent=True)
            cols = {r[1] for r in self._db.execute("PRAGMA table_info(journal)")}
            if "data" not in cols:
                self._db.execute("ALTER TABLE journal ADD COLUMN data BLOB")
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
            entry.data or None,
        )
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
                try:
                    self._db.execute(
                        "INSERT INTO journal(session, round, kind, device, seq, samples,"
                        " epsilon, leaf, weights, info, data) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                        row,
                    )
                    if entry.kind in _CLEARS_DATA:
                        self._db.execute(
                            "UPDATE journal SET data=NULL WHERE session=? AND round=? AND"
                            " device=? AND seq=? AND kind IN ('leaf', 'weights')",
                            (session, round_no, entry.device, entry.seq),
                        )
                    self._db.execute("COMMIT")
                except BaseException:
                    self._db.execute("ROLLBACK")
                    raise
            except sqlite3.Error as exc:
                raise SpoolError(f"cannot write round journal: {exc}") from exc

    def load(self, session: str, round_no: int) -> list[JournalEntry]:
        with self._lock:
            try:
                rows = self._db.execute(
                    "SELECT kind, device, seq, samples, epsilon, leaf, weights, info, data"
                    " FROM journal WHERE session=? AND round=? ORDER BY id",
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
                data=bytes(b) if b else b"",
            )
            for k, d, s, n, e, lf, w, i, b in rows
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

    def add_counters(self, increments: Mapping[tuple[str, str], float]) -> None:
        """Add ``{(name, labels_json): amount}`` to the persisted totals, atomically."""
        if not increments:
            return
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
                try:
                    self._db.executemany(
                        "INSERT INTO counters(name, labels, value) VALUES (?,?,?)"
                        " ON CONFLICT(name, labels) DO UPDATE SET value = value + excluded.value",
                        [(n, lab, float(v)) for (n, lab), v in sorted(increments.items())],
                    )
                    self._db.execute("COMMIT")
                except BaseException:
                    self._db.execute("ROLLBACK")
                    raise
            except sqlite3.Error as exc:
                raise SpoolError(f"cannot write counters: {exc}") from exc

    def load_counters(self) -> dict[tuple[str, str], float]:
        """Persisted totals ``{(name, labels_json): value}``."""
        with self._lock:
            try:
                rows = self._db.execute("SELECT name, labels, value FROM counters").fetchall()
            except sqlite3.Error as exc:
                raise SpoolError(f"cannot read counters: {exc}") from exc
        return {(str(n), str(lab)): float(v) for n, lab, v in rows}

    def close(self) -> None:
        with self._lock:
            self._db.close()
