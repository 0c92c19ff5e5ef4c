"""Signed device messages for gateway tests (real envelopes, real keys)."""

from __future__ import annotations

import hashlib

import cbor2
import nacl.signing
import numpy as np

from gateway.policy import ModelSpec, SessionPolicy
from protocol import envelope, topics
from protocol.keys import public_key_hex
from protocol.messages import ActivationBatch, ClientWeights, DpParams, seal

ORG = "acme"
SESSION = "s1"
MODEL = hashlib.sha256(b"client.tflite").hexdigest()
ACT_SHAPE = (4, 8)
W_SHAPES = ((3, 4), (4,))


def policy(**kw: object) -> SessionPolicy:
    args: dict[str, object] = dict(
        session=SESSION,
        models={
            MODEL: ModelSpec(
                activation_shape=ACT_SHAPE,
                num_classes=5,
                max_batch=16,
                client_weight_shapes=W_SHAPES,
            )
        },
        min_noise_multiplier=1.0,
        max_epsilon=10.0,
        max_clip_norm=2.0,
        privacy_mode="sl-dpsgd",  # these sessions average client halves
    )
    args.update(kw)
    return SessionPolicy(**args)  # type: ignore[arg-type]


def dp(noise: float = 1.1) -> DpParams:
    return DpParams(
        mode="sl-dpsgd", clip_norm=1.0, noise_multiplier=noise, label_mode="plain",
        label_epsilon=None)


def activation(
    device: str,
    seq: int,
    *,
    key: nacl.signing.SigningKey,
    kid: str | None = None,
    round_no: int = 0,
    noise: float = 1.1,
    batch: int = 8,
    shape: tuple[int, ...] = ACT_SHAPE,
    model: str = MODEL,
    session: str = SESSION,
    eps: float = 0.5,
) -> bytes:
    rng = np.random.default_rng(seq)
    msg = ActivationBatch(
        session=session,
        round=round_no,
        step=seq,
        device=device,
        seq=seq,
        model_hash=model,
        dp=dp(noise),
        activations=rng.normal(size=(batch, *shape)).astype(np.float32),
        labels=rng.integers(0, 5, batch).astype(np.int64),
        epsilon_spent=eps,
    )
    return seal(msg, signing_key=key, kid=kid or device)


def weights(
    device: str,
    seq: int,
    *,
    key: nacl.signing.SigningKey,
    value: float = 1.0,
    num_samples: int = 8,
    round_no: int = 0,
    eps: float = 0.6,
) -> bytes:
    ws = tuple(np.full(s, value, np.float32) for s in W_SHAPES)
    msg = ClientWeights(
        session=SESSION,
        round=round_no,
        device=device,
        seq=seq,
        model_hash=MODEL,
        num_samples=num_samples,
        weights=ws,
        weights_dp="unprotected",
        epsilon_spent=eps,
    )
    return seal(msg, signing_key=key, kid=device)


def with_nan(device: str, seq: int, *, key: nacl.signing.SigningKey) -> bytes:
    """A correctly signed batch whose activation tensor holds a NaN."""
    env = envelope.peek(activation(device, seq, key=key))
    m = cbor2.loads(env.payload)
    arr = np.frombuffer(m["activations"]["data"], dtype=m["activations"]["dtype"]).copy()
    arr[3] = np.nan
    m["activations"]["data"] = arr.tobytes()
    return envelope.sign(
        cbor2.dumps(m, canonical=True), signing_key=key, kid=device, content_type=env.content_type
    )


def up(device: str) -> str:
    return topics.up(ORG, device)


def pubhex(key: nacl.signing.SigningKey) -> str:
    return public_key_hex(key)
