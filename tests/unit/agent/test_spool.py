from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.spool import Spool, SpoolFull
from protocol.errors import SpoolError


def test_fifo_ack_and_persistence(tmp_path: Path) -> None:
    sp = Spool(tmp_path / "s.db")
    ids = [sp.put("t/up", f"m{i}".encode(), seq=i) for i in range(5)]
    assert ids == sorted(ids) and sp.depth == 5 and sp.next_seq() == 5
    assert [m.payload for m in sp.peek_batch(2)] == [b"m0", b"m1"]
    assert [m.seq for m in sp.peek_batch(10, after_id=ids[2])] == [3, 4]
    sp.mark_inflight(ids[0], 17)
    assert sp.ack(ids[0]) and not sp.ack(ids[0])
    sp.close()
    again = Spool(tmp_path / "s.db")
    assert [m.payload for m in again.peek_batch(10)] == [b"m1", b"m2", b"m3", b"m4"]
    assert again.next_seq() == 5
    mode = again._db.execute("PRAGMA journal_mode").fetchone()[0]
    assert mode == "wal"
    again.close()


def test_drop_oldest_counts_and_persists(tmp_path: Path) -> None:
    sp = Spool(tmp_path / "s.db", max_messages=3, overflow="drop_oldest")
    for i in range(7):
        sp.put("t", bytes([i]))
    assert [m.payload for m in sp.peek_batch(10)] == [b"\x04", b"\x05", b"\x06"]
    assert sp.dropped == 4
    sp.close()
    again = Spool(tmp_path / "s.db", max_messages=3)
    assert again.dropped == 4
    again.close()


def test_byte_bound_and_stop_sampling(tmp_path: Path) -> None:
    sp = Spool(tmp_path / "s.db", max_bytes=10, overflow="stop_sampling")
    sp.put("t", b"12345")
    sp.put("t", b"12345")
    with pytest.raises(SpoolFull):
        sp.put("t", b"1")
    with pytest.raises(SpoolFull):
        sp.put("t", b"x" * 11)
    assert sp.depth == 2 and sp.refused == 1 and sp.dropped == 0
    sp.ack(sp.peek_batch(1)[0].id)
    sp.put("t", b"1")  # room again
    assert sp.depth == 2
    sp.close()


def test_ack_many(tmp_path: Path) -> None:
    sp = Spool(tmp_path / "s.db")
    ids = [sp.put("t", bytes([i])) for i in range(5)]
    assert sp.ack_many([ids[0], ids[2], ids[2]]) == 2
    assert sp.ack_many([]) == 0
    assert [m.payload for m in sp.peek_batch(10)] == [b"\x01", b"\x03", b"\x04"]
    sp.close()


def test_dead_letter_keeps_the_message(tmp_path: Path) -> None:
    sp = Spool(tmp_path / "s.db")
    i = sp.put("t", b"rejected", seq=0)
    sp.dead_letter(i, "not authorised")
    assert sp.depth == 0 and sp.dead == 1
    sp.close()


def test_meta_counter_and_bad_config(tmp_path: Path) -> None:
    sp = Spool(tmp_path / "s.db")
    assert [sp.increment_meta("bd_seq") for _ in range(3)] == [1, 2, 3]
    sp.set_meta("k", "v")
    assert sp.get_meta("k") == "v" and sp.get_meta("nope") is None
    sp.close()
    with pytest.raises(SpoolError):
        Spool(tmp_path / "x.db", overflow="whatever")  # type: ignore[arg-type]
    with pytest.raises(SpoolError):
        Spool(tmp_path / "no" / "such" / "dir.db")


@settings(max_examples=30, deadline=None)
@given(ops=st.lists(st.one_of(st.binary(max_size=20), st.none()), max_size=40),
       cap=st.integers(1, 6))
def test_model_drop_oldest(tmp_path_factory: pytest.TempPathFactory, ops: list[bytes | None],
                           cap: int) -> None:
    """The spool behaves like a bounded deque: put appends, None acks the head."""
    sp = Spool(tmp_path_factory.mktemp("p") / "s.db", max_messages=cap)
    model: list[bytes] = []
    dropped = 0
    for op in ops:
        if op is None:
            if model:
                sp.ack(sp.peek_batch(1)[0].id)
                model.pop(0)
        else:
            sp.put("t", op)
            model.append(op)
            if len(model) > cap:
                model.pop(0)
                dropped += 1
    assert [m.payload for m in sp.peek_batch(100)] == model
    assert sp.dropped == dropped
    sp.close()
