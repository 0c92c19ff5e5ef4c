from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

from gateway.errors import RoundStateError
from gateway.journal import SqliteJournal
from gateway.rounds import GatewayRound, InMemoryJournal, Phase, RoundJournal
from protocol.merkle import audit_path, merkle_root, verify_inclusion


def _hash(ws: Sequence[np.ndarray]) -> str:
    h = hashlib.sha256()
    for w in ws:
        h.update(np.ascontiguousarray(w).tobytes())
    return h.hexdigest()


def _w(v: float) -> tuple[np.ndarray, ...]:
    return (np.full((3,), v, np.float32), np.full((2, 2), v, np.float32))


def _drive(r: GatewayRound) -> list[bytes]:
    msgs = [b"env-a1", b"env-b1", b"env-a2"]
    assert r.add_activation(device="a", seq=1, data=msgs[0], rows=8, epsilon_total=0.5) == 0
    assert r.add_activation(device="b", seq=1, data=msgs[1], rows=4, epsilon_total=0.7) == 1
    assert r.add_activation(device="a", seq=2, data=msgs[2], rows=8, epsilon_total=0.9) == 2
    for dev, seq in [("a", 1), ("b", 1), ("a", 2)]:  # the server's gradients came back
        assert r.mark_trained(dev, seq) is not None
    return msgs


def test_round_counts_leaves_and_averages_by_observed_samples() -> None:
    r = GatewayRound(
        org="o1", session="s", round_no=1, journal=InMemoryJournal(), prior_epsilon={"a": 0.25}
    )
    msgs = _drive(r)
    assert r.add_activation(device="a", seq=2, data=msgs[2], rows=8, epsilon_total=0.9) is None
    assert r.add_weights(device="a", seq=3, num_samples=16, weights=_w(1.0), epsilon_total=1.0)
    # b claims more samples than it sent: weighted by what the gateway saw (4)
    assert r.add_weights(device="b", seq=2, num_samples=400, weights=_w(6.0), epsilon_total=0.7)
    # c sends weights without having trained this round: left out
    assert r.add_weights(device="c", seq=1, num_samples=10, weights=_w(100.0), epsilon_total=0.1)
    res = r.close(hasher=_hash)
    np.testing.assert_allclose(res.aggregate[0], np.full(3, (16 * 1.0 + 4 * 6.0) / 20))  # type: ignore[index]
    assert res.num_samples == 20
    rec = res.record
    assert rec["envelopes_root"] == merkle_root(msgs).hex()
    assert rec["devices"]["a"] == {"samples": 16, "epsilon": 0.75, "epsilon_total": 1.0}
    assert rec["devices"]["b"]["samples"] == 4
    assert rec["aggregated_devices"] == ["a", "b"]
    assert rec["aggregate_sha256"] == _hash(res.aggregate)  # type: ignore[arg-type]
    assert r.phase is Phase.CLOSED
    with pytest.raises(RoundStateError):
        r.add_activation(device="a", seq=9, data=b"x", rows=1, epsilon_total=1.0)
    # an auditor holding env-b1 proves its inclusion in the recorded root
    verify_inclusion(
        leaf=msgs[1],
        index=1,
        tree_size=3,
        path=audit_path(msgs, 1),
        root=bytes.fromhex(rec["envelopes_root"]),
    )


@pytest.mark.parametrize("kind", ["memory", "sqlite"])
def test_restart_restores_without_double_counting(kind: str, tmp_path: Path) -> None:
    journal: RoundJournal = (
        InMemoryJournal() if kind == "memory" else SqliteJournal(tmp_path / "j.db")
    )
    r = GatewayRound(org="o1", session="s", round_no=4, journal=journal)
    msgs = _drive(r)
    r.add_weights(device="a", seq=3, num_samples=16, weights=_w(2.0), epsilon_total=1.0)
    before = r.result(hasher=_hash)
    if isinstance(journal, SqliteJournal):
        journal.close()
        journal = SqliteJournal(tmp_path / "j.db")
    r2 = GatewayRound.restore(org="o1", session="s", round_no=4, journal=journal)
    assert r2 is not None and r2.phase is Phase.OPEN
    # the broker redelivers everything after the restart: nothing counts twice
    for i, (dev, seq) in enumerate([("a", 1), ("b", 1), ("a", 2)]):
        assert r2.seen(dev, seq)
        assert (
            r2.add_activation(device=dev, seq=seq, data=msgs[i], rows=8, epsilon_total=1.0) is None
        )
    assert not r2.add_weights(device="a", seq=3, num_samples=16, weights=_w(2.0), epsilon_total=1.0)
    after = r2.close(hasher=_hash)
    assert after.record == before.record
    r3 = GatewayRound.restore(org="o1", session="s", round_no=4, journal=journal)
    assert r3 is not None and r3.phase is Phase.CLOSED
    assert r3.result(hasher=_hash).record == before.record
    assert GatewayRound.restore(org="o1", session="s", round_no=5, journal=journal) is None
    if isinstance(journal, SqliteJournal):
        journal.close()


def test_abandoned_round_refuses_more_and_close() -> None:
    r = GatewayRound(org="o1", session="s", round_no=1, journal=InMemoryJournal())
    r.abandon("server restarted the round")
    assert r.phase is Phase.ABANDONED
    with pytest.raises(RoundStateError):
        r.close(hasher=_hash)


def test_empty_round_closes_without_aggregate() -> None:
    r = GatewayRound(org="o1", session="s", round_no=1, journal=InMemoryJournal())
    res = r.close(hasher=_hash)
    assert res.aggregate is None and res.record["envelope_count"] == 0


def test_group_upload_is_dp_sgd_only_if_every_averaged_upload_was() -> None:
    r = GatewayRound(org="o1", session="s", round_no=1, journal=InMemoryJournal())
    _drive(r)
    r.add_weights(
        device="a", seq=3, num_samples=8, weights=_w(1.0), epsilon_total=1.0, weights_dp="dp_sgd"
    )
    assert r.result(hasher=_hash).weights_dp == "dp_sgd"
    r.add_weights(device="b", seq=2, num_samples=4, weights=_w(1.0), epsilon_total=1.0)
    assert r.result(hasher=_hash).weights_dp == "unprotected"


def test_samples_count_only_batches_whose_gradient_came_back() -> None:
    r = GatewayRound(org="o1", session="s", round_no=1, journal=InMemoryJournal())
    for seq in (1, 2, 3):
        r.add_activation(device="a", seq=seq, data=b"env-a%d" % seq, rows=8, epsilon_total=0.5)
    assert r.mark_trained("a", 1) == 8 and r.mark_trained("a", 3) == 8
    assert r.mark_trained("a", 3) is None  # a gradient relayed twice counts once
    assert r.mark_trained("a", 99) is None  # no such batch
    r.add_weights(device="a", seq=4, num_samples=24, weights=_w(1.0), epsilon_total=0.6)
    res = r.close(hasher=_hash)
    # three envelopes admitted (Merkle leaves), 16 rows trained: the device trained 16, not 24
    assert res.record["envelope_count"] == 3
    assert res.record["devices"]["a"]["samples"] == 16 and res.num_samples == 16
    assert r.mark_trained("a", 2) is None  # after close the record is fixed


@pytest.mark.parametrize("kind", ["memory", "sqlite"])
def test_unforwarded_messages_survive_a_restart_until_marked(kind: str, tmp_path: Path) -> None:
    path = tmp_path / "j.db"
    journal: RoundJournal = InMemoryJournal() if kind == "memory" else SqliteJournal(path)
    r = GatewayRound(org="o1", session="s", round_no=1, journal=journal)
    r.add_activation(device="a", seq=1, data=b"env-a1", rows=8, epsilon_total=0.5)
    r.add_activation(device="a", seq=2, data=b"env-a2", rows=8, epsilon_total=0.5)
    r.add_weights(device="a", seq=3, num_samples=8, weights=_w(1.0), epsilon_total=0.5,
                  data=b"env-w3")
    assert r.mark_forwarded("a", 1) and not r.mark_forwarded("a", 1)
    assert [(d, s) for d, s, _ in r.unforwarded()] == [("a", 2), ("a", 3)]
    if isinstance(journal, SqliteJournal):
        journal.close()
        journal = SqliteJournal(path)
    r2 = GatewayRound.restore(org="o1", session="s", round_no=1, journal=journal)
    assert r2 is not None
    assert r2.unforwarded() == [("a", 2, b"env-a2"), ("a", 3, b"env-w3")]
    assert r2.mark_trained("a", 2) == 8  # a gradient also proves the server had it
    assert r2.unforwarded() == [("a", 3, b"env-w3")]
    if isinstance(journal, SqliteJournal):
        # the bytes of forwarded messages are not kept
        rows = journal._db.execute(
            "SELECT seq FROM journal WHERE data IS NOT NULL ORDER BY seq").fetchall()
        assert rows == [(3,)]
        journal.close()
