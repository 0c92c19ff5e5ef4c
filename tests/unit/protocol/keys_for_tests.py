"""Fixed test keys and a sample message (deterministic seeds: never use outside tests)."""

from __future__ import annotations

import hashlib

import nacl.signing
import numpy as np

from protocol.training import ActivationBatch, DpParams

DEVICE_KEY = nacl.signing.SigningKey(hashlib.sha256(b"splitfed test device").digest())
SERVER_KEY = nacl.signing.SigningKey(hashlib.sha256(b"splitfed test server").digest())
OTHER_KEY = nacl.signing.SigningKey(hashlib.sha256(b"splitfed test attacker").digest())
MODEL_HASH = hashlib.sha256(b"client.tflite").hexdigest()


def sample_batch(*, rows: int = 32, cols: int = 64, seq: int = 1) -> ActivationBatch:
    """A 32x64 float16 activation batch like an agent sends after the cut layer."""
    rng = np.random.default_rng(seq)
    return ActivationBatch(
        session="sess-1",
        round=2,
        step=5,
        device="dev-01",
        seq=seq,
        model_hash=MODEL_HASH,
        dp=DpParams(
            mode="sl-frozen",
            clip_norm=1.0, noise_multiplier=1.1, label_mode="plain", label_epsilon=None
        ),
        activations=rng.standard_normal((rows, cols)).astype(np.float16),
        labels=rng.integers(0, 10, size=rows).astype(np.int64),
        epsilon_spent=0.75,
    )
