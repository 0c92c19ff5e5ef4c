"""The server's proposal lifecycle, sans I/O: a fake ledger of records and receipts."""

from __future__ import annotations

from typing import Any

from server.proposals import (
    Backoff,
    Proposal,
    ProposalLifecycle,
    ProposalStatus,
    open_proposal,
)

W, C, S = "aa" * 32, "bb" * 32, "cc" * 32


def _proposal(version: int = 2, weights: str = W) -> Proposal:
    return Proposal(
        session_id="s1",
        version=version,
        round=1,
        weights_sha256=weights,
        client_sha256=C,
        server_sha256=S,
        metrics={"accuracy": 0.5},
    )


def _record(p: Proposal, **over: Any) -> dict[str, Any]:
    rec: dict[str, Any] = {
        "version": p.version,
        "weights_sha256": p.weights_sha256,
        "client_sha256": p.client_sha256,
        "server_sha256": p.server_sha256,
        "votes": {},
        "finalised": False,
        "superseded_by": None,
    }
    rec.update(over)
    return rec


def _accepts(*orgs: str) -> dict[str, Any]:
    return {o: {"accept": True} for o in orgs}


def _send(lc: ProposalLifecycle, now: float, txid: str) -> str:
    req = lc.due(now)
    assert req is not None
    if req.raw is None:
        lc.signed(f"raw-{txid}".encode(), txid)
    lc.sent(now)
    return req.kind


def test_healthy_proposal_submits_propose_and_finalise_once() -> None:
    p = _proposal()
    lc = ProposalLifecycle(p, now=0.0, deadline_s=100.0)
    assert _send(lc, 0.0, "t1") == "model_propose"
    assert lc.due(0.1) is None and lc.awaiting_receipt == "t1"
    assert lc.on_receipt(valid=True, reason=None, now=0.2) is ProposalStatus.PENDING
    rec = _record(p)
    assert lc.observe(rec, vote_quorum=2, validators=3, now=0.3) is ProposalStatus.PENDING
    assert lc.due(0.3) is None  # nothing to send while votes come in
    rec["votes"] = _accepts("org1", "org2")
    assert lc.observe(rec, vote_quorum=2, validators=3, now=0.4) is ProposalStatus.FINALISABLE
    assert _send(lc, 0.4, "t2") == "model_finalise"
    # a stale read still says finalisable: nothing is sent again while the finalise is pending
    for t in (0.5, 0.6, 0.7):
        assert lc.observe(rec, vote_quorum=2, validators=3, now=t) is ProposalStatus.FINALISABLE
        assert lc.due(t) is None
    assert lc.on_receipt(valid=True, reason=None, now=0.8) is ProposalStatus.FINALISED
    # and after the valid receipt, a stale record cannot trigger a second finalise
    assert lc.observe(rec, vote_quorum=2, validators=3, now=0.9) is ProposalStatus.FINALISED
    assert lc.due(1.0) is None and lc.invalid == 0


def test_submit_errors_resend_the_same_bytes_with_backoff() -> None:
    lc = ProposalLifecycle(_proposal(), now=0.0, deadline_s=100.0, backoff=Backoff(1.0, 4.0))
    req = lc.due(0.0)
    assert req is not None and req.raw is None
    lc.signed(b"signed-once", "t1")
    delays = [lc.send_failed(0.0), lc.send_failed(0.0), lc.send_failed(0.0), lc.send_failed(0.0)]
    assert delays == [1.0, 2.0, 4.0, 4.0]
    assert lc.due(3.9) is None
    again = lc.due(4.0)
    assert again is not None and again.raw == b"signed-once"  # never re-signed: same txid
    lc.sent(4.0)
    # no receipt within the receipt timeout: the same bytes once more
    assert lc.due(33.9) is None
    late = lc.due(34.0)
    assert late is not None and late.raw == b"signed-once"


def test_restart_conflict_abandons_instead_of_looping() -> None:
    """The reported stall: a restarted server's own candidate vs. the proposal on the ledger."""
    ours = _proposal(weights="dd" * 32)
    lc = ProposalLifecycle(ours, now=0.0, deadline_s=100.0)
    _send(lc, 0.0, "t1")
    other = _record(_proposal(), votes=_accepts("org1", "org2"))
    # the ledger's version 2 is the crashed server's proposal: never finalise it with our hash
    assert lc.observe(other, vote_quorum=2, validators=3, now=0.1) is ProposalStatus.ABANDONED
    assert lc.due(0.2) is None
    lc2 = ProposalLifecycle(ours, now=0.0, deadline_s=100.0)
    _send(lc2, 0.0, "t2")
    out = lc2.on_receipt(valid=False, reason="version 2 already proposed", now=0.1)
    assert out is ProposalStatus.ABANDONED and lc2.invalid == 1 and lc2.due(0.2) is None


def test_invalid_finalise_is_bounded_and_backed_off() -> None:
    p = _proposal()
    lc = ProposalLifecycle(
        p, now=0.0, deadline_s=1000.0, on_ledger=True, max_invalid=3, backoff=Backoff(1.0, 8.0)
    )
    rec = _record(p, votes=_accepts("org1", "org2"))
    now, sent = 0.0, 0
    while not lc.decided and now < 100.0:
        lc.observe(rec, vote_quorum=2, validators=3, now=now)
        if lc.due(now) is not None:
            _send(lc, now, f"t{sent}")
            sent += 1
            lc.on_receipt(valid=False, reason="weights_sha256 missing", now=now)
        now += 0.1
    assert lc.outcome is ProposalStatus.ABANDONED and sent == 3 and lc.invalid == 3
    assert 3.0 <= now < 3.5  # waited 1 s and 2 s between the three attempts


def test_someone_elses_finalise_first_is_not_an_error() -> None:
    p = _proposal()
    lc = ProposalLifecycle(p, now=0.0, deadline_s=100.0, on_ledger=True)
    rec = _record(p, votes=_accepts("org1", "org2"))
    lc.observe(rec, vote_quorum=2, validators=3, now=0.0)
    _send(lc, 0.0, "t1")
    out = lc.on_receipt(valid=False, reason="proposal already finalised", now=0.1)
    assert out is ProposalStatus.PENDING and lc.invalid == 0
    assert lc.due(0.2) is None  # not sent again on the strength of an old read
    rec["finalised"] = True
    assert lc.observe(rec, vote_quorum=2, validators=3, now=0.2) is ProposalStatus.FINALISED


def test_deadline_expires_a_pending_proposal_but_not_a_pending_finalise() -> None:
    p = _proposal()
    lc = ProposalLifecycle(p, now=10.0, deadline_s=60.0, on_ledger=True)
    rec = _record(p, votes=_accepts("org1"))
    assert lc.observe(rec, vote_quorum=2, validators=3, now=69.9) is ProposalStatus.PENDING
    assert lc.observe(rec, vote_quorum=2, validators=3, now=70.0) is ProposalStatus.EXPIRED
    lc2 = ProposalLifecycle(p, now=10.0, deadline_s=60.0, on_ledger=True)
    rec2 = _record(p, votes=_accepts("org1", "org2"))
    lc2.observe(rec2, vote_quorum=2, validators=3, now=69.0)
    _send(lc2, 69.0, "t1")
    assert lc2.observe(rec2, vote_quorum=2, validators=3, now=75.0) is ProposalStatus.FINALISABLE
    assert lc2.on_receipt(valid=True, reason=None, now=76.0) is ProposalStatus.FINALISED


def test_superseded_and_rejected_records() -> None:
    p = _proposal()
    lc = ProposalLifecycle(p, now=0.0, deadline_s=60.0, on_ledger=True)
    rec = _record(p, superseded_by=3, votes=_accepts("org1", "org2"))
    assert lc.observe(rec, vote_quorum=2, validators=3, now=1.0) is ProposalStatus.ABANDONED
    assert "superseded by version 3" in lc.reason
    lc = ProposalLifecycle(p, now=0.0, deadline_s=60.0, on_ledger=True)
    rec = _record(p, votes={"org1": {"accept": False}, "org2": {"accept": False}})
    assert lc.observe(rec, vote_quorum=2, validators=3, now=1.0) is ProposalStatus.REJECTED


def test_propose_receipt_lost_but_record_seen() -> None:
    p = _proposal()
    lc = ProposalLifecycle(p, now=0.0, deadline_s=60.0)
    _send(lc, 0.0, "t1")
    lc.observe(_record(p), vote_quorum=2, validators=3, now=1.0)
    assert lc.awaiting_receipt is None and lc.due(40.0) is None  # not proposed again


def test_open_proposal_is_the_undecided_head() -> None:
    recs = [
        _record(_proposal(1), finalised=True),
        _record(_proposal(2), superseded_by=3),
        _record(_proposal(3)),
    ]
    head = open_proposal(recs, latest_finalised=1)
    assert head is not None and head["version"] == 3
    assert open_proposal(recs, latest_finalised=3) is None
    assert open_proposal(recs[:2], latest_finalised=1) is None
    assert open_proposal([], latest_finalised=0) is None


def test_candidate_is_announced_again_half_way_to_the_deadline() -> None:
    p = _proposal()
    lc = ProposalLifecycle(p, now=0.0, deadline_s=60.0, on_ledger=True)
    rec = _record(p, votes=_accepts("org1"))
    lc.observe(rec, vote_quorum=2, validators=3, now=29.0)
    assert not lc.reannounce_due(29.9)
    assert lc.reannounce_due(30.0) and not lc.reannounce_due(31.0)  # once
    lc2 = ProposalLifecycle(p, now=0.0, deadline_s=60.0, on_ledger=True)
    lc2.observe(_record(p, votes=_accepts("org1", "org2")), vote_quorum=2, validators=3, now=1.0)
    assert not lc2.reannounce_due(30.0)  # the quorum is there: nothing to ask for
