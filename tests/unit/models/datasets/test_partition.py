"""Dirichlet non-IID partitioning."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from models.datasets.errors import DatasetError
from models.datasets.partition import (
    describe_partition,
    dirichlet_partition,
    format_partition,
    hierarchical_partition,
    partition_skew,
)

LABELS = np.repeat(np.arange(10), 100)


@settings(max_examples=60, deadline=None)
@given(labels=st.lists(st.integers(0, 6), min_size=20, max_size=300),
       n_parts=st.integers(1, 10), alpha=st.sampled_from([0.01, 0.1, 1.0, 10.0, math.inf]),
       seed=st.integers(0, 2**32 - 1), minimum=st.integers(0, 2))
def test_every_index_exactly_once(
    labels: list[int], n_parts: int, alpha: float, seed: int, minimum: int
) -> None:
    y = np.array(labels, dtype=np.int64)
    parts = dirichlet_partition(y, n_parts=n_parts, alpha=alpha,
                                rng=np.random.default_rng(seed), min_per_part=minimum)
    assert len(parts) == n_parts
    joined = np.concatenate(parts)
    assert joined.dtype == np.int64
    assert np.array_equal(np.sort(joined), np.arange(y.size))
    assert min(p.size for p in parts) >= minimum
    assert describe_partition(y, parts).sum(axis=0).tolist() == np.bincount(y).tolist()


def test_reproducible_by_seed() -> None:
    def run(seed: int) -> list[np.ndarray]:
        return dirichlet_partition(LABELS, n_parts=5, alpha=0.3, rng=np.random.default_rng(seed))
    a, b, c = run(1), run(1), run(2)
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    assert not all(np.array_equal(x, y) for x, y in zip(a, c, strict=True))


def test_smaller_alpha_is_more_skewed() -> None:
    alphas = [0.05, 0.5, 5.0, 50.0, math.inf]
    skews = []
    for alpha in alphas:
        per_seed = [partition_skew(LABELS, dirichlet_partition(
            LABELS, n_parts=8, alpha=alpha, rng=np.random.default_rng(s))) for s in range(20)]
        skews.append(float(np.mean(per_seed)))
    assert skews == sorted(skews, reverse=True), skews
    assert skews[0] > 0.6  # tiny alpha: parts hold mostly their own classes
    assert skews[-1] < 0.02  # alpha -> inf: every part has the global class mix


def test_hierarchical() -> None:
    rng = np.random.default_rng(0)
    parts = hierarchical_partition(LABELS, orgs=3, devices_per_org=4, alpha_org=0.1,
                                   alpha_device=100.0, rng=rng)
    assert sorted(parts) == [(o, d) for o in range(3) for d in range(4)]
    joined = np.concatenate(list(parts.values()))
    assert np.array_equal(np.sort(joined), np.arange(LABELS.size))
    hist = describe_partition(LABELS, parts, n_classes=10)
    assert hist.shape == (12, 10)
    orgs = [np.concatenate([parts[(o, d)] for d in range(4)]) for o in range(3)]
    # skewed between organisations, close to the org's own mix inside each
    assert partition_skew(LABELS, orgs) > 0.4
    for o in range(3):
        inside = [parts[(o, d)] for d in range(4)]
        sub = LABELS[np.concatenate(inside)]
        local = [np.searchsorted(np.sort(np.concatenate(inside)), p) for p in inside]
        assert partition_skew(sub, local) < 0.15
    assert "part" in format_partition(LABELS, parts)


def test_errors() -> None:
    rng = np.random.default_rng(0)
    with pytest.raises(DatasetError, match="alpha"):
        dirichlet_partition(LABELS, n_parts=2, alpha=0.0, rng=rng)
    with pytest.raises(DatasetError, match="cannot give"):
        dirichlet_partition(LABELS[:5], n_parts=3, alpha=1.0, rng=rng, min_per_part=2)
    with pytest.raises(DatasetError, match="n_classes"):
        describe_partition(LABELS, [np.arange(10)], n_classes=5)
    with pytest.raises(DatasetError, match="1-D integer"):
        dirichlet_partition(LABELS.astype(float), n_parts=2, alpha=1.0, rng=rng)
