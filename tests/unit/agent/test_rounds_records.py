"""Pure agent logic: record store epochs, pending gradients, the device round machine."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.pending import Pending, PendingBatches
from agent.records import RecordStore
from agent.rounds import DeviceRound, Phase, RoundPlan
from protocol.errors import SplitfedError


def _store(n: int, capacity: int = 100, seed: int = 0) -> RecordStore:
    store = RecordStore(capacity=capacity, rng=np.random.default_rng(seed))
    for i in range(n):
        store.add(i, np.full((1, 4), i, dtype=np.float32), i % 3)
    return store


@given(n=st.integers(1, 40), batch=st.integers(1, 9), epochs=st.integers(1, 4))
@settings(max_examples=60, deadline=None)
def test_every_record_used_once_per_epoch(n: int, batch: int, epochs: int) -> None:
    store = _store(n)
    seen: list[int] = []
    while len(seen) < n * epochs:
        b = store.next_batch(batch)
        assert b is not None
        seen.extend(b.ids)
        # inputs travel with their ids
        assert all(b.x[i, 0, 0] == rid for i, rid in enumerate(b.ids))
    for e in range(epochs):
        chunk = seen[e * n:(e + 1) * n]
        assert sorted(chunk) == list(range(n)), f"epoch {e} did not use each record once"


def test_eviction_keeps_newest_and_unlabelled_windows_go_to_inference() -> None:
    store = _store(5, capacity=3)
    assert len(store) == 3 and store.evicted == 2
    b = store.next_batch(10)
    assert b is not None and sorted(b.ids) == [2, 3, 4]
    store.add(9, np.zeros((1, 4), np.float32), None)
    assert store.labelled_count() == 2 and store.evicted == 3  # record 2 made room
    inf = store.take_unlabelled(4)
    assert inf is not None and inf.ids == (9,) and inf.labels is None
    assert store.take_unlabelled(4) is None
    with pytest.raises(SplitfedError):
        store.add(4, np.zeros((1, 4), np.float32), 1)


def test_pending_expires_in_order_and_ignores_duplicates() -> None:
    p = PendingBatches(max_pending=2, timeout_s=10)
    x = np.zeros((1, 1, 4), np.float32)
    p.add(Pending(seq=1, round=0, step=0, ids=(1,), x=x, sent_at=0.0))
    p.add(Pending(seq=2, round=0, step=1, ids=(2,), x=x, sent_at=5.0))
    assert p.full()
    with pytest.raises(SplitfedError):
        p.add(Pending(seq=3, round=0, step=2, ids=(3,), x=x, sent_at=6.0))
    assert [e.seq for e in p.expire(12.0)] == [1]
    assert p.take(1) is None  # gradient for an expired batch: ignored
    got = p.take(2)
    assert got is not None and got.ids == (2,)
    assert p.take(2) is None  # redelivered gradient: not applied twice
    assert p.unknown == 2 and p.expired == 1


def _plan(r: int, steps: int = 3) -> RoundPlan:
    return RoundPlan(session="s", round=r, steps=steps, batch_size=4, lr=0.01)


def test_round_lifecycle_and_stale_commands() -> None:
    dr = DeviceRound()
    assert dr.start(_plan(0))
    assert not dr.start(_plan(0))  # duplicate start_round
    for _ in range(3):
        assert dr.may_release(pending_full=False)
        dr.note_released()
    assert not dr.may_release(pending_full=False)
    dr.note_finished(0, 2)
    assert dr.phase == Phase.TRAINING
    dr.note_finished(0)
    assert dr.phase == Phase.UPLOAD_DUE
    dr.note_uploaded()
    assert dr.phase == Phase.IDLE and dr.last_completed == 0
    assert not dr.start(_plan(0))  # a replayed old start_round
    assert not dr.start(RoundPlan(session="other", round=1, steps=1, batch_size=1, lr=0.1))
    assert dr.start(_plan(1))


def test_halted_device_releases_nothing_but_still_uploads() -> None:
    dr = DeviceRound()
    dr.start(_plan(0, steps=5))
    dr.note_released()
    dr.halt("budget")
    assert not dr.may_release(pending_full=False)
    dr.note_no_more_releases(pending=1)
    assert dr.phase == Phase.TRAINING  # still waiting for the one in flight
    dr.note_finished(0)
    dr.note_no_more_releases(pending=0)
    assert dr.phase == Phase.UPLOAD_DUE
    assert dr.stop(0) is True
    dr.note_uploaded()
    assert dr.start(_plan(1)) and not dr.may_release(pending_full=False)
