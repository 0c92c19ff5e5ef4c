"""Membership governance and session policy validation."""

from __future__ import annotations

import nacl.signing

from ledger_node.node import LedgerNode
from protocol.keys import public_key_hex
from protocol.ledger.block import quorum

from .conftest import Consortium, session_body


def _commit(node: LedgerNode, *txs: bytes) -> list[tuple[bool, str | None]]:
    block, _ = node.commit(list(txs), time_ms=node.genesis.time_ms + node.height + 1,
                           proposer="org1")
    return [(r.valid, r.reason) for r in block.results]


def test_org_and_validator_changes_need_a_quorum(node: LedgerNode,
                                                 consortium: Consortium) -> None:
    c = consortium
    new_admin, new_val = nacl.signing.SigningKey.generate(), nacl.signing.SigningKey.generate()
    add = {"org": "org4", "admin": public_key_hex(new_admin), "validator": None,
           "gateway": None}
    assert _commit(node, c.tx("org1/admin", "org_add", add)) == [(True, None)]
    assert node.state.get("org/org4") is None  # 1 of 2 approvals
    [(valid, reason)] = _commit(node, c.tx("org1/admin", "org_add", add))
    assert not valid and "already approved" in str(reason)
    assert _commit(node, c.tx("org2/admin", "org_add", add)) == [(True, None)]
    assert node.state.get("id/org4/admin") == public_key_hex(new_admin)
    assert set(node.validators()) == {"org1", "org2", "org3"}

    c.keys["org4/admin"] = new_admin
    setv = {"org": "org4", "validator": public_key_hex(new_val)}
    [(valid, reason)] = _commit(node, c.tx("org4/admin", "validator_set", setv))
    assert not valid and "not a validator org" in str(reason)
    assert [v for v, _ in _commit(node, c.tx("org1/admin", "validator_set", setv),
                                  c.tx("org3/admin", "validator_set", setv))] == [True, True]
    assert set(node.validators()) == {"org1", "org2", "org3", "org4"}
    assert quorum(len(node.validators())) == 3
    # blocks from now on need 3 signatures; this node holds only org1..org3's keys
    _commit(node, c.register("org4", "d1"))
    assert len(node.certificate(node.height)) == 3 and node.is_certified(node.height)


def test_session_policy_is_validated(node: LedgerNode, consortium: Consortium) -> None:
    c = consortium
    bad = [session_body("a", dp={"min_noise_multiplier": 1.0, "clip": 1.0, "max_epsilon": 8.0,
                                 "delta": 1.5}),
           session_body("b", rounds=0),
           session_body("c", client_sha256="xyz"),
           session_body("d", vote_quorum=4)]
    results = _commit(node, *(c.tx("server", "session_create", b) for b in bad))
    assert [v for v, _ in results] == [False] * 4
    assert "0<delta<1" in str(results[0][1]) and "rounds" in str(results[1][1])
    assert "client_sha256" in str(results[2][1]) and "vote_quorum" in str(results[3][1])
    [(valid, reason)] = _commit(node, c.tx("org1/gateway", "session_create", session_body()))
    assert not valid and "server or an org admin" in str(reason)
    assert node.state.keys_with_prefix("session/") == []
