"""Attack building blocks on synthetic data where the answer is known."""

from __future__ import annotations

import math

import numpy as np
import pytest

from audit.attacks import (
    RowDecoder,
    gradient_direction_scores,
    label_posterior,
    membership_loss_attack,
    privatize_like,
)
from audit.errors import AuditInputError
from audit.metrics import macro_auc


def test_decoder_inverts_a_smooth_map_and_noise_hurts_it() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(600, 8))
    a = np.tanh(x @ rng.normal(size=(8, 16)) / 3)
    dec = RowDecoder(features=256, ridge=1e-4).fit(a[:500], x[:500])
    err = ((dec.predict(a[500:]) - x[500:]) ** 2).mean()
    noisy = privatize_like(a, clip_norm=1.0, noise_multiplier=2.0, mechanism="gaussian", rng=rng)
    dec_n = RowDecoder(features=256, ridge=1e-2).fit(noisy[:500], x[:500])
    err_n = ((dec_n.predict(noisy[500:]) - x[500:]) ** 2).mean()
    assert err < 0.5 < err_n  # x has unit variance: 1.0 is "learnt nothing"
    with pytest.raises(AuditInputError):
        RowDecoder().predict(a)


def test_rr_label_posterior_is_the_keep_rate() -> None:
    k, eps = 4, 1.0
    keep = 1 / (1 + (k - 1) * math.exp(-eps))
    post = label_posterior(np.array([2]), None, k=k, label_epsilon=eps)
    assert post[0, 2] == pytest.approx(keep)
    assert post[0].sum() == pytest.approx(1.0)
    model = np.array([[0.7, 0.1, 0.1, 0.1]])
    mixed = label_posterior(np.array([2]), model, k=k, label_epsilon=eps)
    assert mixed[0].sum() == pytest.approx(1.0) and mixed[0, 0] > post[0, 0]


def test_gradient_direction_recovers_labels_from_a_softmax_head() -> None:
    rng = np.random.default_rng(2)
    d, k, n = 16, 5, 400
    w = rng.normal(size=(d, k))
    y = rng.integers(0, k, size=n)
    logits = rng.normal(size=(n, k)) * 0.1
    p = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    g = (p - np.eye(k)[y]) @ w.T  # dL/da of a linear softmax head
    cent = np.stack([g[y == c].mean(axis=0) for c in range(k)])
    assert macro_auc(gradient_direction_scores(g, cent), y) > 0.95


def test_membership_attack_on_separated_losses() -> None:
    r = membership_loss_attack(np.zeros(50), np.ones(50))
    assert r["auc"] == 1.0 and r["tpr_at_1pct_fpr"] == 1.0
    r = membership_loss_attack(np.ones(50), np.ones(50))
    assert r["auc"] == 0.5


def test_lira_separates_members_when_training_shifts_their_statistic() -> None:
    rng = np.random.default_rng(5)
    n_ex, n_sh = 200, 16
    base = rng.normal(size=n_ex)
    masks = rng.random((n_sh, n_ex)) < 0.5
    shadow = base + 1.5 * masks + rng.normal(scale=0.3, size=(n_sh, n_ex))
    member = rng.random(n_ex) < 0.5
    target = base + 1.5 * member + rng.normal(scale=0.3, size=n_ex)
    from audit.attacks import lira_scores
    from audit.metrics import auc
    assert auc(lira_scores(target, shadow, masks), member) > 0.95
    # the same statistic without per-example calibration is much weaker
    assert auc(target, member) < auc(lira_scores(target, shadow, masks), member)
    with pytest.raises(AuditInputError):
        lira_scores(target, shadow, np.ones_like(masks))
