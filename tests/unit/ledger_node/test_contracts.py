"""Contracts through a real node: authorisation, replay, invalid-stays-in-block."""

from __future__ import annotations

from typing import Any

import nacl.signing
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ledger_node.executor import execute_block
from ledger_node.node import LedgerNode
from protocol.ledger.registration import make_registration_request
from protocol.ledger.tx import TX_KINDS

from .conftest import H1, H2, H3, Consortium, session_body


def _commit(node: LedgerNode, *txs: bytes) -> list[tuple[bool, str | None]]:
    block, _ = node.commit(list(txs), time_ms=node.genesis.time_ms + node.height + 1,
                           proposer="org1")
    return [(r.valid, r.reason) for r in block.results]


def test_admin_registers_own_device_and_revokes(node: LedgerNode, consortium: Consortium) -> None:
    c = consortium
    assert _commit(node, c.register("org1", "pump1")) == [(True, None)]
    rec = node.state.get("device/org1/pump1")
    assert rec["pubkey_hex"] == bytes(c.devices["org1/pump1"].verify_key).hex()
    assert rec["revoked"] is False and rec["registered_height"] == 1
    assert _commit(node, c.tx("org1/admin", "device_revoke", {"device": "pump1"}))[0][0]
    assert node.state.get("device/org1/pump1")["revoked_height"] == 2


def test_other_orgs_admin_cannot_register(node: LedgerNode, consortium: Consortium) -> None:
    c = consortium
    root_before = node.state.root()
    # org2's admin wraps a request that says org1
    dk = nacl.signing.SigningKey.generate()
    req = make_registration_request(signing_key=dk, org="org1", device="pump9")
    [(valid, reason)] = _commit(node, c.tx("org2/admin", "device_register", {"request": req}))
    assert not valid and reason is not None and "cannot register a device of org 'org1'" in reason
    assert node.state.get("device/org1/pump9") is None
    assert node.latest_header().invalid == ((0, reason),)
    assert node.state.root() == root_before


def test_forged_key_replay_and_non_validator_vote(node: LedgerNode, consortium: Consortium) -> None:
    c = consortium
    _commit(node, c.tx("server", "session_create", session_body()))
    _commit(node, c.tx("server", "model_propose", {
        "session_id": "s1", "version": 1, "weights_sha256": H3, "client_sha256": H1,
        "server_sha256": H2}))
    root_before = node.state.root()
    forged = c.tx("org1/admin", "device_revoke", {"device": "x"}, key="org2/admin")
    gateway_vote = c.tx("org1/gateway", "model_vote",
                        {"session_id": "s1", "version": 1, "accept": True, "metric": 0.9})
    unknown = c.tx("mallory", "device_revoke", {"device": "x"}, key="org1/admin")
    results = _commit(node, forged, gateway_vote, unknown)
    assert [v for v, _ in results] == [False, False, False]
    assert "not the one bound to 'org1/admin'" in str(results[0][1])
    assert "not an org validator" in str(results[1][1])
    assert "unknown submitter" in str(results[2][1])
    assert node.state.root() == root_before

    reg = c.register("org3", "d1")
    assert _commit(node, reg) == [(True, None)]
    root_before = node.state.root()
    [(valid, reason)] = _commit(node, reg)  # the very same bytes again
    assert not valid and "replayed nonce" in str(reason)
    assert node.state.root() == root_before


def test_vote_quorum_and_finalisation(node: LedgerNode, consortium: Consortium) -> None:
    c = consortium
    _commit(node, c.tx("server", "session_create", session_body()))
    prop = {"session_id": "s1", "version": 1, "weights_sha256": H3, "client_sha256": H1,
            "server_sha256": H2}
    fin = c.tx("server", "model_finalise", prop)
    results = _commit(node, c.tx("server", "model_propose", prop),
                      c.tx("org1/validator", "model_vote", {"session_id": "s1", "version": 1,
                                                           "accept": True, "metric": 0.91}),
                      fin)
    assert [v for v, _ in results] == [True, True, False]
    assert "1 accepting validator votes, session requires 2" in str(results[2][1])
    assert node.state.get("model/s1") is None
    results = _commit(
        node,
        c.tx("org1/validator", "model_vote", {"session_id": "s1", "version": 1, "accept": True}),
        c.tx("org2/validator", "model_vote", {"session_id": "s1", "version": 1, "accept": True,
                                              "metric": 0.88}),
        c.tx("server", "model_finalise", prop))
    assert [v for v, _ in results] == [False, True, True]
    assert "already voted" in str(results[0][1])
    model = node.state.get("model/s1")
    assert model["version"] == 1 and model["accepted_by"] == ["org1", "org2"]


def test_round_record_spend_and_budget(node: LedgerNode, consortium: Consortium) -> None:
    c = consortium
    _commit(node, c.tx("server", "session_create", session_body()), c.register("org1", "d1"))
    rec = {"session_id": "s1", "round": 0, "group": "g1", "envelopes_root": H3,
           "envelope_count": 10, "devices": {"d1": {"samples": 64, "epsilon": 5.0}},
           "aggregate_sha256": H1}
    assert _commit(node, c.tx("org1/gateway", "round_record", rec)) == [(True, None)]
    assert node.state.get("spend/s1/org1/d1") == 5.0
    over = {**rec, "round": 1}
    [(valid, reason)] = _commit(node, c.tx("org1/gateway", "round_record", over))
    assert not valid and "would exceed max_epsilon" in str(reason)
    [(valid, reason)] = _commit(node, c.tx("org2/gateway", "round_record", {**rec, "round": 2}))
    assert not valid and "org2/d1 not registered" in str(reason)
    assert node.state.get("spend/s1/org1/d1") == 5.0


def test_non_private_session_records_null_epsilon_never_a_number(
        node: LedgerNode, consortium: Consortium) -> None:
    c = consortium
    _commit(node, c.tx("server", "session_create",
                       session_body(extra={"privacy_mode": "none", "labels_public": True})),
            c.register("org1", "d1"))
    rec = {"session_id": "s1", "round": 0, "group": "g1", "envelopes_root": H3,
           "envelope_count": 10, "devices": {"d1": {"samples": 64, "epsilon": 0.0}},
           "aggregate_sha256": H1}
    [(valid, reason)] = _commit(node, c.tx("org1/gateway", "round_record", rec))
    assert not valid and "epsilon null" in str(reason)  # 0.0 would look like a guarantee
    ok = {**rec, "devices": {"d1": {"samples": 64, "epsilon": None}}}
    assert _commit(node, c.tx("org1/gateway", "round_record", ok)) == [(True, None)]
    assert node.state.get("spend/s1/org1/d1") is None


@settings(max_examples=60, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(garbage=st.binary(max_size=200),
       body=st.dictionaries(st.sampled_from(["session_id", "version", "metrics", "extra",
                                             "devices", "round", "request", "dp", "org"]),
                            st.one_of(st.integers(), st.text(max_size=5), st.binary(max_size=5),
                                      st.lists(st.integers(), max_size=3), st.none()),
                            max_size=6),
       kind=st.sampled_from(sorted(TX_KINDS)))
def test_hostile_input_never_crashes_the_executor(node: LedgerNode, consortium: Consortium,
                                                  garbage: bytes, body: dict[str, Any],
                                                  kind: str) -> None:
    root = node.state.root()
    tx = consortium.tx("server", kind, body)
    block = execute_block(node.state, [garbage, tx], chain_id="test-chain",
                          height=node.height + 1, prev_hash=node.head_hash, time_ms=1,
                          proposer="x")
    assert not block.results[0].valid
    if not block.results[1].valid:
        assert block.results[1].reason
    assert node.state.root() == root  # executing never mutates the committed state


def _prop(version: int, weights: str = H3) -> dict[str, Any]:
    return {"session_id": "s1", "version": version, "weights_sha256": weights,
            "client_sha256": H1, "server_sha256": H2, "round": version - 1}


def _vote(org: str, version: int, accept: bool = True) -> dict[str, Any]:
    return {"session_id": "s1", "version": version, "accept": accept}


def test_next_proposal_supersedes_an_open_one(node: LedgerNode, consortium: Consortium) -> None:
    c = consortium
    _commit(node, c.tx("server", "session_create", session_body()))
    assert _commit(node, c.tx("server", "model_propose", _prop(1)),
                   c.tx("org1/validator", "model_vote", _vote("org1", 1))) == [(True, None)] * 2
    # version 1 stays open (one vote of two); the proposer abandons it by proposing version 2
    again = c.tx("server", "model_propose", _prop(1, weights="44" * 32))
    results = _commit(node, again, c.tx("server", "model_propose", _prop(2, weights="44" * 32)))
    assert results[0] == (False, "version 1 already proposed") and results[1] == (True, None)
    old = node.state.get("proposal/s1/1")
    assert old["superseded_by"] == 2 and old["superseded_height"] == node.height
    assert node.state.get("proposal/s1/2")["round"] == 1
    # a superseded proposal takes no vote and can never be finalised, even with a quorum
    results = _commit(node, c.tx("org2/validator", "model_vote", _vote("org2", 1)),
                      c.tx("server", "model_finalise", _prop(1)))
    assert [v for v, _ in results] == [False, False]
    assert all("proposal superseded by version 2" in str(r) for _, r in results)
    results = _commit(node, c.tx("org1/validator", "model_vote", _vote("org1", 2)),
                      c.tx("org2/validator", "model_vote", _vote("org2", 2)),
                      c.tx("server", "model_finalise", _prop(2, weights="44" * 32)))
    assert results == [(True, None)] * 3
    assert node.state.get("model/s1")["version"] == 2
    # a finalised proposal is never marked superseded; versions only go up
    results = _commit(node, c.tx("server", "model_propose", _prop(3)))
    assert results == [(True, None)]
    assert node.state.get("proposal/s1/2")["superseded_by"] is None
    stale = c.tx("org1/admin", "model_propose", {**_prop(3), "version": 2})
    [(valid, reason)] = _commit(node, stale)
    assert not valid and "not newer than the finalised one" in str(reason)


def test_versions_above_the_head_only(node: LedgerNode, consortium: Consortium) -> None:
    c = consortium
    _commit(node, c.tx("server", "session_create", session_body()))
    assert _commit(node, c.tx("server", "model_propose", _prop(5))) == [(True, None)]
    [(valid, reason)] = _commit(node, c.tx("server", "model_propose", _prop(3)))
    assert not valid and reason == "version 3 is not above the last proposal (5)"
    assert node.state.get("proposal/s1/5")["superseded_by"] is None
    [(valid, reason)] = _commit(node, c.tx("server", "model_propose", {**_prop(6), "round": -1}))
    assert not valid and "round must be an int >= 0" in str(reason)
