"""Training does not stall across server restarts and lost votes (issue 11).

Real parts throughout (see ``_training``): a solo ledger node behind its
HTTP API, Mosquitto, the gateway and server apps, LiteRT devices. Each test
ends with the session done and counts the txs the contract marked invalid.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from deploy.broker import MosquittoBroker
from protocol.ledger.tx import decode_tx
from protocol.messages import weights_digest
from server.app import ServerApp
from server.core import Phase
from server.state import load_finalised
from service.ledger_client import LedgerClient
from tests.integration.server._reset_proxy import ResetVoteProxy
from tests.integration.server._training import Stack
from tests.unit.ledger_node.conftest import Consortium

pytestmark = pytest.mark.integration


def _stop_after_proposing(
    server: ServerApp, version: int, kind: str = "model_propose"
) -> list[int]:
    """Stop ``server``'s loop right after it submitted ``kind`` of ``version``: the process
    "crashes" between proposal and finalisation (or right after its finalise)."""
    submit = server.ledger.submit
    seen: list[int] = []

    def hooked(tx: bytes) -> str:
        txid = submit(tx)
        t = decode_tx(tx)
        if t.kind == kind and t.body["version"] == version:
            seen.append(version)
            server.stop()
        return txid

    server.ledger.submit = hooked  # type: ignore[method-assign]
    return seen


def _votes(client: LedgerClient, version: int) -> int:
    recs = [p for p in client.proposals("s1") if p["version"] == version]
    return len(recs[0]["votes"]) if recs else 0


@pytest.mark.parametrize("keep_candidate", [True, False], ids=["adopt", "supersede"])
def test_server_restart_between_propose_and_finalise(
    keep_candidate: bool,
    tmp_path: Path,
    data_dir: Path,
    ledger: tuple[LedgerClient, Consortium],
    mosquitto_factory: Callable[..., MosquittoBroker],
) -> None:
    client, c = ledger
    state = tmp_path / "server-state"
    stack = Stack(
        tmp_path=tmp_path,
        data_dir=data_dir,
        client=client,
        consortium=c,
        broker=mosquitto_factory(),
        rounds=3,
        server_extra=f'state_dir = "{state}"',
    )
    try:
        crashed = _stop_after_proposing(stack.server, 2)
        stack.start()
        stack.train_round(0)
        stack.wait_decided(0)
        assert stack.server.core.version == 1
        stack.train_round(1)
        stack.wait(lambda: crashed == [2] and not stack.threads[-1].is_alive(), "server stopped")
        # both validators vote while the server is down: version 2 has its quorum
        stack.wait(lambda: _votes(client, 2) == 2, "votes on version 2")
        assert client.model("s1").version == 1  # type: ignore[union-attr]
        if not keep_candidate:
            (state / "candidate.npz").unlink()
        server = stack.restart_server()
        if keep_candidate:  # adopted: version 2 is finalised by the restarted server
            assert server.core.phase is Phase.PROPOSED and server.core.version == 1
            stack.wait_decided(1)
            assert server.core.version == 2
            expected = [1, 2, 3]
        else:  # cannot be completed: round 2 runs from version 1, its proposal supersedes 2
            assert server.core.phase is Phase.TRAINING and server.core.round == 2
            expected = [1, 3]
        stack.train_round(2)
        stack.wait(lambda: server.core.phase is Phase.DONE, "session done")
        assert [m.version for m in client.models("s1")] == expected
        props = {p["version"]: p for p in client.proposals("s1")}
        assert sorted(props) == [1, 2, 3]
        assert props[2]["finalised"] is keep_candidate
        assert props[2]["superseded_by"] == (None if keep_candidate else 3)
        stack.wait(
            lambda: all(d.version >= expected[-1] or (d._drain() and False) for d in stack.devices),  # type: ignore[func-returns-value]
            "devices loaded the last version",
        )
        assert stack.invalid_txs() == []
        assert all(s.invalid_txs == 0 for s in stack.servers)
    finally:
        stack.close()


@pytest.mark.parametrize("when", ["before", "after"])
def test_vote_submit_reset_is_retried(
    when: str,
    tmp_path: Path,
    data_dir: Path,
    ledger: tuple[LedgerClient, Consortium],
    mosquitto_factory: Callable[..., MosquittoBroker],
) -> None:
    """org1's first vote submit gets a TCP reset (``before``: the ledger never saw it;
    ``after``: committed, response lost). Quorum 2 needs org1: without a retry the
    session stalls for good; the server's deadline (default 300 s) is not what saves it."""
    client, c = ledger
    proxy = ResetVoteProxy(client.base_url, resets=1, when=when)
    proxy.start()
    stack = Stack(
        tmp_path=tmp_path,
        data_dir=data_dir,
        client=client,
        consortium=c,
        broker=mosquitto_factory(),
        rounds=2,
        gateway_ledger_url={"org1": proxy.url},
    )
    try:
        stack.start()
        for rnd in range(2):
            stack.train_round(rnd)
            stack.wait_decided(rnd)
            assert stack.server.core.version == rnd + 1
        stack.wait(lambda: stack.server.core.phase is Phase.DONE, "session done")
        # one reset; ``before`` needs a resend, ``after`` may resend the same bytes (a no-op)
        assert proxy.reset_count == 1 and proxy.votes_seen >= (3 if when == "before" else 2)
        assert [m.version for m in client.models("s1")] == [1, 2]
        for p in client.proposals("s1"):
            assert sorted(p["votes"]) == ["org1", "org2"]
        assert stack.invalid_txs() == []
    finally:
        stack.close()
        proxy.close()


def test_proposal_deadline_when_a_validator_cannot_vote(
    tmp_path: Path,
    data_dir: Path,
    ledger: tuple[LedgerClient, Consortium],
    mosquitto_factory: Callable[..., MosquittoBroker],
) -> None:
    """Every vote of org1 is reset: no quorum. The server's proposal deadline drops each
    candidate, the next round runs from the last finalised version (none) and its
    proposal supersedes the undecided one; the session ends, nothing is finalised."""
    client, c = ledger
    proxy = ResetVoteProxy(client.base_url, resets=10**6)
    proxy.start()
    stack = Stack(
        tmp_path=tmp_path,
        data_dir=data_dir,
        client=client,
        consortium=c,
        broker=mosquitto_factory(),
        rounds=2,
        server_extra="proposal_deadline_s = 3",
        gateway_ledger_url={"org1": proxy.url},
    )
    try:
        stack.start()
        for rnd in range(2):
            stack.train_round(rnd)
            stack.wait_decided(rnd)
            assert stack.server.core.version == 0
        stack.wait(lambda: stack.server.core.phase is Phase.DONE, "session done")
        assert client.models("s1") == []
        props = {p["version"]: p for p in client.proposals("s1")}
        assert sorted(props) == [1, 2]
        assert props[1]["superseded_by"] == 2 and not props[2]["finalised"]
        assert all(sorted(p["votes"]) == ["org2"] for p in props.values())
        assert proxy.reset_count >= 2
        assert stack.invalid_txs() == []
    finally:
        stack.close()
        proxy.close()


def test_validator_gateway_restarted_before_voting_votes_on_the_reannouncement(
    tmp_path: Path,
    data_dir: Path,
    ledger: tuple[LedgerClient, Consortium],
    mosquitto_factory: Callable[..., MosquittoBroker],
) -> None:
    """org1's gateway took the candidate but its vote never got through when it was
    restarted (the pending vote lived in memory). The server announces a candidate short
    of its quorum again half-way to its deadline; the new gateway votes on it."""
    client, c = ledger
    proxy = ResetVoteProxy(client.base_url, resets=10**6)
    proxy.start()
    stack = Stack(
        tmp_path=tmp_path,
        data_dir=data_dir,
        client=client,
        consortium=c,
        broker=mosquitto_factory(),
        rounds=2,
        server_extra="proposal_deadline_s = 10",
        gateway_ledger_url={"org1": proxy.url},
    )
    try:
        stack.start()
        stack.train_round(0)
        stack.wait(lambda: proxy.reset_count >= 1 and _votes(client, 1) == 1, "org2's vote")
        stack.restart_gateway("org1", ledger_url=client.base_url)
        stack.wait_decided(0)
        assert stack.server.core.version == 1  # finalised before the deadline expired it
        stack.train_round(1)
        stack.wait_decided(1)
        stack.wait(lambda: stack.server.core.phase is Phase.DONE, "session done")
        assert [m.version for m in client.models("s1")] == [1, 2]
        assert all(sorted(p["votes"]) == ["org1", "org2"] for p in client.proposals("s1"))
        assert stack.invalid_txs() == []
    finally:
        stack.close()
        proxy.close()


def test_server_restart_right_after_submitting_finalise(
    tmp_path: Path,
    data_dir: Path,
    ledger: tuple[LedgerClient, Consortium],
    mosquitto_factory: Callable[..., MosquittoBroker],
) -> None:
    """Version 2 is finalised but the server stops before writing ``finalised.npz``: the
    restarted server resumes from version 2's saved candidate, not the initial weights."""
    client, c = ledger
    state = tmp_path / "server-state"
    stack = Stack(
        tmp_path=tmp_path,
        data_dir=data_dir,
        client=client,
        consortium=c,
        broker=mosquitto_factory(),
        rounds=3,
        server_extra=f'state_dir = "{state}"',
    )
    try:
        crashed = _stop_after_proposing(stack.server, 2, kind="model_finalise")
        stack.start()
        for rnd in range(2):
            stack.train_round(rnd)
        stack.wait(lambda: crashed == [2] and not stack.threads[-1].is_alive(), "server stopped")
        stack.wait(lambda: getattr(client.model("s1"), "version", 0) == 2, "version 2 final")
        cand = stack.server.core.candidate_halves()
        assert load_finalised(state, version=2, weights_sha256=weights_digest(cand[0])) is None
        server = stack.restart_server()
        assert server.core.version == 2 and server.core.round == 2
        _, client_half, server_half = server.core.finalised_halves()
        assert weights_digest(client_half) == weights_digest(cand[0])
        assert weights_digest(server_half) == weights_digest(cand[1])
        stack.wait(
            lambda: load_finalised(state, version=2, weights_sha256=weights_digest(cand[0]))
            is not None,
            "finalised halves written",
        )
        stack.train_round(2)
        stack.wait(lambda: server.core.phase is Phase.DONE, "session done")
        assert [m.version for m in client.models("s1")] == [1, 2, 3]
        assert stack.invalid_txs() == []
    finally:
        stack.close()
