"""Fixtures shared by integration tests: a real Mosquitto broker, a real ledger node.

``mosquitto``: function-scoped, started and ready; ``allow_anonymous false``;
users and passwords in :data:`MQTT_USERS`; ACL :func:`deploy.broker.device_acl`
for org ``acme`` (devices ``dev1``/``dev2`` may publish only under their own
``splitfed/v1/acme/<device>/``; ``gateway`` and ``server`` read and write
``splitfed/v1/acme/#``).  Persistence lives in the test's tmp dir, so
``broker.restart()`` keeps sessions and queued messages.

``mosquitto_factory(**kwargs)``: start more brokers or other configurations
(kwargs of :class:`deploy.broker.MosquittoBroker`).  Every broker a test
started is stopped at teardown, even when the test fails.

``ledger``: a solo-ordered consortium ledger node with its HTTP API
(:func:`tests.integration.helpers.solo_ledger`), as ``(client, consortium)``.
Polling helpers are in :mod:`tests.integration.helpers` (``wait_for``).
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from deploy.broker import MosquittoBroker, device_acl
from service.ledger_client import LedgerClient
from tests.integration.helpers import solo_ledger
from tests.unit.ledger_node.conftest import Consortium

MQTT_ORG = "acme"
MQTT_USERS: dict[str, str] = {
    "gateway": "gateway-pw", "server": "server-pw", "dev1": "dev1-pw", "dev2": "dev2-pw",
}


@pytest.fixture
def mosquitto_factory(tmp_path: Path) -> Iterator[Callable[..., MosquittoBroker]]:
    if shutil.which("mosquitto") is None:
        pytest.fail("mosquitto is not installed: run `make setup` (apt-get install mosquitto)")
    brokers: list[MosquittoBroker] = []

    def make(**kwargs: Any) -> MosquittoBroker:
        broker = MosquittoBroker(tmp_path / f"mosquitto-{len(brokers)}", **kwargs)
        brokers.append(broker)
        broker.start()
        return broker

    try:
        yield make
    finally:
        for broker in brokers:
            broker.stop()


@pytest.fixture
def mosquitto(mosquitto_factory: Callable[..., MosquittoBroker]) -> MosquittoBroker:
    return mosquitto_factory(users=MQTT_USERS,
                             acl=device_acl(MQTT_ORG, readers=("gateway", "server")))


@pytest.fixture
def ledger(tmp_path: Path) -> Iterator[tuple[LedgerClient, Consortium]]:
    with solo_ledger(tmp_path / "ledger") as pair:
        yield pair
