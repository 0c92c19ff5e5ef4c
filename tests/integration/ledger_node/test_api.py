"""The loopback API and LedgerClient against an in-process solo node."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ledger_node.api import LedgerApi
from ledger_node.errors import (
    CertificateError,
    ChainIntegrityError,
    InvalidTransaction,
    NotFoundError,
)
from ledger_node.node import LedgerNode
from ledger_node.solo import SoloOrderer
from ledger_node.sync import catch_up_from_peer
from ledger_node.verify import verify_chain
from protocol.ledger.lightclient import verify_model_finalisation
from service.ledger_client import LedgerClient
from tests.unit.ledger_node.conftest import H1, H2, H3, Consortium, make_consortium, session_body


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[LedgerClient, Consortium, LedgerNode]]:
    c = make_consortium()
    LedgerNode.init(tmp_path / "n", c.genesis)
    node = LedgerNode(tmp_path / "n", validator_keys=c.validator_keys())
    orderer = SoloOrderer(node, proposer="org1")
    api = LedgerApi(node, orderer)
    orderer.start()
    api.start()
    try:
        yield LedgerClient(api.url, timeout=5), c, node
    finally:
        api.stop()
        orderer.stop()
        node.close()


def test_client_end_to_end(served: tuple[LedgerClient, Consortium, LedgerNode]) -> None:
    client, c, _ = served
    assert client.validators() == {o: c.genesis.orgs[i].validator
                                   for i, o in enumerate(("org1", "org2", "org3"))}
    r = client.submit_and_wait(c.tx("server", "session_create", session_body()))
    assert r.valid and r.height >= 1
    for d in ("d1", "d2"):
        assert client.submit_and_wait(c.register("org1", d)).valid
    assert client.submit_and_wait(c.tx("org1/admin", "device_revoke", {"device": "d2"})).valid
    d1, d2 = client.device("org1", "d1"), client.device("org1", "d2")
    assert d1 is not None and not d1.revoked
    assert d1.pubkey_hex == bytes(c.devices["org1/d1"].verify_key).hex()
    assert d2 is not None and d2.revoked and d2.revoked_height is not None
    assert client.device("org1", "nope") is None
    assert [d.device for d in client.devices("org1")] == ["d1", "d2"]
    s = client.session("s1")
    assert s is not None and s.dp["max_epsilon"] == 8.0 and s.vote_quorum == 2
    rec = {"session_id": "s1", "round": 0, "group": "g1", "envelopes_root": H3,
           "devices": {"d1": {"samples": 10, "epsilon": 0.5}}}
    assert client.submit_and_wait(c.tx("org1/gateway", "round_record", rec)).valid
    assert client.device_spend("s1", "org1/d1") == 0.5
    prop = {"session_id": "s1", "version": 1, "weights_sha256": H3, "client_sha256": H1,
            "server_sha256": H2}
    txs = [c.tx("server", "model_propose", prop),
           c.tx("org2/validator", "model_vote", {"session_id": "s1", "version": 1,
                                                 "accept": True, "metric": 0.8}),
           c.tx("org3/validator", "model_vote", {"session_id": "s1", "version": 1,
                                                 "accept": True, "metric": 0.7})]
    for tx in txs:
        client.submit(tx)
    fin = client.submit(c.tx("server", "model_finalise", prop))
    assert client.wait_for(fin, timeout=10).valid
    m = client.model("s1")
    assert m is not None and m.version == 1 and m.accepted_by == ("org2", "org3")
    assert [p["version"] for p in client.proposals("s1")] == [1]
    p = client.proof(fin)
    client.wait_height(p.height, timeout=5, certified=True)
    fm = verify_model_finalisation(
        chain_id=p.chain_id, height=p.height, header=p.header, certificate=p.certificate,
        tx=p.tx, leaf_index=p.leaf_index, tree_size=p.tree_size, audit_path=p.audit_path,
        validators=client.validators(), expected_weights_sha256=H3)
    assert fm.version == 1
    block = client.block(p.height)
    assert block["certified"] and any(t["txid"] == fin for t in block["txs"])


def test_refusals_and_subscribe(served: tuple[LedgerClient, Consortium, LedgerNode]) -> None:
    client, c, _ = served
    raw = bytearray(c.register("org1", "d1"))
    raw[-3] ^= 0x40
    with pytest.raises(InvalidTransaction, match="signature"):
        client.submit(bytes(raw))
    with pytest.raises(NotFoundError):
        client.block(999)
    with pytest.raises(InvalidTransaction, match="bad request"):
        client._call("/v1/block/abc")
    assert client.receipt("00" * 32) is None
    start = client.height()
    sub = client.subscribe(after=start, poll_timeout=5)
    client.submit(c.register("org2", "x"))
    block = next(sub)
    assert block["height"] == start + 1 and block["txs"][0]["kind"] == "device_register"


class _LyingPeer(LedgerClient):
    """A peer that withholds a tx from a block, or most of its certificate."""

    def __init__(self, inner: LedgerClient, *, drop_cert: bool = False) -> None:
        super().__init__(inner.base_url)
        self.drop_cert = drop_cert

    def block(self, height: int) -> dict[str, Any]:
        b = super().block(height)
        if self.drop_cert:
            b["certificate"] = b["certificate"][:1]
        elif b["txs"]:
            b["txs"] = b["txs"][:-1]  # withhold one tx from the block
        return b


def test_catch_up_from_peer_verifies_everything(
        served: tuple[LedgerClient, Consortium, LedgerNode], tmp_path: Path) -> None:
    client, c, node = served
    for i in range(5):
        client.submit(c.register("org1", f"d{i}"))
    last = client.submit(c.register("org2", "z"))
    client.wait_for(last, timeout=10)
    client.wait_height(node.height, timeout=5, certified=True)
    LedgerNode.init(tmp_path / "follower", c.genesis)
    follower = LedgerNode(tmp_path / "follower")  # holds no keys: a read-only replica
    try:
        with pytest.raises(ChainIntegrityError, match="does not re-execute"):
            catch_up_from_peer(follower, _LyingPeer(client))
        with pytest.raises(CertificateError, match="1 of the 2"):
            catch_up_from_peer(follower, _LyingPeer(client, drop_cert=True))
        assert follower.height == 0
        top = catch_up_from_peer(follower, client)
        assert top == client.certified_height()
        assert all(follower.header_bytes(h).hex() == client.block(h)["header"]
                   for h in range(1, top + 1))
        assert follower.certified_height == top
        assert follower.state.root() == node.state.root()
    finally:
        follower.close()
    assert verify_chain(tmp_path / "follower").height == top
