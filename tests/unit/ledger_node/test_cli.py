"""CLI commands that need no running node, and their exit codes."""

from __future__ import annotations

import json
from pathlib import Path

import nacl.signing
import pytest

from ledger_node.cli import main
from protocol.keys import save_signing_key
from protocol.ledger.registration import make_registration_request, verify_registration_request
from protocol.ledger.tx import decode_tx


def test_make_tx_embeds_file_bytes(tmp_path: Path) -> None:
    key = nacl.signing.SigningKey.generate()
    save_signing_key(key, tmp_path / "keys" / "admin.key")
    dev = nacl.signing.SigningKey.generate()
    (tmp_path / "req.cbor").write_bytes(
        make_registration_request(signing_key=dev, org="org1", device="pump1"))
    (tmp_path / "body.json").write_text(json.dumps({"request": {"@file": "req.cbor"}}))
    assert main(["make-tx", "--kind", "device_register", "--body", str(tmp_path / "body.json"),
                 "--key", str(tmp_path / "keys" / "admin.key"), "--submitter", "org1/admin",
                 "--chain-id", "c1", "--out", str(tmp_path / "tx.cbor")]) == 0
    tx = decode_tx((tmp_path / "tx.cbor").read_bytes(), chain_id="c1")
    assert verify_registration_request(tx.body["request"]).device == "pump1"


@pytest.mark.parametrize(("body", "expected"), [
    ({"req": {"@file": "req.cbor"}}, "device_register body needs field 'request'"),
    ({"request": "req.cbor"}, "device_register body field 'request' must be bytes"),
    ({"request": {"@file": "missing.req"}}, "body field 'request': cannot read"),
])
def test_make_tx_names_the_wrong_body_field(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                            body: dict[str, object], expected: str) -> None:
    save_signing_key(nacl.signing.SigningKey.generate(), tmp_path / "keys" / "admin.key")
    (tmp_path / "req.cbor").write_bytes(make_registration_request(
        signing_key=nacl.signing.SigningKey.generate(), org="org1", device="pump1"))
    (tmp_path / "body.json").write_text(json.dumps(body))
    assert main(["make-tx", "--kind", "device_register", "--body", str(tmp_path / "body.json"),
                 "--key", str(tmp_path / "keys" / "admin.key"), "--submitter", "org1/admin",
                 "--chain-id", "c1", "--out", str(tmp_path / "tx.cbor")]) == 2
    err = capsys.readouterr().err
    assert expected in err
    assert "request" in err and not (tmp_path / "tx.cbor").exists()


def test_exit_codes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["genesis", "--out", str(tmp_path / "g"), "--orgs", "org1", "--ordering",
                 "etcd"]) == 0
    assert main(["init", "--genesis", str(tmp_path / "g" / "genesis.json"),
                 "--data-dir", str(tmp_path / "d")]) == 0
    cfg = tmp_path / "ledger.toml"
    cfg.write_text(f'data_dir = "{tmp_path / "d"}"\nlisten = "127.0.0.1:0"\n')
    assert main(["run", "--config", str(cfg)]) == 2  # etcd genesis without endpoints
    assert "etcd.endpoints is empty" in capsys.readouterr().err
    assert main(["verify", "--data-dir", str(tmp_path / "nowhere")]) == 1
    assert main(["show", "--url", "http://127.0.0.1:9"]) == 1  # nothing listens on port 9
    assert main(["frobnicate"]) == 2
