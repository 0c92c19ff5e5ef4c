"""Both ends wired together in memory: device -> gateway -> server, no broker.

The receiver below is the order every consumer of the protocol should follow:
peek (structure, size) -> look the kid up -> check the signature -> decode by
content type -> replay window -> act. The "broker" is a list, so redelivery,
reordering, replay after a restart and tampering are written out explicitly.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import nacl.signing
import pytest

from protocol.envelope import check_signature, peek
from protocol.errors import BadSignature, ProtocolError, ReplayError
from protocol.messages import ActivationBatch, Endorsement, decode_any, open_sealed, seal
from protocol.replay import ReplayGuard, Verdict
from tests.unit.protocol.keys_for_tests import DEVICE_KEY, OTHER_KEY, SERVER_KEY, sample_batch


@dataclass
class Receiver:
    keys: dict[str, nacl.signing.VerifyKey]
    replay: ReplayGuard = field(default_factory=lambda: ReplayGuard(size=64))
    acted: list[int] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)

    def receive(self, data: bytes) -> None:
        try:
            env = peek(data)
            key = self.keys.get(env.kid)
            if key is None:
                raise BadSignature(f"unknown kid {env.kid}")
            check_signature(env, verify_key=key)
            msg = decode_any(env.payload, env.content_type)
            assert isinstance(msg, ActivationBatch)
            if msg.device != env.kid:
                raise BadSignature("device signs only its own messages")
            if self.replay.observe(env.kid, msg.seq) is Verdict.DUPLICATE:
                return  # QoS 1 redelivery: acknowledge, do nothing
        except ProtocolError as exc:
            self.dropped.append(type(exc).__name__)
            return
        self.acted.append(msg.seq)


def batch(seq: int) -> bytes:
    return seal(sample_batch(seq=seq), signing_key=DEVICE_KEY, kid="dev-01")


def test_redelivery_reordering_replay_and_forgery() -> None:
    gateway = Receiver(keys={"dev-01": DEVICE_KEY.verify_key})
    wire = [batch(1), batch(2), batch(2), batch(4), batch(3), batch(1)]  # dup, reorder, dup
    forged = seal(sample_batch(seq=5), signing_key=OTHER_KEY, kid="dev-01")
    tampered = bytearray(batch(6))
    tampered[-70] ^= 0x01  # one bit in the payload's last bytes
    for data in (*wire, forged, bytes(tampered), b"\x00garbage"):
        gateway.receive(data)
    assert gateway.acted == [1, 2, 4, 3]  # each batch acted on once, in arrival order
    assert gateway.dropped == ["BadSignature", "BadSignature", "MalformedMessage"]

    # restart from persisted state: an attacker replaying captured traffic gets nothing
    restarted = Receiver(
        keys=gateway.keys,
        replay=ReplayGuard.from_state_dict(json.loads(json.dumps(gateway.replay.state_dict()))),
    )
    for data in wire:
        restarted.receive(data)
    restarted.receive(batch(7))
    assert restarted.acted == [7]


def test_stale_number_after_window_is_refused() -> None:
    gateway = Receiver(keys={"dev-01": DEVICE_KEY.verify_key})
    gateway.receive(batch(100))
    gateway.receive(batch(1))  # 99 behind a 64-wide window
    assert gateway.acted == [100]
    assert gateway.dropped == ["ReplayError"]
    with pytest.raises(ReplayError):
        gateway.replay.observe("dev-01", 1)


def test_device_bytes_reach_the_server_unchanged_through_the_gateway() -> None:
    device_bytes = batch(9)
    gateway = Receiver(keys={"dev-01": DEVICE_KEY.verify_key})
    gateway.receive(device_bytes)
    endorsed = seal(
        Endorsement(org="acme", gateway="gw-acme", seq=1, envelope=device_bytes),
        signing_key=SERVER_KEY,  # stands in for the gateway's key
        kid="gw-acme",
    )
    outer = open_sealed(endorsed, verify_key=SERVER_KEY.verify_key, expected_kid="gw-acme")
    assert isinstance(outer, Endorsement)
    server = Receiver(keys={"dev-01": DEVICE_KEY.verify_key})
    server.receive(outer.envelope)
    assert server.acted == gateway.acted == [9]
