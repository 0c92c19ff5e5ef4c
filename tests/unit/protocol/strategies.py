"""Hypothesis strategies for every protocol message type."""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from protocol.control import Command, DeviceState, Endorsement, Prediction
from protocol.envelope import sign
from protocol.ledger_msgs import LedgerProof, ModelAnnouncement, weights_digest
from protocol.messages import Message
from protocol.training import ActivationBatch, ClientWeights, DpParams, GradientBatch
from tests.unit.protocol.keys_for_tests import DEVICE_KEY

ids = st.from_regex(r"\A[A-Za-z0-9_-][A-Za-z0-9_.-]{0,63}\Z")
uints = st.integers(min_value=0, max_value=(1 << 63) - 1)
finite = st.floats(allow_nan=False, allow_infinity=False)
nonneg = st.floats(min_value=0.0, allow_nan=False, allow_infinity=False)
positive = st.floats(min_value=1e-300, allow_nan=False, allow_infinity=False)
digests = st.binary(min_size=1, max_size=8).map(lambda b: hashlib.sha256(b).hexdigest())
scalars = st.one_of(
    st.text(max_size=20),
    st.integers(min_value=-(1 << 63), max_value=(1 << 63) - 1),
    finite,
)
scalar_maps = st.dictionaries(ids, scalars, max_size=5)


def float_arrays(min_dims: int = 1, max_dims: int = 3, first: int | None = None) -> Any:
    @st.composite
    def build(draw: st.DrawFn) -> np.ndarray:
        dtype = draw(st.sampled_from(["float16", "float32"]))
        shape = draw(hnp.array_shapes(min_dims=min_dims, max_dims=max_dims, max_side=6))
        if first is not None:
            shape = (first, *shape[1:])
        width = 16 if dtype == "float16" else 32
        elements = st.floats(width=width, allow_nan=False, allow_infinity=False)
        return draw(hnp.arrays(np.dtype(dtype), shape, elements=elements))

    return build()


@st.composite
def dp_params(draw: st.DrawFn) -> DpParams:
    mode = draw(st.sampled_from(["plain", "randomized_response", "none"]))
    return DpParams(
        mode="sl-frozen",
        clip_norm=draw(positive),
        noise_multiplier=draw(nonneg),
        label_mode=mode,
        label_epsilon=draw(positive) if mode == "randomized_response" else None,
        mechanism=draw(st.sampled_from(["gaussian", "laplace"])),
    )


@st.composite
def activation_batches(draw: st.DrawFn) -> ActivationBatch:
    dp = draw(dp_params())
    n = draw(st.integers(1, 6))
    labels = None
    if dp.label_mode != "none":
        ldt = draw(st.sampled_from(["int32", "int64"]))
        labels = draw(hnp.arrays(np.dtype(ldt), (n,), elements=st.integers(0, 1000)))
    return ActivationBatch(
        session=draw(ids),
        round=draw(uints),
        step=draw(uints),
        device=draw(ids),
        seq=draw(uints),
        model_hash=draw(digests),
        dp=dp,
        activations=draw(float_arrays(min_dims=2, first=n)),
        labels=labels,
        epsilon_spent=draw(nonneg),
    )


@st.composite
def gradient_batches(draw: st.DrawFn) -> GradientBatch:
    return GradientBatch(
        session=draw(ids),
        round=draw(uints),
        step=draw(uints),
        device=draw(ids),
        seq=draw(uints),
        grad=draw(float_arrays()),
        loss=draw(st.none() | finite),
    )


weight_tuples = st.lists(float_arrays(), min_size=1, max_size=3).map(tuple)


@st.composite
def client_weights(draw: st.DrawFn) -> ClientWeights:
    return ClientWeights(
        session=draw(ids),
        round=draw(uints),
        device=draw(ids),
        seq=draw(uints),
        model_hash=draw(digests),
        num_samples=draw(st.integers(1, 1 << 40)),
        weights=draw(weight_tuples),
        weights_dp=draw(st.sampled_from(["dp_sgd", "unprotected"])),
        epsilon_spent=draw(nonneg),
    )


commands = st.builds(
    Command,
    session=ids,
    round=uints,
    device=st.none() | ids,
    kind=st.sampled_from(
        ["start_round", "stop_round", "sync", "upload_weights", "load_model", "stop"]
    ),
    args=scalar_maps,
    seq=uints,
)

device_states = st.builds(
    DeviceState,
    org=ids,
    device=ids,
    online=st.booleans(),
    bd_seq=uints,
    model_hash=st.none() | digests,
    detail=scalar_maps,
)


@st.composite
def predictions(draw: st.DrawFn) -> Prediction:
    dtype = draw(st.sampled_from(["float16", "float32"]))
    shape = draw(hnp.array_shapes(min_dims=1, max_dims=2, max_side=6))
    width = 16 if dtype == "float16" else 32
    probs = draw(hnp.arrays(np.dtype(dtype), shape, elements=st.floats(0, 1, width=width)))
    return Prediction(session=draw(ids), device=draw(ids), seq=draw(uints), probabilities=probs)


@st.composite
def ledger_proofs(draw: st.DrawFn) -> LedgerProof:
    tree_size = draw(st.integers(1, 1 << 40))
    validators = draw(st.lists(ids, min_size=1, max_size=4, unique=True))
    return LedgerProof(
        chain_id=draw(ids),
        height=draw(uints),
        header=draw(st.binary(max_size=64)),
        certificate=tuple((v, draw(st.binary(min_size=64, max_size=64))) for v in validators),
        tx=draw(st.binary(max_size=64)),
        leaf_index=draw(st.integers(0, tree_size - 1)),
        tree_size=tree_size,
        audit_path=tuple(draw(st.lists(st.binary(min_size=32, max_size=32), max_size=5))),
    )


@st.composite
def model_announcements(draw: st.DrawFn) -> ModelAnnouncement:
    artifact = draw(st.none() | st.binary(max_size=64))
    weights = draw(st.none() | weight_tuples)
    return ModelAnnouncement(
        session=draw(ids),
        version=draw(uints),
        model_id=draw(ids),
        cut=draw(st.integers(0, 16)),
        client_sha256=(
            hashlib.sha256(artifact).hexdigest() if artifact is not None else draw(digests)
        ),
        client_artifact=artifact,
        weights=weights,
        weights_sha256=weights_digest(weights) if weights is not None else draw(digests),
        proof=draw(st.none() | ledger_proofs()),
    )


@st.composite
def endorsements(draw: st.DrawFn) -> Endorsement:
    inner = sign(
        draw(st.binary(max_size=32)),
        signing_key=DEVICE_KEY,
        kid=draw(ids),
        content_type="application/vnd.splitfed.activations+cbor",
    )
    return Endorsement(org=draw(ids), gateway=draw(ids), seq=draw(uints), envelope=inner)


def any_message() -> st.SearchStrategy[Message]:
    return st.one_of(
        activation_batches(),
        gradient_batches(),
        client_weights(),
        commands,
        device_states,
        predictions(),
        ledger_proofs(),
        model_announcements(),
        endorsements(),
    )
