"""Atomic file replace and the shared SQLite open sequence."""

from __future__ import annotations

import sqlite3
import stat
from pathlib import Path

import pytest

from service.files import atomic_write, open_sqlite


@pytest.mark.parametrize("durable", [True, False])
def test_atomic_write_replaces_and_leaves_no_temp(tmp_path: Path, durable: bool) -> None:
    target = tmp_path / "state.json"
    target.write_bytes(b"old")
    (tmp_path / ".state.json.tmp").write_bytes(b"a torn leftover of a crashed write" * 10)
    atomic_write(target, b"new", durable=durable)
    assert target.read_bytes() == b"new"
    assert stat.S_IMODE(target.stat().st_mode) & 0o077 == 0  # 0600 by default
    assert [p.name for p in tmp_path.iterdir()] == ["state.json"]


def test_atomic_write_into_missing_directory_raises(tmp_path: Path) -> None:
    with pytest.raises(OSError):
        atomic_write(tmp_path / "nope" / "x", b"1")


def test_open_sqlite_wal_full_schema_and_parent(tmp_path: Path) -> None:
    with pytest.raises(sqlite3.Error):
        open_sqlite(tmp_path / "sub" / "x.db")  # a missing directory is not created by default
    db = open_sqlite(tmp_path / "sub" / "x.db", "CREATE TABLE IF NOT EXISTS t (a INTEGER);",
                     create_parent=True)
    try:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert db.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
        db.execute("INSERT INTO t VALUES (1)")  # autocommit
    finally:
        db.close()
    again = sqlite3.connect(tmp_path / "sub" / "x.db")
    try:
        assert again.execute("SELECT a FROM t").fetchall() == [(1,)]
    finally:
        again.close()


def test_open_sqlite_bad_schema_closes_and_raises(tmp_path: Path) -> None:
    with pytest.raises(sqlite3.Error):
        open_sqlite(tmp_path / "y.db", "CREATE TABLE broken (")
