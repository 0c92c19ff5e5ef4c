"""`splitfed audit canaries / run / record` and `splitfed-ledger verify --audit-report`, end to end.

The report is recorded through the real loopback ledger API (solo orderer,
in-process node) and found again by replaying the chain.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from deploy.cli import main as splitfed
from ledger_node.api import LedgerApi
from ledger_node.cli import main as ledger_cli
from ledger_node.node import LedgerNode
from ledger_node.solo import SoloOrderer
from protocol.keys import save_signing_key
from service.ledger_client import LedgerClient
from tests.conftest import DATA_DIR
from tests.unit.ledger_node.conftest import Consortium, make_consortium, session_body


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


def test_canaries_cli_writes_a_secret_plan_and_the_device_half(tmp_path: Path) -> None:
    out = tmp_path / "plans"
    assert splitfed(["audit", "canaries", "--m", "64", "--device", "press-1", "--device",
                     "press-2", "--out-dir", str(out)]) == 0
    plans = [json.loads((out / f"press-{i}.plan.json").read_text()) for i in (1, 2)]
    assert plans[0]["m"] == 64 and len(plans[0]["seed"]) == 32
    assert plans[0]["seed"] != plans[1]["seed"]  # independent secrets per device
    with np.load(out / "press-1.canaries.npz") as z:
        assert z["x"].shape[1:] == (1, 256) and len(z["ids"]) == len(z["y"]) == 64
    assert splitfed(["audit", "canaries", "--m", "999", "--device", "d", "--out-dir",
                     str(out)]) == 2  # more than 256 spike positions
    assert splitfed(["audit", "canaries", "--device", "a/b", "--out-dir", str(out)]) == 2


def test_run_record_verify(served: tuple[LedgerClient, Consortium, LedgerNode],
                           tmp_path: Path) -> None:
    client, c, _ = served
    assert client.submit_and_wait(c.tx("server", "session_create",
                                       session_body(sid="simulated"))).valid
    assert client.submit_and_wait(c.register("org1", "dev1")).valid
    key = tmp_path / "org2-admin.key"
    save_signing_key(c.keys["org2/admin"], key)
    out = tmp_path / "report"
    assert splitfed(["audit", "run", "--mode", "sl-frozen", "--epsilon", "2", "--epochs", "1",
                     "--records", "32", "--m", "32", "--data-dir", str(DATA_DIR), "--key",
                     str(key), "--auditor", "org2/admin", "--session-id", "simulated",
                     "--device", "org1/dev1", "--out", str(out)]) == 0
    body = json.loads((out / "report.json").read_text())
    assert body["verdict"]["reported_epsilon"] == pytest.approx(2.0, rel=1e-3)
    assert {"reconstruction", "labels", "membership"} <= set(body["sessions"][0])
    record = ["audit", "record", str(out), "--url", client.base_url, "--key", str(key),
              "--submitter", "org2/admin", "--chain-id", c.genesis.chain_id]
    assert splitfed(record) == 0
    assert splitfed(record) == 3  # a report is recorded once: the second tx is marked invalid
    other = tmp_path / "org3.key"
    save_signing_key(c.keys["org3/admin"], other)
    # org3's admin did not sign it: refused before anything is submitted
    assert splitfed([*record[:5], str(other), "--submitter", "org3/admin", "--chain-id",
                     c.genesis.chain_id]) == 2
    assert ledger_cli(["verify", "--data-dir", str(tmp_path / "n"), "--audit-report",
                       str(out)]) == 0
