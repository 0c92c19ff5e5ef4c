"""Device side of ``fl-dpsgd``: record-level DP-SGD on the whole model, one FedAvg round (pure).

Theory of operation
-------------------
In the federated tier the device holds the whole model (a
:class:`models.full_runtime.FullRuntime`). It never releases activations or
labels; the ONLY thing that leaves it in a round is the weight update
``new - global``. :func:`dp_fedavg_round` makes that update differentially
private for every record the device holds, by DP-SGD with Poisson sampling
(Abadi et al. 2016, Algorithm 1; the sampled-Gaussian analysis of Mironov,
Talwar & Zhang 2019):

for each of ``local_steps`` steps:

1. Poisson sample: every record is included independently with probability
   ``q`` (``sampling_prob``), drawn from the injected generator (the agent
   passes :func:`agent.privacy.mechanisms.secure_rng`). The realised batch
   size is random and is never released.
2. Per-example gradients of each example's own cross-entropy
   (``FullRuntime.per_example_grads``, chunked to the artifact's batch).
3. Clip each example's gradient, concatenated over all weight tensors, to L2
   norm ``C`` (:func:`agent.privacy.mechanisms.clip_rows`), and sum.
4. Add ``N(0, (z*C)^2)`` to every coordinate
   (:func:`agent.privacy.mechanisms.gaussian_noise`; ``z`` = ``noise_multiplier``),
   ALSO when the sample is empty.
5. Divide by the EXPECTED batch size ``q*n`` (not the realised one, which
   depends on the data and would change the sensitivity): the noisy mean has
   sensitivity ``C/(q n)`` per record, a fixed scale of the sum.
6. ``w -= lr * noisy_mean`` (``FullRuntime.apply``).

Everything after step 4 is post-processing, so the released update costs
exactly ``local_steps`` sampled Gaussian mechanisms, charged to EVERY record
(each record may be sampled at any step): one
:class:`PoissonSampledGaussian` ``(z, q, count=local_steps)`` event per round.
It is accounted with Google's ``dp_accounting`` PLD as
``SelfComposedDpEvent(PoissonSampledDpEvent(q, GaussianDpEvent(z)), count)``
under ``NeighboringRelation.REPLACE_ONE`` for adjacency ``"replace"`` (a record
takes any other value: dp_accounting then compares a contribution ``+C`` with
``-C``, i.e. sensitivity 2C, the project convention) and ``ADD_OR_REMOVE_ONE``
for ``"zero_out"``. :func:`epsilon_for_events` and
:func:`noise_multiplier_for` do exactly that.

Labels never leave the device in this mode (they enter only through the
gradients, which the guarantee covers), so the epsilon covers ``x`` AND
``y`` of every record without randomized response.

What the guarantee assumes: the global weights the round starts from do not
depend on this device's records except through earlier accounted releases
(true for FedAvg of DP updates: post-processing); the update is released
once; the sampling randomness and the noise are secret
(:mod:`agent.privacy.mechanisms` states the generator's limits).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

import numpy as np
import numpy.typing as npt

from agent.privacy.events import PoissonSampledGaussian
from agent.privacy.mechanisms import gaussian_noise
from models.clip import clip_rows
from protocol.errors import PrivacyError

__all__ = [
    "DpFedAvgParams",
    "FullModelRuntime",
    "PoissonSampledGaussian",
    "RoundResult",
    "dp_accounting_event",
    "dp_fedavg_round",
    "epsilon_for_events",
    "noise_multiplier_for",
    "poisson_sample",
]

Adjacency = Literal["replace", "zero_out"]


class FullModelRuntime(Protocol):
    """What the mechanism needs from :class:`models.full_runtime.FullRuntime`."""

    @property
    def max_batch(self) -> int: ...

    def per_example_grads(self, x: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, ...]: ...

    def apply(self, grads: Sequence[np.ndarray], *, lr: float) -> None: ...

    def get_weights(self) -> tuple[np.ndarray, ...]: ...

    def set_weights(self, ws: Sequence[np.ndarray]) -> None: ...


@dataclass(frozen=True, slots=True, kw_only=True)
class DpFedAvgParams:
    """One round's DP-SGD settings. ``noise_multiplier == 0`` means NO privacy (benchmarks)."""

    sampling_prob: float
    noise_multiplier: float
    clip_norm: float
    local_steps: int
    lr: float

    def __post_init__(self) -> None:
        problems = []
        if not (math.isfinite(self.sampling_prob) and 0.0 < self.sampling_prob <= 1.0):
            problems.append(f"sampling_prob must be in (0, 1], got {self.sampling_prob!r}")
        if not (math.isfinite(self.noise_multiplier) and self.noise_multiplier >= 0):
            problems.append(f"noise_multiplier must be finite and >= 0, "
                            f"got {self.noise_multiplier!r}")
        if not (math.isfinite(self.clip_norm) and self.clip_norm > 0):
            problems.append(f"clip_norm must be finite and > 0, got {self.clip_norm!r}")
        if isinstance(self.local_steps, bool) or not isinstance(self.local_steps, int) \
                or self.local_steps < 1:
            problems.append(f"local_steps must be an int >= 1, got {self.local_steps!r}")
        if not (math.isfinite(self.lr) and self.lr >= 0):
            problems.append(f"lr must be finite and >= 0, got {self.lr!r}")
        if problems:
            raise PrivacyError("; ".join(problems))


@dataclass(frozen=True, slots=True, kw_only=True)
class RoundResult:
    """What a round produced. Only ``update`` may leave the device; ``sampled`` is a local
    diagnostic (realised batch sizes depend on the data's size, not on its values, but are
    not covered by the accounting and must not be released)."""

    update: tuple[npt.NDArray[np.float32], ...]  # new weights - global weights
    steps: int
    events: tuple[PoissonSampledGaussian, ...]
    sampled: int


def poisson_sample(n: int, q: float, rng: np.random.Generator) -> npt.NDArray[np.intp]:
    """Indices of ``0..n-1`` included independently with probability ``q`` (sorted)."""
    if n < 0 or not 0.0 < q <= 1.0:
        raise PrivacyError(f"need n >= 0 and 0 < q <= 1, got n={n}, q={q}")
    return np.flatnonzero(rng.random(n) < q)


def _clipped_sum(runtime: FullModelRuntime, x: np.ndarray, y: np.ndarray,
                 idx: npt.NDArray[np.intp], shapes: Sequence[tuple[int, ...]],
                 clip_norm: float) -> npt.NDArray[np.float64]:
    """Sum over ``idx`` of each example's gradient clipped (all tensors together) to C."""
    sizes = [int(np.prod(s, dtype=np.int64)) for s in shapes]
    total = np.zeros(sum(sizes), np.float64)
    chunk = runtime.max_batch
    for start in range(0, len(idx), chunk):
        part = idx[start:start + chunk]
        grads = runtime.per_example_grads(x[part], y[part])
        flat = np.concatenate([np.asarray(g, np.float64).reshape(len(part), -1) for g in grads],
                              axis=1)
        total += clip_rows(flat, clip_norm=clip_norm).sum(axis=0)
    return total


def _split(flat: npt.NDArray[np.float64],
           shapes: Sequence[tuple[int, ...]]) -> list[npt.NDArray[np.float32]]:
    out, start = [], 0
    for s in shapes:
        n = int(np.prod(s, dtype=np.int64))
        out.append(flat[start:start + n].reshape(s).astype(np.float32))
        start += n
    return out


def _check_records(ids: Sequence[object], x: np.ndarray, y: np.ndarray) -> None:
    n = len(ids)
    if n == 0:
        raise PrivacyError("a DP-SGD round needs at least one record")
    if x.ndim < 2 or x.shape[0] != n or y.shape != (n,):
        raise PrivacyError(f"ids, x and y must have one row per record: {n} ids, "
                           f"x {x.shape}, y {y.shape}")
    if len(set(ids)) != n:
        raise PrivacyError("record ids must be unique (a duplicated record doubles its "
                           "sensitivity)")
    if y.dtype.kind not in "iu":
        raise PrivacyError(f"labels must be integers, got {y.dtype}")
    if x.dtype.kind != "f" or not np.all(np.isfinite(x)):
        raise PrivacyError("x must be finite floating point")


def dp_fedavg_round(runtime: FullModelRuntime, *, ids: Sequence[object], x: np.ndarray,
                    y: np.ndarray, global_weights: Sequence[np.ndarray], params: DpFedAvgParams,
                    rng: np.random.Generator, non_private: bool = False) -> RoundResult:
    """Run one round of local DP-SGD from ``global_weights``; see the module docstring.

    ``x`` are normalised windows ``(n, C, L)``, ``y`` integer labels, ``ids`` the records'
    ids (unique). Leaves the runtime holding the new local weights. ``noise_multiplier == 0``
    is refused unless ``non_private=True`` (benchmarks only: then no event is returned and
    nothing is protected).
    """
    xa = np.asarray(x)
    ya = np.asarray(y)
    _check_records(ids, xa, ya)
    z = params.noise_multiplier
    if z == 0 and not non_private:
        raise PrivacyError("noise_multiplier 0 releases the update without privacy; "
                           "pass non_private=True to do so deliberately")
    if z > 0 and non_private:
        raise PrivacyError("non_private=True with noise: say which one you mean")
    runtime.set_weights(list(global_weights))
    start = runtime.get_weights()
    shapes = [tuple(w.shape) for w in start]
    n, q, c = len(ids), params.sampling_prob, params.clip_norm
    expected = q * n
    sampled = 0
    for _ in range(params.local_steps):
        idx = poisson_sample(n, q, rng)
        sampled += len(idx)
        total = _clipped_sum(runtime, xa, ya, idx, shapes, c)
        if z > 0:
            total = total + gaussian_noise(total.shape, sigma=z * c, rng=rng)
        runtime.apply(_split(total / expected, shapes), lr=params.lr)
    end = runtime.get_weights()
    update = tuple((b.astype(np.float64) - a.astype(np.float64)).astype(np.float32)
                   for a, b in zip(start, end, strict=True))
    events: tuple[PoissonSampledGaussian, ...] = () if z == 0 else (
        PoissonSampledGaussian(noise_multiplier=z, sampling_prob=q, count=params.local_steps),)
    return RoundResult(update=update, steps=params.local_steps, events=events, sampled=sampled)


# ---- accounting with dp_accounting (PLD) ----

def dp_accounting_event(event: PoissonSampledGaussian) -> object:
    """The ``dp_accounting`` event for ``event`` (see module docstring)."""
    import dp_accounting

    return dp_accounting.SelfComposedDpEvent(
        dp_accounting.PoissonSampledDpEvent(
            event.sampling_prob, dp_accounting.GaussianDpEvent(event.noise_multiplier)),
        event.count)


def _relation(adjacency: Adjacency) -> object:
    import dp_accounting

    if adjacency == "replace":
        return dp_accounting.NeighboringRelation.REPLACE_ONE
    if adjacency == "zero_out":
        return dp_accounting.NeighboringRelation.ADD_OR_REMOVE_ONE
    raise PrivacyError(f"adjacency must be 'replace' or 'zero_out', got {adjacency!r}")


def epsilon_for_events(events: Sequence[PoissonSampledGaussian], *, delta: float,
                       adjacency: Adjacency = "replace",
                       value_discretization_interval: float = 1e-4) -> float:
    """Per-record epsilon of all ``events`` composed, by dp_accounting's PLD (pessimistic)."""
    from dp_accounting.pld import PLDAccountant

    if not 0 < delta < 1:
        raise PrivacyError(f"delta must be in (0, 1), got {delta!r}")
    acc = PLDAccountant(neighboring_relation=_relation(adjacency),
                        value_discretization_interval=value_discretization_interval)
    for e in events:
        acc.compose(dp_accounting_event(e))
    return float(acc.get_epsilon(delta))


def noise_multiplier_for(*, sampling_prob: float, steps: int, epsilon: float, delta: float,
                         adjacency: Adjacency = "replace", rel_tol: float = 1e-3,
                         value_discretization_interval: float = 1e-4) -> float:
    """Smallest z (to ``rel_tol``) whose ``steps`` sampled-Gaussian steps cost <= ``epsilon``.

    Bisection on :func:`epsilon_for_events`; epsilon is decreasing in z. The returned z
    always satisfies the budget (the upper end of the final bracket).
    """
    if not (math.isfinite(epsilon) and epsilon > 0):
        raise PrivacyError(f"epsilon must be finite and > 0, got {epsilon!r}")
    if not 0 < rel_tol < 1:
        raise PrivacyError("rel_tol must be in (0, 1)")

    def eps(z: float) -> float:
        ev = PoissonSampledGaussian(noise_multiplier=z, sampling_prob=sampling_prob,
                                    count=steps)
        return epsilon_for_events([ev], delta=delta, adjacency=adjacency,
                                  value_discretization_interval=value_discretization_interval)

    lo, hi = 0.0, 1.0
    while eps(hi) > epsilon:
        lo, hi = hi, hi * 2
        if hi > 1e4:
            raise PrivacyError("no noise multiplier below 1e4 fits this budget")
    if lo == 0.0:
        lo = hi / 2
        while lo > 1e-3 and eps(lo) <= epsilon:
            hi, lo = lo, lo / 2
    while (hi - lo) / hi > rel_tol:
        mid = (lo + hi) / 2
        if eps(mid) > epsilon:
            lo = mid
        else:
            hi = mid
    return hi
