"""fl-dpsgd device mechanism: sampling, clip/noise/scale math, events, accounting (pure).

The runtime here is a fake whose per-example gradients are fixed per record, so the
whole round can be recomputed with numpy from the same seed, independently of the
module's own helpers.
"""

from __future__ import annotations

from collections.abc import Sequence

import dp_accounting
import numpy as np
import pytest
from dp_accounting.pld import PLDAccountant
from dp_accounting.rdp import RdpAccountant

from agent.privacy.dpfedavg import (
    DpFedAvgParams,
    PoissonSampledGaussian,
    dp_fedavg_round,
    epsilon_for_events,
    noise_multiplier_for,
    poisson_sample,
)
from protocol.errors import PrivacyError

SHAPES = ((3, 2), (2,))


class FakeRuntime:
    """Weights W (3, 2) and b (2,); record i's gradient is a fixed table row (x[i, 0, 0] = i)."""

    def __init__(self, table: np.ndarray, max_batch: int = 4) -> None:
        self.table = table  # (n, 8)
        self._max_batch = max_batch
        self.w = [np.zeros(s, np.float32) for s in SHAPES]
        self.calls: list[int] = []

    @property
    def max_batch(self) -> int:
        return self._max_batch

    def per_example_grads(self, x: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, ...]:
        assert 1 <= len(x) <= self._max_batch
        self.calls.append(len(x))
        rows = self.table[x[:, 0, 0].astype(int)]
        return rows[:, :6].reshape(-1, 3, 2), rows[:, 6:]

    def apply(self, grads: Sequence[np.ndarray], *, lr: float) -> None:
        self.w = [w - np.float32(lr) * g.astype(np.float32) for w, g in zip(self.w, grads,
                                                                             strict=True)]

    def get_weights(self) -> tuple[np.ndarray, ...]:
        return tuple(w.copy() for w in self.w)

    def set_weights(self, ws: Sequence[np.ndarray]) -> None:
        self.w = [np.array(w, np.float32) for w in ws]


def _records(n: int, seed: int = 0) -> tuple[list[int], np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    table = rng.standard_normal((n, 8)) * rng.uniform(0.1, 3.0, (n, 1))  # some above C, some not
    x = np.zeros((n, 1, 4), np.float32)
    x[:, 0, 0] = np.arange(n)
    return list(range(100, 100 + n)), x, rng.integers(0, 2, n), table


def _reference_update(table: np.ndarray, p: DpFedAvgParams, seed: int) -> np.ndarray:
    """The module docstring's formula, written out with numpy and the same draw order."""
    rng = np.random.default_rng(seed)
    n = len(table)
    w = np.zeros(8)
    for _ in range(p.local_steps):
        chosen = rng.random(n) < p.sampling_prob
        g = table[chosen]
        norms = np.sqrt((g * g).sum(axis=1, keepdims=True))
        g = g * np.minimum(1.0, p.clip_norm / np.maximum(norms, 1e-300))
        noisy = g.sum(axis=0) + rng.normal(0.0, p.noise_multiplier * p.clip_norm, 8)
        w -= p.lr * noisy / (p.sampling_prob * n)
    return w


def test_update_is_exactly_the_formula() -> None:
    ids, x, y, table = _records(23)
    p = DpFedAvgParams(sampling_prob=0.4, noise_multiplier=1.3, clip_norm=1.0, local_steps=5,
                       lr=0.5)
    rt = FakeRuntime(table)
    res = dp_fedavg_round(rt, ids=ids, x=x, y=y, global_weights=[np.zeros(s) for s in SHAPES],
                          params=p, rng=np.random.default_rng(11))
    want = _reference_update(table, p, seed=11)
    got = np.concatenate([u.reshape(-1) for u in res.update])
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    assert res.steps == 5
    assert res.events == (PoissonSampledGaussian(noise_multiplier=1.3, sampling_prob=0.4,
                                                 count=5),)
    assert max(rt.calls) <= 4  # chunked to the artifact's batch


def test_update_is_relative_to_the_global_weights() -> None:
    ids, x, y, table = _records(10)
    p = DpFedAvgParams(sampling_prob=1.0, noise_multiplier=0.0, clip_norm=0.5, local_steps=1,
                       lr=1.0)
    start = [np.full(s, 3.0, np.float32) for s in SHAPES]
    rt = FakeRuntime(table)
    res = dp_fedavg_round(rt, ids=ids, x=x, y=y, global_weights=start, params=p,
                          rng=np.random.default_rng(0), non_private=True)
    clipped = np.array([r * min(1.0, 0.5 / np.linalg.norm(r)) for r in table])
    want = -clipped.mean(axis=0)
    np.testing.assert_allclose(np.concatenate([u.reshape(-1) for u in res.update]), want,
                               rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(rt.w[0], 3.0 + want[:6].reshape(3, 2), rtol=1e-5)
    assert res.events == ()


def test_empty_sample_still_adds_noise_scaled_by_expected_batch() -> None:
    ids, x, y, table = _records(5)
    p = DpFedAvgParams(sampling_prob=1e-6, noise_multiplier=2.0, clip_norm=1.0, local_steps=1,
                       lr=1.0)
    rt = FakeRuntime(table)
    res = dp_fedavg_round(rt, ids=ids, x=x, y=y, global_weights=rt.get_weights(), params=p,
                          rng=np.random.default_rng(3))
    assert res.sampled == 0 and rt.calls == []
    rng = np.random.default_rng(3)
    rng.random(5)
    noise = rng.normal(0.0, 2.0, 8)
    np.testing.assert_allclose(np.concatenate([u.reshape(-1) for u in res.update]),
                               -noise / (1e-6 * 5), rtol=1e-5)


def test_one_record_moves_the_noiseless_step_by_at_most_2c_over_qn() -> None:
    """Replace-one sensitivity of the released mean: 2C / (q n), whatever the record."""
    ids, x, y, table = _records(12)
    p = DpFedAvgParams(sampling_prob=1.0, noise_multiplier=0.0, clip_norm=1.0, local_steps=1,
                       lr=1.0)
    other = table.copy()
    other[4] = np.full(8, 1e6)  # a wildly different record
    a = dp_fedavg_round(FakeRuntime(table), ids=ids, x=x, y=y,
                        global_weights=[np.zeros(s) for s in SHAPES], params=p,
                        rng=np.random.default_rng(0), non_private=True)
    b = dp_fedavg_round(FakeRuntime(other), ids=ids, x=x, y=y,
                        global_weights=[np.zeros(s) for s in SHAPES], params=p,
                        rng=np.random.default_rng(0), non_private=True)
    diff = np.concatenate([(u - v).reshape(-1) for u, v in zip(a.update, b.update, strict=True)])
    assert 1.0 / 12 < np.linalg.norm(diff) <= 2.0 / 12 + 1e-6


def test_poisson_sampling_statistics() -> None:
    rng = np.random.default_rng(2024)
    n, q, trials = 500, 0.1, 400
    counts = np.zeros(n)
    sizes = []
    for _ in range(trials):
        idx = poisson_sample(n, q, rng)
        assert np.all(np.diff(idx) > 0)
        counts[idx] += 1
        sizes.append(len(idx))
    sizes_a = np.array(sizes)
    sd = np.sqrt(n * q * (1 - q))
    assert abs(sizes_a.mean() - n * q) < 4 * sd / np.sqrt(trials)
    assert 0.7 * sd**2 < sizes_a.var() < 1.3 * sd**2  # binomial, not a fixed batch
    freq = counts / trials
    assert abs(freq.mean() - q) < 0.005
    assert freq.min() > 0.03 and freq.max() < 0.2  # every record, independently
    # two records' inclusions are uncorrelated
    a = np.array([(poisson_sample(2, 0.5, rng)) .tolist() for _ in range(2000)], dtype=object)
    both = sum(1 for s in a if len(s) == 2)
    assert abs(both / 2000 - 0.25) < 0.04


@pytest.mark.parametrize(("over", "match"), [
    ({"sampling_prob": 0.0}, "sampling_prob"),
    ({"sampling_prob": 1.5}, "sampling_prob"),
    ({"noise_multiplier": -1.0}, "noise_multiplier"),
    ({"clip_norm": 0.0}, "clip_norm"),
    ({"local_steps": 0}, "local_steps"),
    ({"lr": float("nan")}, "lr"),
])
def test_bad_params_are_rejected(over: dict[str, float], match: str) -> None:
    base = dict(sampling_prob=0.1, noise_multiplier=1.0, clip_norm=1.0, local_steps=1, lr=0.1)
    with pytest.raises(PrivacyError, match=match):
        DpFedAvgParams(**{**base, **over})  # type: ignore[arg-type]


def test_bad_records_and_silent_non_privacy_are_rejected() -> None:
    ids, x, y, table = _records(6)
    p = DpFedAvgParams(sampling_prob=0.5, noise_multiplier=0.0, clip_norm=1.0, local_steps=1,
                       lr=0.1)
    ws = [np.zeros(s) for s in SHAPES]
    rng = np.random.default_rng(0)
    with pytest.raises(PrivacyError, match="without privacy"):
        dp_fedavg_round(FakeRuntime(table), ids=ids, x=x, y=y, global_weights=ws, params=p,
                        rng=rng)
    noisy = DpFedAvgParams(sampling_prob=0.5, noise_multiplier=1.0, clip_norm=1.0,
                           local_steps=1, lr=0.1)
    with pytest.raises(PrivacyError, match="unique"):
        dp_fedavg_round(FakeRuntime(table), ids=[1, 1, 2, 3, 4, 5], x=x, y=y,
                        global_weights=ws, params=noisy, rng=rng)
    with pytest.raises(PrivacyError, match="one row per record"):
        dp_fedavg_round(FakeRuntime(table), ids=ids, x=x, y=y[:-1], global_weights=ws,
                        params=noisy, rng=rng)
    with pytest.raises(PrivacyError, match="at least one record"):
        dp_fedavg_round(FakeRuntime(table), ids=[], x=x[:0], y=y[:0], global_weights=ws,
                        params=noisy, rng=rng)
    bad = x.copy()
    bad[0, 0, 1] = np.nan
    with pytest.raises(PrivacyError, match="finite"):
        dp_fedavg_round(FakeRuntime(table), ids=ids, x=bad, y=y, global_weights=ws,
                        params=noisy, rng=rng)
    with pytest.raises(PrivacyError, match="count"):
        PoissonSampledGaussian(noise_multiplier=1.0, sampling_prob=0.1, count=0)


@pytest.mark.parametrize(("adjacency", "relation"), [
    ("replace", dp_accounting.NeighboringRelation.REPLACE_ONE),
    ("zero_out", dp_accounting.NeighboringRelation.ADD_OR_REMOVE_ONE),
])
def test_epsilon_matches_an_independent_dp_accounting_computation(
        adjacency: str, relation: dp_accounting.NeighboringRelation) -> None:
    events = [PoissonSampledGaussian(noise_multiplier=1.1, sampling_prob=0.05, count=30),
              PoissonSampledGaussian(noise_multiplier=1.1, sampling_prob=0.05, count=20)]
    got = epsilon_for_events(events, delta=1e-5, adjacency=adjacency,  # type: ignore[arg-type]
                             value_discretization_interval=1e-3)
    acc = PLDAccountant(neighboring_relation=relation, value_discretization_interval=1e-3)
    acc.compose(dp_accounting.PoissonSampledDpEvent(0.05, dp_accounting.GaussianDpEvent(1.1)),
                50)
    assert got == pytest.approx(acc.get_epsilon(1e-5), rel=1e-6)
    if adjacency == "zero_out":  # RDP is a looser bound for the same mechanism
        rdp = RdpAccountant()
        rdp.compose(dp_accounting.PoissonSampledDpEvent(
            0.05, dp_accounting.GaussianDpEvent(1.1)), 50)
        assert got <= rdp.get_epsilon(1e-5) * 1.001
        assert got > 0.5 * rdp.get_epsilon(1e-5)


def test_replace_costs_more_than_zero_out() -> None:
    ev = [PoissonSampledGaussian(noise_multiplier=1.0, sampling_prob=0.1, count=10)]
    kw = dict(delta=1e-5, value_discretization_interval=1e-3)
    assert epsilon_for_events(ev, adjacency="replace", **kw) > \
        1.1 * epsilon_for_events(ev, adjacency="zero_out", **kw)


def test_calibration_is_the_smallest_fitting_noise() -> None:
    kw = dict(sampling_prob=0.1, steps=40, epsilon=4.0, delta=1e-5, adjacency="replace",
              value_discretization_interval=1e-3)
    z = noise_multiplier_for(rel_tol=1e-2, **kw)  # type: ignore[arg-type]

    def eps(zz: float) -> float:
        ev = [PoissonSampledGaussian(noise_multiplier=zz, sampling_prob=0.1, count=40)]
        return epsilon_for_events(ev, delta=1e-5, adjacency="replace",
                                  value_discretization_interval=1e-3)

    assert eps(z) <= 4.0
    assert eps(z * 0.97) > 4.0
    with pytest.raises(PrivacyError, match="epsilon"):
        noise_multiplier_for(sampling_prob=0.1, steps=1, epsilon=0.0, delta=1e-5)


def test_replace_one_means_sensitivity_2c() -> None:
    """Without sampling, replace-one at z equals add/remove-one at z/2: a record moves the
    clipped sum by up to 2C, the project's convention (agent.privacy.events)."""
    kw = dict(delta=1e-5, value_discretization_interval=1e-3)
    rep = [PoissonSampledGaussian(noise_multiplier=4.0, sampling_prob=1.0, count=5)]
    add = [PoissonSampledGaussian(noise_multiplier=2.0, sampling_prob=1.0, count=5)]
    assert epsilon_for_events(rep, adjacency="replace", **kw) == pytest.approx(
        epsilon_for_events(add, adjacency="zero_out", **kw), rel=1e-6)
