"""Fixtures: an in-memory 3-org consortium (keys, genesis) and a node on a temp dir."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nacl.signing
import pytest

from ledger_node.node import LedgerNode
from protocol.keys import public_key_hex
from protocol.ledger.genesis import Genesis, OrgSpec
from protocol.ledger.registration import make_registration_request
from protocol.ledger.tx import make_tx

ORGS = ("org1", "org2", "org3")
H1 = "11" * 32
H2 = "22" * 32
H3 = "33" * 32


@dataclass
class Consortium:
    keys: dict[str, nacl.signing.SigningKey]
    genesis: Genesis
    nonce: int = 0
    devices: dict[str, nacl.signing.SigningKey] = field(default_factory=dict)

    def tx(self, who: str, kind: str, body: dict[str, Any], *, key: str | None = None,
           nonce: int | None = None) -> bytes:
        self.nonce += 1
        return make_tx(kind, body, signing_key=self.keys[key or who], submitter=who,
                       chain_id=self.genesis.chain_id,
                       nonce=self.nonce if nonce is None else nonce)

    def register(self, org: str, device: str, *, admin: str | None = None) -> bytes:
        dk = self.devices.setdefault(f"{org}/{device}", nacl.signing.SigningKey.generate())
        req = make_registration_request(signing_key=dk, org=org, device=device)
        who = admin or f"{org}/admin"
        return self.tx(who, "device_register", {"request": req})

    def validator_keys(self) -> dict[str, nacl.signing.SigningKey]:
        return {o: self.keys[f"{o}/validator"] for o in ORGS}


def make_consortium(ordering: str = "solo") -> Consortium:
    keys = {f"{o}/{r}": nacl.signing.SigningKey.generate()
            for o in ORGS for r in ("admin", "validator", "gateway")}
    keys["server"] = nacl.signing.SigningKey.generate()
    orgs = tuple(OrgSpec(id=o, admin=public_key_hex(keys[f"{o}/admin"]),
                         validator=public_key_hex(keys[f"{o}/validator"]),
                         gateway=public_key_hex(keys[f"{o}/gateway"])) for o in ORGS)
    g = Genesis(chain_id="test-chain", time_ms=1_700_000_000_000, orgs=orgs,
                server=public_key_hex(keys["server"]), ordering=ordering,
                block_max_txs=50, block_max_ms=20)
    return Consortium(keys=keys, genesis=g)


@pytest.fixture
def consortium() -> Consortium:
    return make_consortium()


@pytest.fixture
def node(tmp_path: Path, consortium: Consortium) -> Iterator[LedgerNode]:
    LedgerNode.init(tmp_path / "n1", consortium.genesis)
    n = LedgerNode(tmp_path / "n1", validator_keys=consortium.validator_keys())
    yield n
    n.close()


def session_body(sid: str = "s1", **over: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "session_id": sid, "model_id": "cnn1d", "client_sha256": H1, "server_sha256": H2,
        "dp": {"min_noise_multiplier": 1.0, "clip": 1.0, "max_epsilon": 8.0, "delta": 1e-5},
        "rounds": 3, "groups": {"g1": list(ORGS)}, "sfl_mode": "v1",
    }
    body.update(over)
    return body
