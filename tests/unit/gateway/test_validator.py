"""Validator vote tracking, sans I/O: proposal records and receipts are plain data."""

from __future__ import annotations

from typing import Any

from gateway.validator import Backoff, VoteOutcome, VoteTracker

W = "aa" * 32


def _rec(version: int, **over: Any) -> dict[str, Any]:
    r: dict[str, Any] = {
        "version": version,
        "weights_sha256": W,
        "votes": {},
        "finalised": False,
        "superseded_by": None,
    }
    r.update(over)
    return r


BODY = {"session_id": "s1", "version": 2, "accept": True, "metric": 0.8}


def _tracker(**kw: Any) -> VoteTracker:
    t = VoteTracker(org="org1", backoff=Backoff(1.0, 8.0), **kw)
    assert t.add(session="s1", version=2, weights_sha256=W, now=0.0)
    return t


def test_vote_waits_for_the_proposal_then_is_evaluated_once() -> None:
    t = _tracker()
    t.observe([], latest_finalised=1, now=0.1)
    assert t.needs_evaluation() == [] and t.due(0.1) == []  # a vote now would be invalid
    t.observe([_rec(2)], latest_finalised=1, now=0.2)
    assert t.needs_evaluation() == [("s1", 2)]
    t.set_vote(2, BODY)
    assert t.needs_evaluation() == []
    [req] = t.due(0.2)
    assert req.raw is None and req.body == BODY
    t.signed(2, b"vote-bytes", "tx1")
    t.sent(2, 0.2)
    assert t.due(0.3) == [] and t.awaiting() == [(2, "tx1")]
    t.on_receipt(2, valid=True, reason=None, now=0.4)
    [done] = t.take_done()
    assert done.outcome is VoteOutcome.VOTED and done.body == BODY and 2 not in t


def test_connection_reset_on_submit_is_retried_with_the_same_bytes() -> None:
    """The reported stall: the first vote submit fails and was never retried."""
    t = _tracker()
    t.observe([_rec(2)], latest_finalised=1, now=0.0)
    t.set_vote(2, BODY)
    [first] = t.due(0.0)
    assert first.raw is None
    t.signed(2, b"vote-bytes", "tx1")
    assert t.send_failed(2, 0.0) == 1.0
    assert t.due(0.5) == []
    [again] = t.due(1.0)
    assert again.raw == b"vote-bytes"  # not re-signed: a resend that landed is a no-op
    assert t.send_failed(2, 1.0) == 2.0 and t.send_failed(2, 3.0) == 4.0
    [again] = t.due(7.0)
    t.sent(2, 7.0)
    # the reset came after the ledger took the tx: the record shows the vote
    t.observe([_rec(2, votes={"org1": {"accept": True}})], latest_finalised=1, now=8.0)
    assert [d.outcome for d in t.take_done()] == [VoteOutcome.VOTED]
    assert t.versions == [] and t.invalid == 0


def test_lost_receipt_resends_same_bytes_after_timeout() -> None:
    t = _tracker(receipt_timeout_s=10.0)
    t.observe([_rec(2)], latest_finalised=1, now=0.0)
    t.set_vote(2, BODY)
    t.due(0.0)
    t.signed(2, b"vote-bytes", "tx1")
    t.sent(2, 0.0)
    assert t.due(9.9) == []
    [req] = t.due(10.0)
    assert req.raw == b"vote-bytes"


def test_vote_is_dropped_when_decided_or_superseded() -> None:
    cases = [
        ([_rec(2, finalised=True)], 2, VoteOutcome.DROPPED, "finalised without this vote"),
        ([_rec(2, superseded_by=3)], 1, VoteOutcome.DROPPED, "superseded by 3"),
        ([_rec(3)], 1, VoteOutcome.DROPPED, "version 3 was proposed since"),
        ([], 2, VoteOutcome.DROPPED, "version 2 is finalised"),
        ([_rec(2, weights_sha256="bb" * 32)], 1, VoteOutcome.DROPPED, "other weights"),
        ([_rec(2, votes={"org1": {}})], 1, VoteOutcome.VOTED, "vote recorded"),
    ]
    for records, latest, outcome, reason in cases:
        t = _tracker()
        t.observe(records, latest_finalised=latest, now=1.0)
        [done] = t.take_done()
        assert done.outcome is outcome and reason in done.reason, (records, done)
    t = _tracker(max_age_s=60.0)
    t.observe([], latest_finalised=None, now=59.0)
    assert t.take_done() == []
    t.observe([], latest_finalised=None, now=60.0)
    assert "never reached the ledger" in t.take_done()[0].reason


def test_invalid_votes_are_bounded_and_moot_ones_stop_at_once() -> None:
    t = _tracker(max_invalid=2)
    t.observe([_rec(2)], latest_finalised=1, now=0.0)
    t.set_vote(2, BODY)
    for i, now in enumerate((0.0, 1.0)):
        [req] = t.due(now)
        assert req.raw is None  # after an invalid receipt a fresh tx is signed
        t.signed(2, b"v%d" % i, f"tx{i}")
        t.sent(2, now)
        t.on_receipt(2, valid=False, reason="metric must be a number", now=now)
        if i == 0:
            assert t.due(now + 0.5) == []  # backed off
    [done] = t.take_done()
    assert done.outcome is VoteOutcome.DROPPED and "2 votes refused" in done.reason
    assert t.invalid == 2
    t = _tracker()
    t.observe([_rec(2)], latest_finalised=1, now=0.0)
    t.set_vote(2, BODY)
    t.due(0.0)
    t.signed(2, b"v", "tx")
    t.sent(2, 0.0)
    t.on_receipt(2, valid=False, reason="proposal superseded by version 3", now=0.1)
    assert t.take_done()[0].outcome is VoteOutcome.DROPPED and t.versions == []


def test_reannouncement_keeps_the_pending_vote() -> None:
    t = _tracker()
    t.observe([_rec(2)], latest_finalised=1, now=0.0)
    t.set_vote(2, BODY)
    assert not t.add(session="s1", version=2, weights_sha256=W, now=5.0)
    assert t.needs_evaluation() == [] and len(t.due(5.0)) == 1


def test_settled_vote_is_not_cast_again_on_reannouncement() -> None:
    t = _tracker()
    t.observe([_rec(2, votes={"org1": {}})], latest_finalised=1, now=0.0)
    assert [d.outcome for d in t.take_done()] == [VoteOutcome.VOTED]
    assert not t.add(session="s1", version=2, weights_sha256=W, now=1.0)  # restarted server
    assert t.add(session="s1", version=2, weights_sha256="bb" * 32, now=1.0)  # other weights
