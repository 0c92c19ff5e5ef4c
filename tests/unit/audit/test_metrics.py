"""Attack metrics against brute-force references."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from audit.metrics import auc, distance_correlation, dtw, macro_auc, nmse, tpr_at_fpr


def _auc_pairs(s: np.ndarray, pos: np.ndarray) -> float:
    wins = [1.0 if a > b else 0.5 if a == b else 0.0
            for a, b in itertools.product(s[pos], s[~pos])]
    return float(np.mean(wins))


def _dtw_naive(a: np.ndarray, b: np.ndarray) -> float:
    n, m = len(a), len(b)
    d = np.full((n + 1, m + 1), np.inf)
    d[0, 0] = 0.0
    for i in range(1, n + 1):
        for j in range(1, m + 1):
            d[i, j] = (a[i - 1] - b[j - 1]) ** 2 + min(d[i - 1, j], d[i, j - 1], d[i - 1, j - 1])
    return float(np.sqrt(d[n, m]) / np.sqrt(max(n, m)))


def test_auc_matches_pair_counting_with_ties() -> None:
    rng = np.random.default_rng(3)
    s = rng.integers(0, 5, size=60).astype(float)
    pos = rng.random(60) < 0.4
    assert auc(s, pos) == pytest.approx(_auc_pairs(s, pos))
    assert auc([0.0, 1.0], [False, False]) == 0.5


def test_macro_auc_of_one_hot_truth_is_one() -> None:
    y = np.array([0, 1, 2, 1, 0])
    assert macro_auc(np.eye(3)[y], y) == 1.0


def test_tpr_at_fpr() -> None:
    s = np.arange(200.0)
    pos = s >= 100
    assert tpr_at_fpr(s, pos, 0.01) == 1.0
    assert tpr_at_fpr(-s, pos, 0.01) == 0.0


def test_dtw_matches_the_textbook_recursion() -> None:
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(3, 17)), rng.normal(size=(3, 17))
    got = dtw(a, b)
    for i in range(3):
        assert got[i] == pytest.approx(_dtw_naive(a[i], b[i]), rel=1e-12)
    assert dtw(a, a).max() == 0.0
    shifted = np.roll(a, 2, axis=1)
    assert (dtw(a, shifted) < np.sqrt(((a - shifted) ** 2).mean(axis=1))).all()


def test_distance_correlation_sees_dependence() -> None:
    rng = np.random.default_rng(1)
    x = rng.normal(size=(300, 3))
    assert distance_correlation(x, x ** 2) > 0.3
    assert distance_correlation(x, 2 * x + 1) == pytest.approx(1.0)
    assert distance_correlation(x, rng.normal(size=(300, 3))) < 0.2


def test_nmse() -> None:
    x = np.ones((2, 4))
    assert nmse(x, x).tolist() == [0.0, 0.0]
    assert nmse(np.zeros((2, 4)), x).tolist() == [1.0, 1.0]
