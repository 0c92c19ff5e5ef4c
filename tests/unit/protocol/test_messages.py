"""Message types: round trips (property), seal/open, validation when built, JSON views."""

from __future__ import annotations

import dataclasses
import hashlib
import json

import cbor2
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocol.envelope import CONTENT_TYPES, peek, sign
from protocol.errors import BadSignature, LimitExceeded, MalformedMessage
from protocol.messages import (
    MESSAGE_TYPES,
    ActivationBatch,
    ClientWeights,
    Command,
    DeviceState,
    DpParams,
    Endorsement,
    GradientBatch,
    LedgerProof,
    Message,
    ModelAnnouncement,
    Prediction,
    decode_any,
    open_sealed,
    seal,
    unseal,
    weights_digest,
)
from protocol.tensor import TensorLimits
from tests.unit.protocol import strategies as s
from tests.unit.protocol.keys_for_tests import (
    DEVICE_KEY,
    MODEL_HASH,
    OTHER_KEY,
    SERVER_KEY,
    sample_batch,
)

ROUND_TRIP = settings(max_examples=40, deadline=None)


def test_every_content_type_has_one_message_type() -> None:
    assert set(MESSAGE_TYPES) == set(CONTENT_TYPES)


@pytest.mark.parametrize(
    "strategy",
    [
        s.activation_batches(),
        s.gradient_batches(),
        s.client_weights(),
        s.commands,
        s.device_states,
        s.predictions(),
        s.ledger_proofs(),
        s.model_announcements(),
        s.endorsements(),
    ],
    ids=lambda st_: repr(st_)[:30],
)
@ROUND_TRIP
@given(data=st.data())
def test_encode_decode_round_trip(
    strategy: st.SearchStrategy[Message], data: st.DataObject
) -> None:
    msg = data.draw(strategy)
    payload = msg.encode()
    assert type(msg).decode(payload) == msg
    assert decode_any(payload, msg.CONTENT_TYPE) == msg
    assert msg.encode() == payload  # canonical: encoding is a function of the value
    assert cbor2.dumps(cbor2.loads(payload), canonical=True) == payload


@settings(max_examples=60, deadline=None)
@given(s.any_message())
def test_seal_open_round_trip(msg: Message) -> None:
    data = seal(msg, signing_key=SERVER_KEY, kid="server")
    env, back = unseal(data, verify_key=SERVER_KEY.verify_key)
    assert back == msg
    assert env.content_type == msg.CONTENT_TYPE
    assert env.kid == "server"
    with pytest.raises(BadSignature):
        open_sealed(data, verify_key=OTHER_KEY.verify_key)


def test_sample_batch_seal_open() -> None:
    msg = sample_batch()
    data = seal(msg, signing_key=DEVICE_KEY, kid="dev-01")
    assert open_sealed(data, verify_key=DEVICE_KEY.verify_key, expected_kid="dev-01") == msg
    assert msg != sample_batch(seq=2)
    assert msg != "not a message"


def test_oversize_tensor_in_sealed_message() -> None:
    data = seal(sample_batch(), signing_key=DEVICE_KEY, kid="dev-01")
    with pytest.raises(LimitExceeded):
        open_sealed(data, verify_key=DEVICE_KEY.verify_key, limits=TensorLimits(max_dim=16))


def test_nan_smuggled_in_a_signed_message_is_refused() -> None:
    wire = cbor2.loads(sample_batch().encode())
    acts = np.frombuffer(wire["activations"]["data"], dtype="<f2").copy()
    acts[7] = np.nan
    wire["activations"]["data"] = acts.tobytes()
    data = sign(
        cbor2.dumps(wire, canonical=True),
        signing_key=DEVICE_KEY,
        kid="dev-01",
        content_type=ActivationBatch.CONTENT_TYPE,
    )
    with pytest.raises(MalformedMessage, match="NaN"):
        open_sealed(data, verify_key=DEVICE_KEY.verify_key)


def test_unknown_content_type() -> None:
    data = sign(b"\xa0", signing_key=DEVICE_KEY, kid="d", content_type="application/json")
    with pytest.raises(MalformedMessage, match="unknown content type"):
        open_sealed(data, verify_key=DEVICE_KEY.verify_key)


def test_payload_of_another_type_is_malformed() -> None:
    with pytest.raises(MalformedMessage, match="missing keys"):
        decode_any(sample_batch().encode(), GradientBatch.CONTENT_TYPE)


def test_extra_or_missing_keys_are_malformed() -> None:
    wire = cbor2.loads(sample_batch().encode())
    with pytest.raises(MalformedMessage, match="unexpected keys"):
        ActivationBatch.decode(cbor2.dumps({**wire, "extra": 1}))
    del wire["seq"]
    with pytest.raises(MalformedMessage, match="missing keys"):
        ActivationBatch.decode(cbor2.dumps(wire))


def _replace(msg: ActivationBatch, **changes: object) -> ActivationBatch:
    return dataclasses.replace(msg, **changes)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("changes", "match"),
    [
        ({"session": "a/b"}, "session"),
        ({"device": "+"}, "device"),
        ({"device": ""}, "device"),
        ({"round": -1}, "round"),
        ({"seq": 1 << 63}, "seq"),
        ({"seq": True}, "seq"),
        ({"step": 1.0}, "step"),
        ({"model_hash": "ABC"}, "model_hash"),
        ({"model_hash": MODEL_HASH.upper()}, "model_hash"),
        ({"epsilon_spent": -0.1}, "epsilon_spent"),
        ({"epsilon_spent": float("inf")}, "epsilon_spent"),
        ({"labels": np.zeros(31, dtype=np.int64)}, "labels"),
        ({"labels": np.zeros(32, dtype=np.float32)}, "labels"),
        ({"labels": -np.ones(32, dtype=np.int64)}, "labels"),
        ({"labels": None}, "labels"),
        ({"activations": np.zeros((32, 64))}, "activations"),
        ({"activations": np.full((32, 64), np.inf, dtype=np.float32)}, "NaN"),
        ({"dp": {"clip_norm": 1.0}}, "dp"),
    ],
)
def test_activation_batch_validates_when_built(changes: dict[str, object], match: str) -> None:
    with pytest.raises(MalformedMessage, match=match):
        _replace(sample_batch(), **changes)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"clip_norm": 0.0}, "clip_norm"),
        ({"clip_norm": float("nan")}, "clip_norm"),
        ({"noise_multiplier": -1.0}, "noise_multiplier"),
        ({"label_mode": "randomized_response", "label_epsilon": None}, "label_epsilon"),
        ({"label_mode": "randomized_response", "label_epsilon": 0.0}, "label_epsilon"),
        ({"label_mode": "plain", "label_epsilon": 1.0}, "label_epsilon"),
        ({"label_mode": "secret"}, "label_mode"),
        ({"mechanism": ""}, "mechanism"),
        ({"mode": "sl-plain-sgd"}, "mode"),
        ({"mode": "none"}, "contradicts"),
        ({"mechanism": "none"}, "contradicts"),
    ],
)
def test_dp_params_validate(kwargs: dict[str, object], match: str) -> None:
    base: dict[str, object] = {
        "mode": "sl-frozen",
        "clip_norm": 1.0,
        "noise_multiplier": 1.0,
        "label_mode": "plain",
        "label_epsilon": None,
    }
    with pytest.raises(MalformedMessage, match=match):
        DpParams(**{**base, **kwargs})  # type: ignore[arg-type]


def test_labels_absent_when_label_mode_none() -> None:
    dp = DpParams(mode="sl-frozen", clip_norm=1.0, noise_multiplier=1.0, label_mode="none",
                  label_epsilon=None)
    msg = _replace(sample_batch(), dp=dp, labels=None)
    assert ActivationBatch.decode(msg.encode()).labels is None
    with pytest.raises(MalformedMessage, match="label_mode is 'none'"):
        _replace(msg, labels=np.zeros(32, dtype=np.int64))


def test_client_weights_and_gradient_validate() -> None:
    w = (np.ones((4, 4), dtype=np.float32),)
    base = {
        "session": "s", "round": 1, "device": "d", "seq": 1, "model_hash": MODEL_HASH,
        "weights": w, "weights_dp": "dp_sgd", "epsilon_spent": 1.0,
    }  # fmt: skip
    assert ClientWeights(num_samples=10, **base).weights[0] is w[0]  # type: ignore[arg-type]
    with pytest.raises(MalformedMessage, match="num_samples"):
        ClientWeights(num_samples=0, **base)  # type: ignore[arg-type]
    with pytest.raises(MalformedMessage, match="weights"):
        ClientWeights(num_samples=1, **{**base, "weights": ()})  # type: ignore[arg-type]
    with pytest.raises(MalformedMessage, match="weights_dp"):
        ClientWeights(num_samples=1, **{**base, "weights_dp": "none"})  # type: ignore[arg-type]
    with pytest.raises(MalformedMessage, match="loss"):
        GradientBatch(
            session="s", round=0, step=0, device="d", seq=0,
            grad=np.zeros((2, 2), dtype=np.float32), loss=float("nan"),
        )  # fmt: skip


def test_command_args_are_immutable_and_checked() -> None:
    cmd = Command(session="s", round=1, device=None, kind="start_round", args={"lr": 0.01})
    with pytest.raises(TypeError):
        cmd.args["lr"] = 1.0  # type: ignore[index]
    assert Command.decode(cmd.encode()) == cmd
    with pytest.raises(MalformedMessage, match="kind"):
        Command(session="s", round=1, device=None, kind="reboot")  # type: ignore[arg-type]
    for bad in ({"a b": 1}, {"x": True}, {"x": [1]}, {"x": float("nan")}, {"x": 1 << 64}):
        with pytest.raises(MalformedMessage, match="args"):
            Command(session="s", round=1, device="d", kind="sync", args=bad)  # type: ignore[arg-type]


def test_device_state_json_for_integrators() -> None:
    birth = DeviceState(
        org="acme", device="pump-7", online=True, bd_seq=3, model_hash=MODEL_HASH,
        detail={"firmware": "1.2.0", "free_mib": 112, "temp_c": 41.5},
    )  # fmt: skip
    text = birth.to_json()
    assert json.loads(text) == {
        "org": "acme", "device": "pump-7", "online": True, "bd_seq": 3,
        "model_hash": MODEL_HASH, "detail": {"firmware": "1.2.0", "free_mib": 112, "temp_c": 41.5},
    }  # fmt: skip
    assert DeviceState.from_json(text) == birth
    death = DeviceState(org="acme", device="pump-7", online=False, bd_seq=3)
    assert DeviceState.decode(death.encode()) == death
    for bad in (
        b'{"org": "acme"}',
        b"[1]",
        b"not json",
        b"\xff",
        text.replace(b"41.5", b"NaN"),
        text.replace(b'"bd_seq":3', b'"bd_seq":3,"bd_seq":4'),
        text.replace(b"true", b"1"),
    ):
        with pytest.raises(MalformedMessage):
            DeviceState.from_json(bad)


def test_prediction_json() -> None:
    probs = np.array([[0.1, 0.9], [0.75, 0.25]], dtype=np.float32)
    pred = Prediction(session="s", device="d", seq=4, probabilities=probs)
    obj = json.loads(pred.to_json())
    assert obj["predicted"] == [1, 0]
    assert obj["probabilities"] == probs.astype(np.float64).tolist()
    assert Prediction.from_json(pred.to_json()) == pred
    with pytest.raises(MalformedMessage, match=r"\[0, 1\]"):
        Prediction(session="s", device="d", seq=4, probabilities=probs * 2)
    for bad in (b'{"session":"s","device":"d","seq":1,"probabilities":[[1],[1,2]]}',
                b'{"session":"s","device":"d","seq":1,"probabilities":"x"}'):  # fmt: skip
        with pytest.raises(MalformedMessage):
            Prediction.from_json(bad)


def test_model_announcement_checks_hashes() -> None:
    artifact = b"TFL3 model bytes"
    weights = (np.ones((2, 3), dtype=np.float32), np.zeros(3, dtype=np.float32))
    proof = LedgerProof(
        chain_id="consortium", height=9, header=b"h", certificate=(("org-a", b"\x01" * 64),),
        tx=b"tx", leaf_index=0, tree_size=1, audit_path=(),
    )  # fmt: skip
    good = ModelAnnouncement(
        session="s", version=3, model_id="cnn1d", cut=2,
        client_sha256=hashlib.sha256(artifact).hexdigest(), client_artifact=artifact,
        weights=weights, weights_sha256=weights_digest(weights), proof=proof,
    )  # fmt: skip
    assert ModelAnnouncement.decode(good.encode()) == good
    with pytest.raises(MalformedMessage, match="client_sha256"):
        dataclasses.replace(good, client_artifact=artifact + b"!")
    with pytest.raises(MalformedMessage, match="weights_sha256"):
        dataclasses.replace(good, weights=(weights[0] * 2, weights[1]))
    assert weights_digest(weights) != weights_digest(tuple(w.astype(np.float16) for w in weights))


@pytest.mark.parametrize(
    ("changes", "match"),
    [
        ({"leaf_index": 1}, "leaf_index"),
        ({"tree_size": 0}, "tree_size"),
        ({"certificate": ()}, "certificate"),
        ({"certificate": (("a", b"x" * 63),)}, "signature"),
        ({"certificate": (("a", b"x" * 64), ("a", b"y" * 64))}, "twice"),
        ({"audit_path": (b"x" * 31,)}, "audit_path"),
    ],
)
def test_ledger_proof_validates(changes: dict[str, object], match: str) -> None:
    base: dict[str, object] = {
        "chain_id": "c", "height": 1, "header": b"h", "certificate": (("a", b"x" * 64),),
        "tx": b"t", "leaf_index": 0, "tree_size": 1, "audit_path": (),
    }  # fmt: skip
    with pytest.raises(MalformedMessage, match=match):
        LedgerProof(**{**base, **changes})  # type: ignore[arg-type]


def test_endorsement_carries_the_device_bytes_unchanged() -> None:
    inner = seal(sample_batch(), signing_key=DEVICE_KEY, kid="dev-01")
    outer = seal(
        Endorsement(org="acme", gateway="gw-acme", seq=11, envelope=inner),
        signing_key=SERVER_KEY,
        kid="gw-acme",
    )
    got = open_sealed(outer, verify_key=SERVER_KEY.verify_key)
    assert isinstance(got, Endorsement)
    assert got.envelope == inner
    assert got.inner().kid == "dev-01"
    assert open_sealed(got.envelope, verify_key=DEVICE_KEY.verify_key) == sample_batch()
    with pytest.raises(MalformedMessage):
        Endorsement(org="acme", gateway="gw", seq=1, envelope=b"not cose")
    assert peek(outer).kid == "gw-acme"


def test_seal_refuses_foreign_objects() -> None:
    with pytest.raises(MalformedMessage):
        seal(object(), signing_key=DEVICE_KEY, kid="d")  # type: ignore[arg-type]


def test_endorsement_of_a_maximal_device_envelope_fits() -> None:
    from protocol.envelope import MAX_ENVELOPE_BYTES, check_signature

    filler = b"\x00" * (MAX_ENVELOPE_BYTES - 200)
    inner = sign(filler, signing_key=DEVICE_KEY, kid="dev-01", content_type="application/x")
    assert len(inner) <= MAX_ENVELOPE_BYTES
    outer = seal(
        Endorsement(org="acme", gateway="gw-acme", seq=1, envelope=inner),
        signing_key=SERVER_KEY,
        kid="gw-acme",
    )
    assert len(outer) > MAX_ENVELOPE_BYTES
    got = open_sealed(outer, verify_key=SERVER_KEY.verify_key)
    assert isinstance(got, Endorsement)
    check_signature(got.inner(), verify_key=DEVICE_KEY.verify_key, expected_kid="dev-01")
    # the extra allowance is for endorsements only
    big = sign(b"\x00" * MAX_ENVELOPE_BYTES, signing_key=DEVICE_KEY, kid="d",
               content_type=Command.CONTENT_TYPE, max_size=2 * MAX_ENVELOPE_BYTES)  # fmt: skip
    with pytest.raises(LimitExceeded):
        open_sealed(big, verify_key=DEVICE_KEY.verify_key)


@ROUND_TRIP
@given(s.device_states)
def test_device_state_json_round_trip(state: DeviceState) -> None:
    assert DeviceState.from_json(state.to_json()) == state


@ROUND_TRIP
@given(s.predictions())
def test_prediction_json_round_trip(pred: Prediction) -> None:
    back = Prediction.from_json(pred.to_json())
    assert back == dataclasses.replace(pred, probabilities=pred.probabilities.astype(np.float32))
