"""Local differential-privacy mechanisms (pure functions, no I/O).

Everything here takes arrays and a ``numpy.random.Generator`` and returns
arrays; nothing reads clocks, files or the environment except
:func:`secure_rng`, which reads 128 bits from the OS CSPRNG once.

Mechanisms and their guarantees (each is the textbook mechanism; the
accounting of what they cost lives in :mod:`agent.privacy.accountant`):

* :func:`clip_rows` + :func:`gaussian_noise` = the Gaussian mechanism on one
  record's activation row: after clipping, one row has L2 sensitivity
  ``clip_norm`` (replace-one-record adjacency: two rows differ by at most
  ``2*clip_norm``; we follow Abadi et al. 2016, sec. 3.1, and the dp-accounting
  convention, where ``noise_multiplier`` is sigma / C for add/remove-one
  adjacency of a clipped contribution).  :func:`privatize_activations` is the
  two together.  The analytic guarantee for given (epsilon, delta) is Balle &
  Wang 2018, "Improving the Gaussian mechanism for differential privacy",
  Theorem 8.
* :func:`randomized_response` = k-ary randomized response (Warner 1965;
  Kairouz, Oh & Viswanath 2016, "Extremal mechanisms", sec. 4): keep the true
  label with probability e^eps / (e^eps + k - 1), else report one of the k-1
  others uniformly.  Pure epsilon-DP for the label.
* :func:`dp_sgd_aggregate` = one DP-SGD step (Abadi et al. 2016, Algorithm 1):
  clip each example's gradient, over the concatenation of all its tensors, to
  ``clip_norm``; sum; add N(0, (sigma*C)^2); divide by the batch size.

Randomness, stated exactly (:func:`secure_rng`):
  The generator is numpy's Philox-4x64-10 (Salmon et al. 2011) keyed with 128
  bits from ``secrets`` (the OS CSPRNG).  Philox is a counter-based generator
  built from a weakened block-cipher round structure; it is NOT a vetted
  cryptographic generator, so we claim only: the seed is unpredictable, and no
  practical attack is known that recovers a Philox key from its outputs.
  Anyone who reads the process memory learns the key and can predict (and
  subtract) the noise.  A seeded generator is used only when a test injects one.

Not mitigated: floating-point attacks on sampled noise (Mironov 2012, "On
significance of the least significant bits for differential privacy", shown
for Laplace; analogous attacks on textbook Gaussian sampling exist).  Noise is
sampled in float64 with numpy's ziggurat and added in float64; the result is
then cast to the caller's dtype (float32/float16 on the wire), which is
post-processing and does not weaken the guarantee but also does not repair the
floating-point leakage.
"""

from __future__ import annotations

import math
import secrets
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from models.clip import clip_rows  # shared with the evaluators
from protocol.errors import PrivacyError

FloatArray = npt.NDArray[np.floating]


def secure_rng() -> np.random.Generator:
    """A Philox generator keyed with 128 bits from the OS CSPRNG (see module docstring)."""
    return np.random.Generator(np.random.Philox(key=secrets.randbits(128)))


def _check_positive(name: str, value: float) -> None:
    if not (isinstance(value, int | float) and math.isfinite(value) and value > 0):
        raise PrivacyError(f"{name} must be a finite number > 0, got {value!r}")


def gaussian_noise(
    shape: Sequence[int] | int, *, sigma: float, rng: np.random.Generator
) -> FloatArray:
    """Independent N(0, sigma^2) noise of ``shape`` (float64)."""
    _check_positive("sigma", sigma)
    out: FloatArray = rng.normal(0.0, sigma, size=shape)
    return out


def privatize_activations(
    a: npt.ArrayLike, *, clip_norm: float, noise_multiplier: float, rng: np.random.Generator
) -> FloatArray:
    """Gaussian mechanism per record: ``clip_rows(a, C) + N(0, (noise_multiplier*C)^2)``.

    Returns float64; cast to the wire dtype afterwards (post-processing).
    """
    _check_positive("noise_multiplier", noise_multiplier)
    clipped = clip_rows(a, clip_norm=clip_norm)
    return clipped + gaussian_noise(clipped.shape, sigma=noise_multiplier * clip_norm, rng=rng)


def rr_keep_probability(*, k: int, epsilon: float) -> float:
    """Probability that k-ary randomized response reports the true label."""
    if k < 2:
        raise PrivacyError(f"randomized response needs k >= 2 classes, got {k}")
    _check_positive("epsilon", epsilon)
    return 1.0 / (1.0 + (k - 1) * math.exp(-epsilon))


def randomized_response(
    labels: npt.ArrayLike, *, k: int, epsilon: float, rng: np.random.Generator
) -> npt.NDArray[np.int64]:
    """k-ary randomized response on integer labels in ``[0, k)`` (epsilon-DP per label)."""
    keep_p = rr_keep_probability(k=k, epsilon=epsilon)
    y = np.asarray(labels)
    if y.size and (not np.issubdtype(y.dtype, np.integer) or y.min() < 0 or y.max() >= k):
        raise PrivacyError(f"labels must be integers in [0, {k})")
    y = y.astype(np.int64)
    keep = rng.random(y.shape) < keep_p
    # uniform over the k-1 other labels: draw in [0, k-1) and skip the true one
    other = rng.integers(0, k - 1, size=y.shape)
    other = other + (other >= y)
    return np.where(keep, y, other)


def dp_sgd_aggregate(
    per_sample_grads: Sequence[npt.ArrayLike],
    *,
    clip_norm: float,
    noise_multiplier: float,
    rng: np.random.Generator,
) -> tuple[FloatArray, ...]:
    """One DP-SGD aggregation (Abadi et al. 2016, Alg. 1, lines "clip", "add noise").

    ``per_sample_grads[j]`` has shape ``(batch, *param_shape_j)``.  Each example's
    gradient is clipped over the concatenation of all its tensors, the clipped
    gradients are summed, N(0, (noise_multiplier*clip_norm)^2) is added to every
    coordinate of the sum, and the result is divided by the batch size.
    """
    _check_positive("noise_multiplier", noise_multiplier)
    _check_positive("clip_norm", clip_norm)
    grads = [np.asarray(g, dtype=np.float64) for g in per_sample_grads]
    if not grads:
        raise PrivacyError("dp_sgd_aggregate needs at least one tensor")
    batch = grads[0].shape[0] if grads[0].ndim else 0
    if batch == 0 or any(g.ndim < 1 or g.shape[0] != batch for g in grads):
        raise PrivacyError("every per-sample gradient tensor needs the same non-empty batch axis")
    flat = np.concatenate([g.reshape(batch, -1) for g in grads], axis=1)
    clipped = clip_rows(flat, clip_norm=clip_norm)
    total = clipped.sum(axis=0)
    noisy = (total + gaussian_noise(total.shape, sigma=noise_multiplier * clip_norm, rng=rng))
    noisy /= batch
    out: list[FloatArray] = []
    start = 0
    for g in grads:
        n = int(np.prod(g.shape[1:], dtype=np.int64))
        out.append(noisy[start:start + n].reshape(g.shape[1:]))
        start += n
    return tuple(out)
