"""verify replays the chain and names edits; light-client proofs."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from ledger_node.errors import CertificateError, ChainIntegrityError, InvalidTransaction
from ledger_node.node import DB_NAME, LedgerNode
from ledger_node.verify import verify_chain
from protocol.ledger.lightclient import verify_model_finalisation, verify_proof
from protocol.ledger.tx import decode_tx

from .conftest import H1, H2, H3, Consortium, session_body

PROP = {"session_id": "s1", "version": 1, "weights_sha256": H3, "client_sha256": H1,
        "server_sha256": H2}


def _build(node: LedgerNode, c: Consortium) -> str:
    t = node.genesis.time_ms
    node.commit([c.tx("server", "session_create", session_body()), c.register("org1", "d1"),
                 c.register("org1", "d2", admin="org2/admin")], time_ms=t + 1, proposer="org1")
    node.commit([c.tx("server", "model_propose", PROP)]
                + [c.tx(f"{o}/validator", "model_vote",
                        {"session_id": "s1", "version": 1, "accept": True}) for o in ("org1",
                                                                                      "org2")],
                time_ms=t + 2, proposer="org1")
    fin = c.tx("server", "model_finalise", PROP)
    node.commit([c.register("org2", "d3"), fin], time_ms=t + 3, proposer="org1")
    return decode_tx(fin).txid


def test_clean_chain_verifies(node: LedgerNode, consortium: Consortium, tmp_path: Path) -> None:
    _build(node, consortium)
    rep = verify_chain(tmp_path / "n1")
    assert (rep.height, rep.txs, rep.invalid_txs, rep.certified_height) == (3, 8, 1, 3)
    assert rep.head_hash == node.head_hash.hex()


@pytest.mark.parametrize(("sql", "message"), [
    ("UPDATE blocks SET header = CAST(substr(header, 1, 40) || X'ff' || substr(header, 42) "
     "AS BLOB) WHERE height = 2", "block 2:"),
    ("UPDATE txs SET data = CAST(substr(data, 1, 30) || X'00' || substr(data, 32) "
     "AS BLOB) WHERE height = 2 AND idx = 1", "block 2: tx 1 bytes do not match"),
    ("UPDATE txs SET valid = 1, reason = NULL WHERE height = 1 AND idx = 2",
     "block 1: tx 2"),
    ("UPDATE state SET value = X'f5' WHERE key = 'device/org1/d1'",
     "state row 'device/org1/d1'"),
    ("DELETE FROM sigs WHERE height = 1", "block 1: has no quorum certificate"),
    ("UPDATE sigs SET sig = CAST(X'00' || substr(sig, 2) AS BLOB) "
     "WHERE height = 2 AND validator = 'org3'",
     "block 2: signature of org3 is invalid"),
])
def test_tampering_is_named(node: LedgerNode, consortium: Consortium, tmp_path: Path,
                            sql: str, message: str) -> None:
    _build(node, consortium)
    node.close()
    with sqlite3.connect(tmp_path / "n1" / DB_NAME) as db:
        assert db.execute(sql).rowcount >= 1
    with pytest.raises(ChainIntegrityError, match=message):
        verify_chain(tmp_path / "n1")
    node.storage = type(node.storage)(tmp_path / "n1" / DB_NAME)  # reopened for teardown


def test_finalisation_proof_for_light_client(node: LedgerNode, consortium: Consortium) -> None:
    txid = _build(node, consortium)
    p = node.proof(txid)
    vals = node.validators()
    kw = {"chain_id": p.chain_id, "height": p.height, "header": p.header,
          "certificate": p.certificate, "tx": p.tx, "leaf_index": p.leaf_index,
          "tree_size": p.tree_size, "audit_path": p.audit_path, "validators": vals}
    fm = verify_model_finalisation(**kw, expected_weights_sha256=H3, expected_client_sha256=H1)
    assert (fm.session_id, fm.version, fm.height, fm.txid) == ("s1", 1, 3, txid)
    with pytest.raises(InvalidTransaction, match="weights_sha256 differs"):
        verify_model_finalisation(**kw, expected_weights_sha256=H1)
    with pytest.raises(CertificateError, match="1 of the 2"):
        verify_model_finalisation(**{**kw, "certificate": p.certificate[:1]})
    forged = ((p.certificate[0][0], p.certificate[1][1]), p.certificate[1])
    with pytest.raises(CertificateError):
        verify_model_finalisation(**{**kw, "certificate": forged})
    with pytest.raises(InvalidTransaction, match="not in block"):
        verify_model_finalisation(**{**kw, "leaf_index": 0})
    # the invalid tx of block 1 is included but the light client learns it had no effect
    bad = node.storage.block_txs(1)[2][1]
    with pytest.raises(InvalidTransaction, match="marked invalid"):
        verify_proof(node.proof(bad), validators=vals)
    verify_proof(node.proof(bad), validators=vals, require_valid=False)


def test_double_signing_is_evidence(node: LedgerNode, consortium: Consortium) -> None:
    from protocol.ledger.block import Header, sign_header

    _build(node, consortium)
    real = node.header_bytes(3)
    hdr = node.latest_header()
    fake = Header(chain_id=hdr.chain_id, height=3, prev_hash=hdr.prev_hash, tx_root=hdr.tx_root,
                  state_root=b"\x00" * 32, time_ms=hdr.time_ms, proposer="org3",
                  tx_count=hdr.tx_count).to_bytes()
    key = consortium.keys["org3/validator"]
    ev = node.add_signature("org3", fake, sign_header(fake, key))
    assert ev is not None and ev.validator == "org3" and {ev.header_a, ev.header_b} == {real, fake}
    assert len(node.certificate(3)) == 3  # the fake header counts for nothing
    node.commit([consortium.tx("org1/validator", "evidence", ev.body())],
                time_ms=hdr.time_ms + 1, proposer="org1")
    assert node.receipt(node.storage.block_txs(4)[0][1]).valid  # type: ignore[union-attr]
    rec = node.state.get("evidence/org3/3")
    assert rec["validator"] == "org3" and len(rec["header_hashes"]) == 2
    with pytest.raises(CertificateError):
        node.add_signature("org3", fake, sign_header(fake, consortium.keys["org2/validator"]))


def test_restart_signs_a_block_committed_just_before_a_crash(
        node: LedgerNode, consortium: Consortium, tmp_path: Path) -> None:
    _build(node, consortium)
    node.close()
    with sqlite3.connect(tmp_path / "n1" / DB_NAME) as db:  # the crash lost block 3's sigs
        db.execute("DELETE FROM sigs WHERE height = 3")
    reopened = LedgerNode(tmp_path / "n1", validator_keys=consortium.validator_keys())
    try:
        assert reopened.certified_height == 3 and len(reopened.certificate(3)) == 3
    finally:
        reopened.close()
    node.storage = type(node.storage)(tmp_path / "n1" / DB_NAME)
    assert verify_chain(tmp_path / "n1").certified_height == 3


def test_cli_require_certified_fails_on_an_uncertified_head(
        node: LedgerNode, consortium: Consortium, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    from ledger_node.cli import main

    _build(node, consortium)
    node.close()
    data = str(tmp_path / "n1")
    assert main(["verify", "--data-dir", data, "--require-certified"]) == 0
    assert "certified up to 3" in capsys.readouterr().out
    with sqlite3.connect(tmp_path / "n1" / DB_NAME) as db:  # the head's signatures vanish
        assert db.execute("DELETE FROM sigs WHERE height = 3").rowcount == 3
    assert main(["verify", "--data-dir", data]) == 0  # without the flag: a warning only
    assert "not yet certified: [3]" in capsys.readouterr().out
    assert main(["verify", "--data-dir", data, "--require-certified"]) == 1
    err = capsys.readouterr().err
    assert "verify FAILED: head block 3 is not certified" in err
    assert "[3]" in err
