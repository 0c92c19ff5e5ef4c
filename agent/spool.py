"""Offline spool: a durable, ordered SQLite queue of outgoing envelopes.

Theory of operation
-------------------
``put`` appends a row in one committed transaction (WAL journal,
``synchronous=FULL``: the row is on disk when ``put`` returns).  Rows get an
increasing integer ``id``; the publisher sends them in ``id`` order and calls
``ack(id)`` only when the broker's PUBACK reports success, which deletes the
row.  After a reconnect or a restart the publisher starts again from the
lowest ``id``, so every spooled row is sent at least once and in order;
receivers de-duplicate by the envelope's sequence number.

The spool is bounded by ``max_messages`` and ``max_bytes`` (payload bytes).
When a new row does not fit, the configured overflow policy applies:

* ``drop_oldest``: delete the oldest rows until it fits; each is counted in
  the persistent ``dropped`` counter (and logged) - data is lost, on purpose.
* ``stop_sampling``: refuse the new row with :class:`SpoolFull` (counted in
  ``refused``); the agent stops producing until the spool drains.

A message the broker rejects for good (PUBACK reason code >= 0x80, e.g. not
authorised) is moved to the ``dead`` table by ``dead_letter``, never silently
deleted.  The spool also keeps small persistent metadata (``meta``): the
per-device sequence counter (allocated in the same transaction as ``put``),
the MQTT bdSeq, and the accountant instance id.

One spool is shared by the producing thread and the MQTT network thread; a
lock serialises access to the single connection.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from protocol.errors import SpoolError
from service.files import open_sqlite

log = logging.getLogger(__name__)

Overflow = Literal["drop_oldest", "stop_sampling"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS messages (
    id INTEGER PRIMARY KEY AUTOINCREMENT, topic TEXT NOT NULL, payload BLOB NOT NULL,
    qos INTEGER NOT NULL, retain INTEGER NOT NULL, seq INTEGER, mid INTEGER);
CREATE TABLE IF NOT EXISTS dead (
    id INTEGER PRIMARY KEY, topic TEXT NOT NULL, payload BLOB NOT NULL, seq INTEGER,
    reason TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS records (digest TEXT PRIMARY KEY, id INTEGER NOT NULL UNIQUE);
"""


class SpoolFull(SpoolError):  # noqa: N818 - named like BudgetExceeded, as the design specifies
    """The spool is full and its overflow policy is ``stop_sampling``."""


@dataclass(frozen=True, slots=True, kw_only=True)
class SpooledMessage:
    id: int
    topic: str
    payload: bytes
    qos: int
    retain: bool
    seq: int | None


class Spool:
    """Durable FIFO of outgoing MQTT messages (see module docstring)."""

    def __init__(self, path: str | Path, *, max_messages: int = 100_000,
                 max_bytes: int = 256 * 1024 * 1024, overflow: Overflow = "drop_oldest") -> None:
        if max_messages < 1 or max_bytes < 1:
            raise SpoolError("max_messages and max_bytes must be >= 1")
        if overflow not in ("drop_oldest", "stop_sampling"):
            raise SpoolError(f"overflow must be 'drop_oldest' or 'stop_sampling', not {overflow!r}")
        self.path = Path(path)
        self.max_messages, self.max_bytes, self.overflow = max_messages, max_bytes, overflow
        self._lock = threading.Lock()
        try:
            self._db = open_sqlite(self.path, _SCHEMA)
        except (sqlite3.Error, OSError) as exc:
            raise SpoolError(f"cannot open spool {self.path}: {exc}") from exc

    # -- producing ------------------------------------------------------------------
    def next_seq(self) -> int:
        """The sequence number the next ``put(..., seq=...)`` should carry."""
        return int(self.get_meta("next_seq") or 0)

    def put(self, topic: str, payload: bytes, *, qos: int = 1, retain: bool = False,
            seq: int | None = None) -> int:
        """Append one message (committed on return); returns its id.

        With ``seq`` the persistent sequence counter becomes ``seq + 1`` in the
        same transaction.
        """
        if qos not in (0, 1, 2):
            raise SpoolError(f"qos must be 0, 1 or 2, got {qos}")
        size = len(payload)
        if size > self.max_bytes:
            raise SpoolFull(f"message of {size} bytes is larger than the spool ({self.max_bytes})")
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
                try:
                    self._make_room(size)
                    cur = self._db.execute(
                        "INSERT INTO messages(topic, payload, qos, retain, seq) VALUES (?,?,?,?,?)",
                        (topic, payload, qos, int(retain), seq))
                    if seq is not None:
                        self._set_meta_locked("next_seq", str(seq + 1))
                    self._db.execute("COMMIT")
                except BaseException:
                    self._db.execute("ROLLBACK")
                    raise
            except sqlite3.Error as exc:
                raise SpoolError(f"spool write failed: {exc}") from exc
        assert cur.lastrowid is not None
        return int(cur.lastrowid)

    def _make_room(self, size: int) -> None:
        n, total = self._db.execute(
            "SELECT COUNT(*), COALESCE(SUM(LENGTH(payload)), 0) FROM messages").fetchone()
        if n + 1 <= self.max_messages and total + size <= self.max_bytes:
            return
        if self.overflow == "stop_sampling":
            self._bump_locked("refused", 1)
            self._db.execute("COMMIT")
            self._db.execute("BEGIN IMMEDIATE")
            raise SpoolFull(f"spool full ({n} messages, {total} bytes): sampling stopped")
        dropped = 0
        for row_id, length in self._db.execute(
                "SELECT id, LENGTH(payload) FROM messages ORDER BY id").fetchall():
            if n + 1 <= self.max_messages and total + size <= self.max_bytes:
                break
            self._db.execute("DELETE FROM messages WHERE id = ?", (row_id,))
            n, total, dropped = n - 1, total - length, dropped + 1
        self._bump_locked("dropped", dropped)
        log.warning("spool full: dropped %d oldest message(s)", dropped)

    def would_fit(self, size: int) -> bool:
        """True if a ``size``-byte message fits without dropping anything."""
        n, total = self._query("SELECT COUNT(*), COALESCE(SUM(LENGTH(payload)), 0) FROM messages",
                               ())[0]
        return bool(n + 1 <= self.max_messages and total + size <= self.max_bytes)

    # -- draining ---------------------------------------------------------------------
    def peek_batch(self, n: int, *, after_id: int = 0) -> list[SpooledMessage]:
        """Up to ``n`` oldest messages with ``id > after_id``, in order."""
        rows = self._query("SELECT id, topic, payload, qos, retain, seq FROM messages "
                           "WHERE id > ? ORDER BY id LIMIT ?", (after_id, n))
        return [SpooledMessage(id=r[0], topic=r[1], payload=bytes(r[2]), qos=r[3],
                               retain=bool(r[4]), seq=r[5]) for r in rows]

    def mark_inflight(self, msg_id: int, mid: int) -> None:
        self._write("UPDATE messages SET mid = ? WHERE id = ?", (mid, msg_id))

    def ack(self, msg_id: int) -> bool:
        """Delete a message the broker acknowledged; False if it was already gone."""
        return self._write("DELETE FROM messages WHERE id = ?", (msg_id,)) > 0

    def ack_many(self, msg_ids: list[int]) -> int:
        """Delete several acknowledged messages in one transaction (one fsync)."""
        if not msg_ids:
            return 0
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
                n = sum(self._db.execute("DELETE FROM messages WHERE id = ?", (i,)).rowcount
                        for i in msg_ids)
                self._db.execute("COMMIT")
            except sqlite3.Error as exc:
                raise SpoolError(f"spool write failed: {exc}") from exc
        return int(n)

    def dead_letter(self, msg_id: int, reason: str) -> None:
        """Move a message the broker rejected for good to the ``dead`` table."""
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
                self._db.execute("INSERT OR REPLACE INTO dead(id, topic, payload, seq, reason) "
                                 "SELECT id, topic, payload, seq, ? FROM messages WHERE id = ?",
                                 (reason, msg_id))
                self._db.execute("DELETE FROM messages WHERE id = ?", (msg_id,))
                self._db.execute("COMMIT")
            except sqlite3.Error as exc:
                raise SpoolError(f"spool write failed: {exc}") from exc

    # -- counters and metadata -------------------------------------------------------------
    @property
    def depth(self) -> int:
        return int(self._query("SELECT COUNT(*) FROM messages", ())[0][0])

    @property
    def size_bytes(self) -> int:
        return int(self._query("SELECT COALESCE(SUM(LENGTH(payload)), 0) FROM messages", ())[0][0])

    @property
    def dropped(self) -> int:
        return int(self.get_meta("dropped") or 0)

    @property
    def refused(self) -> int:
        return int(self.get_meta("refused") or 0)

    @property
    def dead(self) -> int:
        return int(self._query("SELECT COUNT(*) FROM dead", ())[0][0])

    def get_meta(self, key: str) -> str | None:
        rows = self._query("SELECT value FROM meta WHERE key = ?", (key,))
        return str(rows[0][0]) if rows else None

    def set_meta(self, key: str, value: str) -> None:
        with self._lock:
            try:
                self._set_meta_locked(key, value)
            except sqlite3.Error as exc:
                raise SpoolError(f"spool write failed: {exc}") from exc

    def increment_meta(self, key: str) -> int:
        """Atomically add one to an integer metadata value; returns the new value."""
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
                self._bump_locked(key, 1)
                self._db.execute("COMMIT")
            except sqlite3.Error as exc:
                raise SpoolError(f"spool write failed: {exc}") from exc
            row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return int(row[0])

    def record_id_for(self, digest: str, *, counter: str = "record_next_id") -> tuple[int, bool]:
        """The record id of the window with content ``digest``: ``(id, True)`` when new.

        A new digest gets the next value of the ``counter`` metadata (never reused);
        mapping and counter are committed together (synchronous=FULL) before the
        id is returned, so a crash cannot hand the same window a second id.
        """
        with self._lock:
            try:
                row = self._db.execute("SELECT id FROM records WHERE digest = ?",
                                       (digest,)).fetchone()
                if row is not None:
                    return int(row[0]), False
                self._db.execute("BEGIN IMMEDIATE")
                self._bump_locked(counter, 1)
                rid = int(self._db.execute("SELECT value FROM meta WHERE key = ?",
                                           (counter,)).fetchone()[0])
                self._db.execute("INSERT INTO records(digest, id) VALUES (?, ?)", (digest, rid))
                self._db.execute("COMMIT")
            except sqlite3.Error as exc:
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                raise SpoolError(f"spool write failed: {exc}") from exc
        return rid, True

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # -- helpers -----------------------------------------------------------------------
    def _set_meta_locked(self, key: str, value: str) -> None:
        self._db.execute("INSERT INTO meta(key, value) VALUES (?, ?) "
                         "ON CONFLICT(key) DO UPDATE SET value = excluded.value", (key, value))

    def _bump_locked(self, key: str, by: int) -> None:
        self._db.execute("INSERT INTO meta(key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE "
                         "SET value = CAST(value AS INTEGER) + ?", (key, str(by), by))

    def _query(self, sql: str, args: tuple[object, ...]) -> list[Any]:
        with self._lock:
            try:
                return list(self._db.execute(sql, args).fetchall())
            except sqlite3.Error as exc:
                raise SpoolError(f"spool read failed: {exc}") from exc

    def _write(self, sql: str, args: tuple[object, ...]) -> int:
        with self._lock:
            try:
                return int(self._db.execute(sql, args).rowcount)
            except sqlite3.Error as exc:
                raise SpoolError(f"spool write failed: {exc}") from exc
