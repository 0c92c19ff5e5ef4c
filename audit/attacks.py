"""Reconstruction, label-inference and membership attacks on a captured session (pure numpy).

Theory of operation and what each attack assumes (docs/audit.md says more):

Reconstruction (model inversion, in the manner of UnSplit / FORA). The
attacker (the server, or anyone reading the rows) knows the client half it
serves (architecture and published weights) and holds *auxiliary public
data of the same kind* (here: a split the device never trained on). It
pushes the auxiliary windows through the client half, applies the
mechanism the messages declare (clip to ``C``, add N(0, (zC)^2): the
parameters are on the wire), and fits a decoder from noisy rows back to
normalised windows. The decoder (:class:`RowDecoder`) is a random-feature
network: a fixed random tanh layer of width ``features`` followed by a ridge
regression fitted in closed form (a one-hidden-layer MLP whose first layer
is not trained; no gradient descent, deterministic given the seed). It is
then applied to the captured rows. Error is measured against the true
(normalised) windows, which only the evaluator knows: normalised MSE, DTW
(:func:`audit.metrics.dtw`) and the distance correlation between rows and
windows (how much the rows still tell about the windows at all).

Label inference. What the device sends: with randomized response the label
on the wire is the attacker's guess (score 1 for the sent class); the
*posterior* attack combines it with the server model's prediction on the
row: ``P(y | sent, row) ~ P(sent | y) P(y | row)``. From gradients: the
gradient rows the server returns are computed from the labels it received,
so an observer of gradient messages (broker, gateway, anyone without TLS)
infers labels from them: *norm* scoring (Li et al., ICLR 2022, "Label leakage
and protection in two-party split learning"; binary: the most frequent class
against the rest) and *direction* scoring: cosine similarity of each gradient
row with per-class mean gradients the attacker computes on auxiliary rows
through the final server half. Both can recover at most what the labels the
server received carry (the gradients are computed from them): with
randomized response they should not beat the RR rate. Reported as macro
one-vs-rest ROC AUC against the TRUE labels.

Membership inference on the final model: the loss-threshold attack (Yeom et
al. 2018): lower loss = member; and a small online LiRA (Carlini et al.
2022): shadow sessions of the same device code and privacy parameters on
random halves of the candidate pool give, per example, Gaussians of its
logit-confidence with and without it; the score is their likelihood ratio.
Members are the device's records, non-members records of the same
distribution it never saw. AUC and TPR at 1% FPR.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from audit.errors import AuditInputError
from audit.metrics import auc, distance_correlation, dtw, macro_auc, nmse, tpr_at_fpr
from models.clip import clip_rows

__all__ = ["ReconstructionResult", "RowDecoder", "gradient_direction_scores",
           "gradient_norm_scores", "label_aucs", "label_posterior", "lira_scores",
           "logit_confidence",
           "membership_loss_attack", "privatize_like", "reconstruction_metrics"]

F64 = npt.NDArray[np.float64]


def privatize_like(rows: npt.ArrayLike, *, clip_norm: float, noise_multiplier: float,
                   mechanism: str, rng: np.random.Generator) -> F64:
    """Apply the declared mechanism to clean rows (what the attacker simulates on aux data)."""
    r = np.asarray(rows, np.float64)
    if mechanism == "none" or noise_multiplier <= 0:
        return r
    c = clip_rows(r, clip_norm=clip_norm)
    out: F64 = c + rng.normal(0.0, noise_multiplier * clip_norm, size=c.shape)
    return out


class RowDecoder:
    """Random tanh features + closed-form ridge: rows ``(N, d)`` -> windows ``(N, D)``."""

    def __init__(self, *, features: int = 512, ridge: float = 1e-2, seed: int = 0) -> None:
        if features < 1 or ridge <= 0:
            raise AuditInputError("decoder needs features >= 1 and ridge > 0")
        self.features, self.ridge, self.seed = features, ridge, seed
        self._w: F64 | None = None
        self._proj: F64 | None = None
        self._mu: F64 | None = None
        self._sd: F64 | None = None

    def _phi(self, rows: F64) -> F64:
        assert self._proj is not None and self._mu is not None and self._sd is not None
        z = (rows - self._mu) / self._sd
        h = np.tanh(z @ self._proj[:-1] + self._proj[-1])
        out: F64 = np.concatenate([h, z, np.ones((len(z), 1))], axis=1)
        return out

    def fit(self, rows: npt.ArrayLike, windows: npt.ArrayLike) -> RowDecoder:
        r = np.asarray(rows, np.float64).reshape(len(rows), -1)  # type: ignore[arg-type]
        y = np.asarray(windows, np.float64).reshape(len(r), -1)
        if len(r) < 2:
            raise AuditInputError("decoder needs at least 2 training pairs")
        self._mu, self._sd = r.mean(axis=0), np.maximum(r.std(axis=0), 1e-8)
        rng = np.random.default_rng(self.seed)
        d = r.shape[1]
        self._proj = rng.normal(0.0, 1.0 / math.sqrt(d), size=(d + 1, self.features))
        phi = self._phi(r)
        a = phi.T @ phi + self.ridge * len(r) * np.eye(phi.shape[1])
        self._w = np.asarray(np.linalg.solve(a, phi.T @ y), np.float64)
        return self

    def predict(self, rows: npt.ArrayLike) -> F64:
        if self._w is None:
            raise AuditInputError("decoder is not fitted")
        r = np.asarray(rows, np.float64).reshape(len(rows), -1)  # type: ignore[arg-type]
        out: F64 = self._phi(r) @ self._w
        return out


@dataclass(frozen=True, slots=True, kw_only=True)
class ReconstructionResult:
    nmse: float
    dtw: float
    dtw_mean_baseline: float      # DTW of predicting the aux mean window for every row
    distance_correlation: float
    rows: int

    def as_dict(self) -> dict[str, float | int]:
        return {n: getattr(self, n) for n in self.__dataclass_fields__}


def reconstruction_metrics(decoder: RowDecoder, rows: npt.ArrayLike, truth: npt.ArrayLike,
                           *, mean_window: npt.ArrayLike, max_pairs: int = 256,
                           seed: int = 0) -> ReconstructionResult:
    """Decode ``rows`` and compare with the true normalised windows ``truth`` (N, ...)."""
    r = np.asarray(rows, np.float64).reshape(len(rows), -1)  # type: ignore[arg-type]
    t = np.asarray(truth, np.float64).reshape(len(r), -1)
    if len(r) < 2:
        raise AuditInputError("need at least 2 rows to measure reconstruction")
    idx = np.random.default_rng(seed).permutation(len(r))[:max_pairs]
    r, t = r[idx], t[idx]
    x_hat = decoder.predict(r)
    mean = np.broadcast_to(np.asarray(mean_window, np.float64).reshape(1, -1), t.shape)
    dtws, base = [], []
    for i in range(0, len(r), 32):
        dtws.append(dtw(x_hat[i:i + 32], t[i:i + 32]))
        base.append(dtw(mean[i:i + 32], t[i:i + 32]))
    return ReconstructionResult(nmse=float(np.mean(nmse(x_hat, t))),
                                dtw=float(np.mean(np.concatenate(dtws))),
                                dtw_mean_baseline=float(np.mean(np.concatenate(base))),
                                distance_correlation=distance_correlation(r, t), rows=len(r))


def label_posterior(sent: npt.ArrayLike, model_probs: npt.ArrayLike | None, *, k: int,
                    label_epsilon: float | None) -> F64:
    """Scores ``(N, k)`` for the true label given the label sent (RR or plain) and the model."""
    y = np.asarray(sent, np.int64)
    if label_epsilon is None:  # plain labels: the sent label is the label
        like = np.eye(k)[y]
    else:
        keep = 1.0 / (1.0 + (k - 1) * math.exp(-label_epsilon))
        like = np.full((len(y), k), (1.0 - keep) / (k - 1))
        like[np.arange(len(y)), y] = keep
    if model_probs is None:
        return like
    post = like * np.clip(np.asarray(model_probs, np.float64), 1e-12, 1.0)
    out: F64 = post / post.sum(axis=1, keepdims=True)
    return out


def gradient_direction_scores(grads: npt.ArrayLike, centroids: npt.ArrayLike) -> F64:
    """Direction scoring: cosine of each gradient row with each class's mean gradient ``(k, d)``.

    The attacker estimates the centroids itself, from gradients of auxiliary rows
    with known labels through the (final) server half.
    """
    g = np.asarray(grads, np.float64).reshape(len(grads), -1)  # type: ignore[arg-type]
    c = np.asarray(centroids, np.float64)
    if c.ndim != 2 or c.shape[1] != g.shape[1]:
        raise AuditInputError(f"centroids {c.shape} do not match gradient rows of {g.shape[1]}")
    gn = g / np.maximum(np.linalg.norm(g, axis=1, keepdims=True), 1e-30)
    cn = c / np.maximum(np.linalg.norm(c, axis=1, keepdims=True), 1e-30)
    out: F64 = gn @ cn.T
    return out


def gradient_norm_scores(grads: npt.ArrayLike) -> F64:
    """Norm scoring (Li et al. 2022): the gradient row's L2 norm (a binary-label attack)."""
    g = np.asarray(grads, np.float64).reshape(len(grads), -1)  # type: ignore[arg-type]
    out: F64 = np.linalg.norm(g, axis=1)
    return out


def membership_loss_attack(member_loss: npt.ArrayLike,
                           nonmember_loss: npt.ArrayLike) -> dict[str, float]:
    """Loss-threshold membership inference: AUC and TPR at 1% FPR."""
    a, b = np.asarray(member_loss, np.float64), np.asarray(nonmember_loss, np.float64)
    scores = -np.concatenate([a, b])
    pos = np.concatenate([np.ones(len(a), bool), np.zeros(len(b), bool)])
    return {"auc": auc(scores, pos), "tpr_at_1pct_fpr": tpr_at_fpr(scores, pos, 0.01),
            "members": float(len(a)), "non_members": float(len(b))}


def label_aucs(true: npt.ArrayLike, scores: dict[str, npt.ArrayLike]) -> dict[str, float]:
    return {name: macro_auc(s, true) for name, s in scores.items()}


def logit_confidence(loss: npt.ArrayLike) -> F64:
    """``log(p / (1 - p))`` of the true class from a cross-entropy loss (``p = e^-loss``).

    LiRA's statistic (Carlini et al. 2022, sec. 4): close to Gaussian across
    training runs, unlike the loss itself.
    """
    p = np.exp(-np.asarray(loss, np.float64))
    p = np.clip(p, 1e-12, 1 - 1e-12)
    out: F64 = np.log(p) - np.log1p(-p)
    return out


def lira_scores(target: npt.ArrayLike, shadow: npt.ArrayLike, shadow_in: npt.ArrayLike) -> F64:
    """Online LiRA (Carlini et al. 2022, Alg. 1) with a global variance per side.

    ``target[j]``: the statistic of example ``j`` under the audited model;
    ``shadow[s, j]``: under shadow model ``s``; ``shadow_in[s, j]``: whether ``j``
    was in shadow ``s``'s training data. Score = log-likelihood ratio of the
    IN and OUT Gaussians (per-example means, variances pooled over examples,
    as the paper recommends for few shadows). Higher = member.
    """
    t = np.asarray(target, np.float64)
    s = np.asarray(shadow, np.float64)
    inn = np.asarray(shadow_in, bool)
    if s.ndim != 2 or s.shape != inn.shape or s.shape[1] != t.shape[0]:
        raise AuditInputError("shadow statistics must be (shadows, examples) like the mask")
    n_in, n_out = inn.sum(axis=0), (~inn).sum(axis=0)
    if (n_in == 0).any() or (n_out == 0).any():
        raise AuditInputError("every example needs at least one IN and one OUT shadow")
    mu_in = np.where(inn, s, 0.0).sum(axis=0) / n_in
    mu_out = np.where(~inn, s, 0.0).sum(axis=0) / n_out
    var_in = max(float(np.where(inn, (s - mu_in) ** 2, 0.0).sum() / max(1, inn.sum() - 1)), 1e-6)
    var_out = max(float(np.where(~inn, (s - mu_out) ** 2, 0.0).sum()
                        / max(1, (~inn).sum() - 1)), 1e-6)
    out: F64 = (-(t - mu_in) ** 2 / (2 * var_in) - 0.5 * math.log(var_in)
                + (t - mu_out) ** 2 / (2 * var_out) + 0.5 * math.log(var_out))
    return out
