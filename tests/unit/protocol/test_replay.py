"""Replay window: each number accepted once, stale refused, duplicates idempotent, persistence."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocol.errors import ConfigError, InvalidState, ReplayError
from protocol.replay import MAX_SEQ, ReplayGuard, ReplayWindow, Verdict

FRESH, DUP = Verdict.FRESH, Verdict.DUPLICATE


def test_in_order_then_redelivery() -> None:
    w = ReplayWindow(size=8)
    assert [w.observe(i) for i in range(5)] == [FRESH] * 5
    assert w.observe(3) is DUP  # QoS 1 redelivery: recognised, no exception
    assert w.observe(4) is DUP
    assert w.top == 4


def test_out_of_order_within_window() -> None:
    w = ReplayWindow(size=8)
    assert w.observe(10) is FRESH
    assert w.observe(5) is FRESH
    assert w.observe(5) is DUP
    assert w.observe(3) is FRESH  # 10 - 3 = 7 < 8
    with pytest.raises(ReplayError, match="older than the window"):
        w.observe(2)
    assert w.observe(11) is FRESH
    with pytest.raises(ReplayError):
        w.observe(3)  # slid out of the window


def test_big_jump_clears_the_window() -> None:
    w = ReplayWindow(size=4)
    w.observe(0)
    assert w.observe(MAX_SEQ) is FRESH
    assert w.observe(MAX_SEQ) is DUP
    assert w.observe(MAX_SEQ - 3) is FRESH
    with pytest.raises(ReplayError):
        w.observe(0)


def test_check_does_not_mark() -> None:
    w = ReplayWindow()
    assert w.check(5) is FRESH
    assert w.check(5) is FRESH
    assert w.observe(5) is FRESH
    assert w.check(5) is DUP


@pytest.mark.parametrize("bad", [-1, MAX_SEQ + 1, 1.0, True, "3", None])
def test_invalid_sequence_numbers(bad: object) -> None:
    with pytest.raises(ReplayError):
        ReplayWindow().observe(bad)  # type: ignore[arg-type]


@pytest.mark.parametrize("size", [0, -1, 1 << 17, 2.0])
def test_invalid_size(size: object) -> None:
    with pytest.raises(ConfigError):
        ReplayWindow(size=size)  # type: ignore[arg-type]


@settings(max_examples=200, deadline=None)
@given(
    size=st.integers(1, 64),
    seqs=st.lists(st.integers(0, 200), max_size=200),
    restart_at=st.integers(0, 200),
)
def test_never_accepts_a_number_twice(size: int, seqs: list[int], restart_at: int) -> None:
    w = ReplayWindow(size=size)
    accepted: set[int] = set()
    for i, seq in enumerate(seqs):
        if i == restart_at:  # a crash and a restart from persisted state, through JSON
            w = ReplayWindow.from_state_dict(json.loads(json.dumps(w.state_dict())))
        try:
            verdict = w.observe(seq)
        except ReplayError:
            assert w.top is not None and seq <= w.top - size
            continue
        if verdict is FRESH:
            assert seq not in accepted
            accepted.add(seq)
        else:
            assert seq in accepted
    # every number in the final window is reported exactly as seen / not seen
    if w.top is not None:
        for seq in range(max(0, w.top - size + 1), w.top + 1):
            assert (w.check(seq) is DUP) == (seq in accepted)


def test_guard_is_per_sender_and_survives_restart() -> None:
    g = ReplayGuard(size=16)
    assert g.observe("dev-a", 1) is FRESH
    assert g.observe("dev-b", 1) is FRESH  # same number, other sender
    assert g.observe("dev-a", 1) is DUP
    assert g.check("dev-c", 1) is FRESH
    assert "dev-c" not in g
    state = json.loads(json.dumps(g.state_dict()))
    g2 = ReplayGuard.from_state_dict(state)
    assert g2.observe("dev-a", 1) is DUP
    assert g2.observe("dev-b", 2) is FRESH
    assert list(g2) == ["dev-a", "dev-b"]
    assert len(g2) == 2
    g2.forget("dev-a")
    assert "dev-a" not in g2


@pytest.mark.parametrize(
    "state",
    [
        {},
        {"version": 2, "size": 8, "top": 1, "bitmap": "1"},
        {"version": 1, "size": 0, "top": 1, "bitmap": "1"},
        {"version": 1, "size": 8, "top": None, "bitmap": "1"},
        {"version": 1, "size": 8, "top": 5, "bitmap": "2"},  # top itself not marked
        {"version": 1, "size": 8, "top": 20, "bitmap": "1ff"},  # wider than the window
        {"version": 1, "size": 8, "top": 1, "bitmap": "f"},  # marks below zero
        {"version": 1, "size": 8, "top": -1, "bitmap": "1"},
        {"version": 1, "size": 8, "top": "3", "bitmap": "1"},
        {"version": 1, "size": 8, "top": 3, "bitmap": "xyz"},
        {"version": 1, "size": 8, "top": 3, "bitmap": 1},
        {"version": 1, "size": 8, "top": 3, "bitmap": "1", "extra": 0},
    ],
)
def test_corrupt_window_state_is_refused(state: dict[str, object]) -> None:
    with pytest.raises(InvalidState):
        ReplayWindow.from_state_dict(state)


def test_corrupt_guard_state_is_refused() -> None:
    good = ReplayGuard(size=8)
    good.observe("dev-a", 3)
    state = good.state_dict()
    ReplayGuard.from_state_dict(state)
    for bad in (
        {**state, "version": 0},
        {**state, "senders": []},
        {**state, "senders": {"a/b": ReplayWindow(size=8).state_dict()}},
        {**state, "size": 16},  # windows of size 8 inside a guard of 16
        {"version": 1, "size": 8},
    ):
        with pytest.raises(InvalidState):
            ReplayGuard.from_state_dict(bad)


def test_forward_jump_beyond_max_jump_is_refused_and_marks_nothing() -> None:
    from protocol.errors import SeqJumpError
    from protocol.replay import MAX_SEQ_JUMP

    w = ReplayWindow(size=8)
    assert w.observe(10, max_jump=MAX_SEQ_JUMP) is FRESH
    with pytest.raises(SeqJumpError):
        w.check(10 + MAX_SEQ_JUMP + 1, max_jump=MAX_SEQ_JUMP)
    with pytest.raises(SeqJumpError):
        w.observe(1 << 62, max_jump=MAX_SEQ_JUMP)
    assert w.top == 10  # the refused number did not move the window
    assert w.observe(11, max_jump=MAX_SEQ_JUMP) is FRESH
    assert w.observe(11 + MAX_SEQ_JUMP, max_jump=MAX_SEQ_JUMP) is FRESH  # exactly the bound
    # unbounded (clock-derived senders): any forward jump is fine
    assert w.observe(1 << 62) is FRESH


def test_guard_check_does_not_mark_so_a_later_observe_decides() -> None:
    g = ReplayGuard(size=8)
    g.observe("dev", 5)
    assert g.check("dev", 1 << 62) is FRESH  # would be fresh ...
    assert g.window("dev").top == 5  # ... but check marked nothing
    assert g.check("new", 3) is FRESH and "new" not in g
