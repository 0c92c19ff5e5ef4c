from __future__ import annotations

import nacl.signing
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.verify import Accepted, AdmissionPipeline, Duplicate, Rejected, RejectReason
from protocol.replay import ReplayGuard
from service.registry import CachedRegistry, DeviceInfo, StaticRegistry

from . import _fixtures as fx

KEYS = {
    d: nacl.signing.SigningKey(bytes([i + 1]) * 32) for i, d in enumerate(["d1", "d2", "rogue"])
}


@pytest.fixture
def reg() -> StaticRegistry:
    return StaticRegistry(
        [DeviceInfo(org=fx.ORG, device=d, pubkey_hex=fx.pubhex(KEYS[d])) for d in ("d1", "d2")]
    )


@pytest.fixture
def pipe(reg: StaticRegistry) -> AdmissionPipeline:
    return AdmissionPipeline(
        org=fx.ORG, registry=CachedRegistry(reg), replay=ReplayGuard(), max_size=64 * 1024
    )


def _admit(p: AdmissionPipeline, data: bytes, topic: str, **kw: object) -> object:
    return p.admit(
        data,
        topic,
        policy=kw.get("policy", fx.policy()),  # type: ignore[arg-type]
        round_no=kw.get("round_no", 0),  # type: ignore[arg-type]
    )


def _reason(out: object) -> RejectReason:
    assert isinstance(out, Rejected), out
    return out.reason


def test_honest_messages_accepted_with_original_bytes(pipe: AdmissionPipeline) -> None:
    data = fx.activation("d1", 1, key=KEYS["d1"])
    out = _admit(pipe, data, fx.up("d1"))
    assert isinstance(out, Accepted) and out.device == "d1" and out.data == data
    w = _admit(pipe, fx.weights("d1", 2, key=KEYS["d1"]), fx.up("d1"))
    assert isinstance(w, Accepted)


def test_qos1_redelivery_is_a_duplicate_not_an_attack(pipe: AdmissionPipeline) -> None:
    data = fx.activation("d1", 5, key=KEYS["d1"])
    assert isinstance(_admit(pipe, data, fx.up("d1")), Accepted)
    dup = _admit(pipe, data, fx.up("d1"))
    assert isinstance(dup, Duplicate) and dup.seq == 5


def test_stale_sequence_is_a_replay(reg: StaticRegistry) -> None:
    p = AdmissionPipeline(org=fx.ORG, registry=CachedRegistry(reg), replay=ReplayGuard(size=4))
    old = fx.activation("d1", 1, key=KEYS["d1"])
    assert isinstance(_admit(p, old, fx.up("d1")), Accepted)
    for s in range(10, 20):
        _admit(p, fx.activation("d1", s, key=KEYS["d1"]), fx.up("d1"))
    assert _reason(_admit(p, old, fx.up("d1"))) is RejectReason.REPLAY


@pytest.mark.parametrize(
    ("make", "topic", "reason"),
    [
        (lambda: fx.activation("rogue", 1, key=KEYS["rogue"]), "rogue", RejectReason.UNREGISTERED),
        # d2's registered key publishing under d1's topic id
        (lambda: fx.activation("d2", 1, key=KEYS["d2"]), "d1", RejectReason.IMPERSONATION),
        # a key claiming to be d1 but not d1's key
        (lambda: fx.activation("d1", 1, key=KEYS["rogue"]), "d1", RejectReason.BAD_SIGNATURE),
        (lambda: fx.with_nan("d1", 1, key=KEYS["d1"]), "d1", RejectReason.MALFORMED),
        (
            lambda: fx.activation("d1", 1, key=KEYS["d1"], shape=(4, 9)),
            "d1",
            RejectReason.WRONG_SHAPE,
        ),
        (lambda: fx.activation("d1", 1, key=KEYS["d1"], batch=17), "d1", RejectReason.WRONG_SHAPE),
        (
            lambda: fx.activation("d1", 1, key=KEYS["d1"], noise=0.5),
            "d1",
            RejectReason.DP_BELOW_POLICY,
        ),
        (
            lambda: fx.activation("d1", 1, key=KEYS["d1"], eps=11.0),
            "d1",
            RejectReason.BUDGET_EXCEEDED,
        ),
        (
            lambda: fx.activation("d1", 1, key=KEYS["d1"], model="ab" * 32),
            "d1",
            RejectReason.WRONG_MODEL,
        ),
        (
            lambda: fx.activation("d1", 1, key=KEYS["d1"], round_no=3),
            "d1",
            RejectReason.WRONG_ROUND,
        ),
        (
            lambda: fx.activation("d1", 1, key=KEYS["d1"], session="s9"),
            "d1",
            RejectReason.WRONG_SESSION,
        ),
        (
            lambda: fx.activation("d1", 1, key=KEYS["d1"], batch=16, shape=(64, 32)),
            "d1",
            RejectReason.OVERSIZE,
        ),
        (lambda: b"\xa1garbage", "d1", RejectReason.MALFORMED),
    ],
)
def test_each_attack_rejected_with_its_reason(
    pipe: AdmissionPipeline, make: object, topic: str, reason: RejectReason
) -> None:
    out = _admit(pipe, make(), fx.up(topic))  # type: ignore[operator]
    assert _reason(out) is reason


def test_tampered_byte_fails_signature(pipe: AdmissionPipeline) -> None:
    data = bytearray(fx.activation("d1", 1, key=KEYS["d1"]))
    data[-70] ^= 0x01  # inside the payload, before the signature
    assert _reason(_admit(pipe, bytes(data), fx.up("d1"))) in {
        RejectReason.BAD_SIGNATURE,
        RejectReason.MALFORMED,
    }


def test_topic_must_be_our_orgs_up_topic(pipe: AdmissionPipeline) -> None:
    data = fx.activation("d1", 1, key=KEYS["d1"])
    assert _reason(_admit(pipe, data, "splitfed/v1/other/d1/up")) is RejectReason.BAD_TOPIC
    assert _reason(_admit(pipe, data, "splitfed/v1/acme/d1/state")) is RejectReason.BAD_TOPIC
    assert _reason(_admit(pipe, data, "not/a/topic")) is RejectReason.BAD_TOPIC


def test_no_session_and_dp_weights_policy(pipe: AdmissionPipeline) -> None:
    data = fx.activation("d1", 1, key=KEYS["d1"])
    assert (
        _reason(pipe.admit(data, fx.up("d1"), policy=None, round_no=0)) is RejectReason.NO_SESSION
    )
    w = fx.weights("d1", 2, key=KEYS["d1"])
    out = _admit(pipe, w, fx.up("d1"), policy=fx.policy(require_dp_weights=True))
    assert _reason(out) is RejectReason.DP_BELOW_POLICY


def test_revocation_takes_effect_from_the_next_block(reg: StaticRegistry) -> None:
    cache = CachedRegistry(reg)
    p = AdmissionPipeline(org=fx.ORG, registry=cache, replay=ReplayGuard())
    cache.on_block(10)
    assert isinstance(_admit(p, fx.activation("d1", 1, key=KEYS["d1"]), fx.up("d1")), Accepted)
    reg.put(DeviceInfo(org=fx.ORG, device="d1", pubkey_hex=fx.pubhex(KEYS["d1"]), revoked=True))
    # same block: the cached answer stands
    assert isinstance(_admit(p, fx.activation("d1", 2, key=KEYS["d1"]), fx.up("d1")), Accepted)
    cache.on_block(11)
    assert (
        _reason(_admit(p, fx.activation("d1", 3, key=KEYS["d1"]), fx.up("d1")))
        is RejectReason.REVOKED
    )


def test_unknown_kids_are_cached_per_block(reg: StaticRegistry) -> None:
    cache = CachedRegistry(reg)
    p = AdmissionPipeline(org=fx.ORG, registry=cache, replay=ReplayGuard())
    cache.on_block(1)
    for s in range(20):
        _admit(p, fx.activation("rogue", s, key=KEYS["rogue"]), fx.up("rogue"))
    assert reg.calls == 1


@settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.binary(max_size=2048), st.integers(0, 2000), st.binary(min_size=1, max_size=4))
def test_random_and_mutated_input_never_raises(
    pipe: AdmissionPipeline, junk: bytes, pos: int, patch: bytes
) -> None:
    assert isinstance(_admit(pipe, junk, fx.up("d1")), Rejected)
    good = bytearray(fx.activation("d2", 1, key=KEYS["d2"], batch=1))
    i = pos % len(good)
    good[i : i + len(patch)] = patch
    out = _admit(pipe, bytes(good), fx.up("d2"))
    assert isinstance(out, Accepted | Rejected | Duplicate)


def test_rejected_signed_message_with_huge_seq_does_not_poison_the_window(
    pipe: AdmissionPipeline,
) -> None:
    """The attack: a signed message, seq 2**62, round 999999 -> wrong_round; then genuine."""
    evil = fx.activation("d1", 1 << 62, key=KEYS["d1"], round_no=999999)
    # first message of d1 this gateway sees (e.g. right after a restart): no jump to measure
    assert _reason(_admit(pipe, evil, fx.up("d1"))) is RejectReason.WRONG_ROUND
    genuine = _admit(pipe, fx.activation("d1", 1, key=KEYS["d1"]), fx.up("d1"))
    assert isinstance(genuine, Accepted), genuine
    # once the window has a top, the same message is refused by the jump bound first
    assert _reason(_admit(pipe, evil, fx.up("d1"))) is RejectReason.SEQ_JUMP
    assert isinstance(_admit(pipe, fx.activation("d1", 2, key=KEYS["d1"]), fx.up("d1")), Accepted)


def test_seq_jump_beyond_bound_is_rejected_and_counted_apart_from_replay(
    pipe: AdmissionPipeline,
) -> None:
    from protocol.replay import MAX_SEQ_JUMP

    assert isinstance(_admit(pipe, fx.activation("d1", 7, key=KEYS["d1"]), fx.up("d1")), Accepted)
    far = fx.activation("d1", 7 + MAX_SEQ_JUMP + 1, key=KEYS["d1"])  # current round, valid
    assert _reason(_admit(pipe, far, fx.up("d1"))) is RejectReason.SEQ_JUMP
    assert isinstance(_admit(pipe, fx.activation("d1", 8, key=KEYS["d1"]), fx.up("d1")), Accepted)
    # a policy failure (DP below the floor) does not mark the seq either: the honest retry
    # with the same seq and proper noise is accepted
    weak = fx.activation("d1", 9, key=KEYS["d1"], noise=0.1)
    assert _reason(_admit(pipe, weak, fx.up("d1"))) is RejectReason.DP_BELOW_POLICY
    assert isinstance(_admit(pipe, fx.activation("d1", 9, key=KEYS["d1"]), fx.up("d1")), Accepted)
