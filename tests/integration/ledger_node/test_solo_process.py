"""Solo node as a real process: no other service, survives kill -9, CLI exit codes."""

from __future__ import annotations

import socket
import sqlite3
from pathlib import Path

import nacl.signing
import pytest

from ledger_node.cli import main
from ledger_node.errors import OrderingError
from protocol.keys import load_signing_key
from protocol.ledger.registration import make_registration_request
from protocol.ledger.tx import make_tx

from ._proc import NodeProcess, write_config

pytestmark = pytest.mark.integration


def _register(admin: nacl.signing.SigningKey, i: int) -> bytes:
    dev = nacl.signing.SigningKey.generate()
    req = make_registration_request(signing_key=dev, org="org1", device=f"d{i}")
    return make_tx("device_register", {"request": req}, signing_key=admin,
                   submitter="org1/admin", chain_id="solo-test", nonce=i)


def test_kill9_loses_no_committed_block(tmp_path: Path) -> None:
    assert main(["genesis", "--out", str(tmp_path / "g"), "--orgs", "org1", "--chain-id",
                 "solo-test", "--block-max-txs", "10", "--block-max-ms", "3000"]) == 0
    data = tmp_path / "data"
    assert main(["init", "--genesis", str(tmp_path / "g" / "genesis.json"),
                 "--data-dir", str(data)]) == 0
    assert main(["init", "--genesis", str(tmp_path / "g" / "genesis.json"),
                 "--data-dir", str(data)]) == 1  # refuses to re-initialise
    keys = tmp_path / "g" / "keys"
    cfg = write_config(tmp_path / "node.toml", data_dir=data, node_id="org1",
                       keys={"org1": keys / "org1-validator.key"})
    admin = load_signing_key(keys / "org1-admin.key")
    node = NodeProcess(cfg, data, tmp_path / "node.log")
    try:
        client = node.start()
        accepted = []
        for i in range(125):  # 12 full blocks + 5 txs waiting for the 3 s timer
            accepted.append(client.submit(_register(admin, i)))
        client.wait_for(accepted[119], timeout=20)
        before = client.height()
        hashes = {h: client.block(h)["hash"] for h in range(1, before + 1)}
        assert client.receipt(accepted[-1]) is None  # acknowledged, not yet in a block
        node.kill9()
        with pytest.raises(OrderingError):
            client.height()
        client = node.start()
        assert client.height() >= before
        assert {h: client.block(h)["hash"] for h in range(1, before + 1)} == hashes
        # every tx the node acknowledged before the crash is committed afterwards
        receipts = [client.wait_for(t, timeout=20) for t in accepted]
        assert all(r.valid for r in receipts)
        assert len({r.txid for r in receipts}) == 125
        assert client.device("org1", "d124") is not None
    finally:
        node.stop()
    assert main(["verify", "--data-dir", str(data)]) == 0


def test_cli_verify_names_tampered_block(tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["genesis", "--out", str(tmp_path / "g"), "--orgs", "org1,org2",
                 "--chain-id", "solo-test", "--block-max-txs", "5", "--block-max-ms", "20"]) == 0
    data = tmp_path / "data"
    assert main(["init", "--genesis", str(tmp_path / "g" / "genesis.json"),
                 "--data-dir", str(data)]) == 0
    keys = tmp_path / "g" / "keys"
    cfg = write_config(tmp_path / "node.toml", data_dir=data, node_id="org1",
                       keys={"org1": keys / "org1-validator.key",
                             "org2": keys / "org2-validator.key"})
    admin = load_signing_key(keys / "org1-admin.key")
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(str(tmp_path / "notify.sock"))
    notify.settimeout(10)
    node = NodeProcess(cfg, data, tmp_path / "node.log",
                       env={"NOTIFY_SOCKET": str(tmp_path / "notify.sock")})
    try:
        client = node.start()
        assert notify.recv(512).startswith(b"READY=1")  # systemd Type=notify
        txids = [client.submit(_register(admin, i)) for i in range(12)]
        client.wait_for(txids[-1], timeout=10)
        tx_file = tmp_path / "again.tx"
        tx_file.write_bytes(_register(admin, 3))  # nonce 3 again (new device key, new txid)
        capsys.readouterr()
        assert main(["submit", str(tx_file), "--url", node.url]) == 3
        assert "replayed nonce" in capsys.readouterr().out
        assert main(["state", "device/org1/d4", "--url", node.url]) == 0
        assert main(["prove", txids[4], "--url", node.url]) == 0
        assert '"valid": true' in capsys.readouterr().out
        assert main(["show", "2", "--url", node.url]) == 0
        replica = tmp_path / "replica"
        assert main(["init", "--genesis", str(tmp_path / "g" / "genesis.json"),
                     "--data-dir", str(replica)]) == 0
        assert main(["catch-up", "--data-dir", str(replica), "--from", node.url]) == 0
        assert main(["verify", "--data-dir", str(replica)]) == 0
        assert f"head {client.block(client.height())['hash']}" in capsys.readouterr().out
    finally:
        node.stop()
        notify.close()
    assert main(["verify", "--data-dir", str(data)]) == 0
    with sqlite3.connect(data / "ledger.sqlite") as db:
        db.execute("UPDATE txs SET data = CAST(substr(data, 1, 50) || X'01' || substr(data, 52) "
                   "AS BLOB) WHERE height = 2 AND idx = 0")
    capsys.readouterr()
    assert main(["verify", "--data-dir", str(data)]) == 1
    assert "verify FAILED: block 2: tx 0" in capsys.readouterr().err
    assert main(["init", "--genesis", str(tmp_path / "missing.json"),
                 "--data-dir", str(tmp_path / "x")]) == 2
