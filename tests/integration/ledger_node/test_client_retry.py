"""The ledger client's retries against resets and a real node killed and restarted."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from ledger_node.api import LedgerApi
from ledger_node.cli import main
from ledger_node.errors import OrderingError
from ledger_node.node import LedgerNode
from ledger_node.solo import SoloOrderer
from protocol.keys import load_signing_key
from service.ledger_client import LedgerClient
from service.retry import NO_RETRY, RetryPolicy
from tests.unit.ledger_node.conftest import Consortium, make_consortium

from ._proc import NodeProcess, write_config
from ._resetproxy import ResetProxy
from .test_solo_process import _register

FAST = RetryPolicy(max_attempts=6, base_s=0.01, cap_s=0.05, deadline_s=5.0)


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[LedgerApi, Consortium, LedgerNode]]:
    c = make_consortium()
    LedgerNode.init(tmp_path / "n", c.genesis)
    node = LedgerNode(tmp_path / "n", validator_keys=c.validator_keys())
    orderer = SoloOrderer(node, proposer="org1")
    api = LedgerApi(node, orderer)
    orderer.start()
    api.start()
    try:
        yield api, c, node
    finally:
        api.stop()
        orderer.stop()
        node.close()


def test_without_retries_one_reset_is_an_error(
        served: tuple[LedgerApi, Consortium, LedgerNode]) -> None:
    api, _, _ = served
    proxy = ResetProxy(api.url, resets=1)
    try:
        with pytest.raises(OrderingError, match="unreachable"):
            LedgerClient(proxy.url, retry=NO_RETRY).height()
        assert proxy.connections == 1
    finally:
        proxy.close()


def test_get_rides_through_resets(served: tuple[LedgerApi, Consortium, LedgerNode]) -> None:
    api, _, _ = served
    proxy = ResetProxy(api.url, resets=3)
    try:
        assert LedgerClient(proxy.url, retry=FAST).height() == 0
        assert proxy.connections == 4
    finally:
        proxy.close()


def test_submit_is_retried_after_a_lost_response_and_applied_once(
        served: tuple[LedgerApi, Consortium, LedgerNode]) -> None:
    api, c, node = served
    proxy = ResetProxy(api.url, resets=2, mode="after")  # the node saw the tx each time
    try:
        client = LedgerClient(proxy.url, retry=FAST)
        tx = c.register("org1", "d1")
        txid = client.submit(tx)
        assert proxy.connections == 3
        r = client.wait_for(txid, timeout=10)
        assert r.valid
        block = client.block(r.height)
        assert [t["txid"] for t in block["txs"]].count(txid) == 1
    finally:
        proxy.close()
    assert node.storage.pending_count() == 0


def test_non_idempotent_call_is_not_retried(
        served: tuple[LedgerApi, Consortium, LedgerNode]) -> None:
    api, c, _ = served
    proxy = ResetProxy(api.url, resets=1, mode="after")
    try:
        client = LedgerClient(proxy.url, retry=FAST)
        with pytest.raises(OrderingError):
            client._call("/v1/tx", data=c.register("org1", "d1"), idempotent=False)
        assert proxy.connections == 1  # one attempt only, though the node acted on it
    finally:
        proxy.close()


def test_retries_stop_at_the_deadline(served: tuple[LedgerApi, Consortium, LedgerNode]) -> None:
    api, _, _ = served
    proxy = ResetProxy(api.url, resets=10**6)
    try:
        policy = RetryPolicy(max_attempts=1000, base_s=0.01, cap_s=0.02, deadline_s=0.3)
        with pytest.raises(OrderingError):
            LedgerClient(proxy.url, retry=policy).height()
        # at most deadline / (minimum sleep) attempts, and more than one
        assert 1 < proxy.connections <= 61
    finally:
        proxy.close()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.integration
def test_client_rides_through_a_node_kill_and_restart(tmp_path: Path) -> None:
    assert main(["genesis", "--out", str(tmp_path / "g"), "--orgs", "org1", "--chain-id",
                 "solo-test", "--block-max-txs", "10", "--block-max-ms", "20"]) == 0
    data = tmp_path / "data"
    assert main(["init", "--genesis", str(tmp_path / "g" / "genesis.json"),
                 "--data-dir", str(data)]) == 0
    keys = tmp_path / "g" / "keys"
    cfg = write_config(tmp_path / "node.toml", data_dir=data, node_id="org1",
                       keys={"org1": keys / "org1-validator.key"}, port=_free_port())
    admin = load_signing_key(keys / "org1-admin.key")
    node = NodeProcess(cfg, data, tmp_path / "node.log")
    restarter = threading.Thread(target=node.start, kwargs={"timeout": 30})
    try:
        node.start()
        # generous: a restart of the node process takes seconds on a loaded machine
        client = LedgerClient(node.url, timeout=5,
                              retry=RetryPolicy(max_attempts=100, base_s=0.05, cap_s=0.5,
                                                deadline_s=40))
        assert client.submit_and_wait(_register(admin, 0)).valid
        node.kill9()
        with pytest.raises(OrderingError):
            LedgerClient(node.url, retry=NO_RETRY).height()  # really down
        restarter.start()
        # sent while the node is down: retried until the restarted node took it
        txid = client.submit(_register(admin, 1))
        assert client.wait_for(txid, timeout=20).valid
        assert client.height() >= 2
    finally:
        if restarter.is_alive() or restarter.ident is not None:
            restarter.join(timeout=40)
        node.stop()
