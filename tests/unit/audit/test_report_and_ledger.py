"""The signed report, `splitfed audit show`, the audit_report tx and `splitfed-ledger verify`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from audit.errors import AuditInputError
from audit.report import audit_report_tx_body, load_report, write_report
from deploy.cli import main as splitfed
from ledger_node.cli import main as ledger_cli
from ledger_node.node import LedgerNode
from ledger_node.verify import verify_chain
from protocol.keys import public_key_hex
from protocol.ledger.tx import decode_tx
from tests.unit.ledger_node.conftest import Consortium, make_consortium, session_body

VERDICT = {"reported_epsilon": 0.3, "delta": 1e-5, "confidence": 0.95,
           "epsilon_lower_bound": 2.5, "flagged": True, "strength": 3.6,
           "note": "FLAGGED: test", "best_score": "weight_update"}
RUN: dict[str, Any] = {"mode": "sl-dpsgd", "reported_epsilon": 0.3, "one_run": {
    "per_score": {"weight_update": {"correct": 90, "guesses": 100, "epsilon_lower_bound": 2.5}},
    "score_auc": {"weight_update": 0.97}}}


def _report(tmp: Path, c: Consortium, who: str = "org2/admin") -> tuple[Path, str]:
    out = tmp / "report"
    digest = write_report(out, session_id="s1", device="org1/d1", verdict=VERDICT,
                          sessions=[RUN], plan=None, signing_key=c.keys[who], auditor=who)
    return out, digest


def test_report_round_trip_and_tampering(tmp_path: Path, capsys: pytest.CaptureFixture[str]
                                         ) -> None:
    c = make_consortium()
    out, digest = _report(tmp_path, c)
    body, got, problems = load_report(out, verify_key=c.keys["org2/admin"].verify_key)
    assert (got, problems) == (digest, [])
    assert body["verdict"]["flagged"] is True and "FLAGGED" in (out / "report.md").read_text()
    assert (out / "report.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert splitfed(["audit", "show", str(out), "--pubkey",
                     public_key_hex(c.keys["org2/admin"])]) == 0
    assert "signature OK (the given key)" in capsys.readouterr().out
    # wrong key: the signature does not verify
    assert splitfed(["audit", "show", str(out), "--pubkey",
                     public_key_hex(c.keys["org3/admin"])]) == 4
    # an artifact swapped after signing is named
    (out / "report.png").write_bytes(b"\x89PNG other")
    assert splitfed(["audit", "show", str(out)]) == 3
    assert "report.png differs" in capsys.readouterr().err
    # the signed JSON edited: refused
    cose = (out / "report.cose").read_bytes()
    (out / "report.cose").write_bytes(cose.replace(b'"flagged":true', b'"flagged":fals'))
    with pytest.raises(AuditInputError, match="does not verify"):
        load_report(out)


def _node(tmp: Path, c: Consortium) -> LedgerNode:
    LedgerNode.init(tmp / "n1", c.genesis)
    return LedgerNode(tmp / "n1", validator_keys=c.validator_keys())


def test_audit_report_tx_is_validated_and_verify_finds_it(tmp_path: Path) -> None:
    c = make_consortium()
    out, digest = _report(tmp_path, c)
    body, _, _ = load_report(out)
    tx_body = audit_report_tx_body(body, digest)
    node = _node(tmp_path, c)
    try:
        t = node.genesis.time_ms
        node.commit([c.tx("server", "session_create", session_body()), c.register("org1", "d1")],
                    time_ms=t + 1, proposer="org1")
        good = c.tx("org2/admin", "audit_report", tx_body)
        bad = [
            c.tx("org2/gateway", "audit_report", tx_body),                    # not an admin
            c.tx("org3/admin", "audit_report", tx_body),                      # did not sign it
            c.tx("org2/admin", "audit_report", {**tx_body, "session_id": "nope"}),
            c.tx("org2/admin", "audit_report", {**tx_body, "device": "org1/ghost"}),
            c.tx("org2/admin", "audit_report", {**tx_body, "report_sha256": "xy"}),
            c.tx("org2/admin", "audit_report", {**tx_body, "confidence": 1.5}),
            c.tx("org2/admin", "audit_report", {**tx_body, "epsilon_lower_bound": -1}),
        ]
        block, _ = node.commit([good, *bad, c.tx("org2/admin", "audit_report", tx_body)],
                               time_ms=t + 2, proposer="org1")
        valid = [r.valid for r in block.results]
        assert valid == [True] + [False] * len(bad) + [False]  # last: recorded once
        reasons = [r.reason for r in block.results]
        assert "is not an org admin" in str(reasons[1])
        assert "auditor_pubkey must be the key" in str(reasons[2])
        assert "already recorded" in str(reasons[-1])
        rec = node.state.get(f"audit_report/{digest}")
        assert rec["flagged"] is True and rec["txid"] == decode_tx(good).txid
    finally:
        node.close()
    rep = verify_chain(tmp_path / "n1", state_keys=(f"audit_report/{digest}",))
    assert rep.found[f"audit_report/{digest}"]["auditor"] == "org2/admin"
    assert ledger_cli(["verify", "--data-dir", str(tmp_path / "n1"), "--audit-report",
                       str(out)]) == 0
    other, _ = _report(tmp_path / "o", c, who="org3/admin")  # signed, never recorded
    assert ledger_cli(["verify", "--data-dir", str(tmp_path / "n1"), "--audit-report",
                       str(other / "report.json")]) == 1


def test_report_json_is_strict_json(tmp_path: Path) -> None:
    c = make_consortium()
    out = tmp_path / "r"
    write_report(out, session_id="s1", device="org1/d1",
                 verdict={**VERDICT, "reported_epsilon": float("inf")}, sessions=[], plan=None,
                 signing_key=c.keys["org2/admin"], auditor="org2/admin")
    body = json.loads((out / "report.json").read_text(),
                      parse_constant=lambda s: pytest.fail(f"non-standard JSON {s}"))
    assert body["verdict"]["reported_epsilon"] == "inf"
    assert audit_report_tx_body(body, "00" * 32)["reported_epsilon"] is None
