"""Durable local files: atomic replace and the SQLite open sequence.

Theory of operation
-------------------
:func:`atomic_write` writes ``data`` to a temporary file beside ``path``
(same directory, so the rename never crosses a file system), fsyncs it,
renames it over ``path`` and, with ``durable=True``, fsyncs the directory so
the rename itself survives a power cut. A reader therefore sees the old or
the new content, never a torn mix; a crash leaves at most the temporary file,
which the next write truncates. ``durable=False`` skips both fsyncs (status
files rewritten every few seconds, where the newest wins anyway).

:func:`open_sqlite` is how every role opens its database: the parent
directory created on request (a missing state directory is usually a config
error), autocommit (``isolation_level=None``: transactions are explicit
``BEGIN IMMEDIATE`` in the callers), usable from several threads behind the
caller's lock, WAL journal and ``synchronous=FULL`` (a committed transaction
is on disk when ``COMMIT`` returns), then the caller's schema script.

Both raise ``OSError`` / ``sqlite3.Error`` unchanged: each caller translates
them into its own :mod:`protocol.errors` type (``SpoolError``, ``LedgerError``
...), at its own boundary.
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

__all__ = ["atomic_write", "open_sqlite"]


def atomic_write(path: Path, data: bytes, *, mode: int = 0o600, durable: bool = True) -> None:
    """Replace ``path`` with ``data`` atomically (see the module docstring)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        os.fchmod(fd, mode)  # also when a leftover temporary file existed
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        if durable:
            os.fsync(fd)
    finally:
        os.close(fd)
    tmp.replace(path)
    if durable:
        dfd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)


def open_sqlite(path: Path, schema: str = "", *, create_parent: bool = False) -> sqlite3.Connection:
    """Open (creating) the database at ``path`` the one way (see the module docstring)."""
    path = Path(path)
    if create_parent:
        path.parent.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
    try:
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=FULL")
        if schema:
            db.executescript(schema)
    except BaseException:
        db.close()
        raise
    return db
