"""Attack metrics in numpy (pure): ROC AUC, TPR at a fixed FPR, NMSE, DTW, distance correlation.

* :func:`auc`: Mann-Whitney U / (n1 n0), ties counted 1/2.
* :func:`tpr_at_fpr`: the largest TPR over thresholds whose FPR is <= the target
  (Carlini et al. 2022, "Membership inference attacks from first principles",
  argue this is the number that matters, not AUC).
* :func:`nmse`: ``||x_hat - x||^2 / ||x||^2`` per example.
* :func:`dtw`: dynamic time warping distance with squared-difference cost
  (Sakoe & Chiba 1978), all pairs at once, computed along anti-diagonals so
  the Python loop runs ``2L`` times whatever the number of pairs; returned
  as ``sqrt(cost) / sqrt(L)`` (the RMS deviation along the best alignment).
* :func:`distance_correlation`: Szekely, Rizzo & Bakirov 2007 (biased
  V-statistic), in [0, 1], 0 iff independent (in the population limit).
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from audit.errors import AuditInputError

__all__ = ["auc", "distance_correlation", "dtw", "macro_auc", "nmse", "tpr_at_fpr"]

F64 = npt.NDArray[np.float64]


def auc(scores: npt.ArrayLike, positive: npt.ArrayLike) -> float:
    """ROC AUC of ``scores`` (higher = positive); 0.5 when a class is empty."""
    s = np.asarray(scores, np.float64)
    pos = np.asarray(positive, bool)
    if s.shape != pos.shape or s.ndim != 1:
        raise AuditInputError("scores and labels must be vectors of one length")
    n1, n0 = int(pos.sum()), int((~pos).sum())
    if n1 == 0 or n0 == 0:
        return 0.5
    order = np.argsort(s, kind="mergesort")
    sorted_s = s[order]
    # average ranks of ties
    _, first, counts = np.unique(sorted_s, return_index=True, return_counts=True)
    avg = first + (counts - 1) / 2.0 + 1.0
    ranks = np.empty(len(s))
    ranks[order] = np.repeat(avg, counts)
    return float((ranks[pos].sum() - n1 * (n1 + 1) / 2) / (n1 * n0))


def macro_auc(scores: npt.ArrayLike, labels: npt.ArrayLike) -> float:
    """Mean one-vs-rest AUC over the classes present; ``scores`` is ``(N, k)``."""
    s = np.asarray(scores, np.float64)
    y = np.asarray(labels, np.int64)
    if s.ndim != 2 or s.shape[0] != y.shape[0]:
        raise AuditInputError("scores must be (N, classes) with one label per row")
    present = [c for c in range(s.shape[1]) if 0 < int((y == c).sum()) < len(y)]
    if not present:
        return 0.5
    return float(np.mean([auc(s[:, c], y == c) for c in present]))


def tpr_at_fpr(scores: npt.ArrayLike, positive: npt.ArrayLike, fpr: float = 0.01) -> float:
    """Largest true-positive rate at false-positive rate <= ``fpr`` (threshold on scores)."""
    s = np.asarray(scores, np.float64)
    pos = np.asarray(positive, bool)
    n1, n0 = int(pos.sum()), int((~pos).sum())
    if n1 == 0 or n0 == 0:
        return 0.0
    best = 0.0
    for t in np.unique(s):
        pred = s >= t
        if (pred & ~pos).sum() / n0 <= fpr:
            best = max(best, float((pred & pos).sum() / n1))
    return best


def nmse(x_hat: npt.ArrayLike, x: npt.ArrayLike) -> F64:
    a = np.asarray(x_hat, np.float64).reshape(len(x_hat), -1)  # type: ignore[arg-type]
    b = np.asarray(x, np.float64).reshape(a.shape)
    out: F64 = ((a - b) ** 2).sum(axis=1) / np.maximum((b * b).sum(axis=1), 1e-12)
    return out


def dtw(a: npt.ArrayLike, b: npt.ArrayLike) -> F64:
    """DTW distance between paired 1-D series ``a[i]`` and ``b[i]`` (each ``(P, L)``)."""
    x = np.asarray(a, np.float64)
    y = np.asarray(b, np.float64)
    if x.ndim == 1:
        x, y = x[None], y[None]
    x, y = x.reshape(len(x), -1), y.reshape(len(y), -1)
    if x.shape[0] != y.shape[0]:
        raise AuditInputError("dtw needs the same number of series on both sides")
    p, n, m = x.shape[0], x.shape[1], y.shape[1]
    cost = (x[:, :, None] - y[:, None, :]) ** 2          # (P, n, m)
    d = np.full((p, n + 1, m + 1), np.inf)
    d[:, 0, 0] = 0.0
    for s in range(2, n + m + 1):                         # anti-diagonal i + j = s (1-based)
        i = np.arange(max(1, s - m), min(n, s - 1) + 1)
        j = s - i
        best = np.minimum(np.minimum(d[:, i - 1, j], d[:, i, j - 1]), d[:, i - 1, j - 1])
        d[:, i, j] = cost[:, i - 1, j - 1] + best
    out: F64 = np.sqrt(d[:, n, m]) / np.sqrt(max(n, m))
    return out


def _centred(z: F64) -> F64:
    dist = np.sqrt(np.maximum(((z[:, None, :] - z[None, :, :]) ** 2).sum(axis=2), 0.0))
    out: F64 = dist - dist.mean(axis=0)[None, :] - dist.mean(axis=1)[:, None] + dist.mean()
    return out


def distance_correlation(a: npt.ArrayLike, b: npt.ArrayLike) -> float:
    """Distance correlation of paired samples ``a[i]``, ``b[i]`` (any trailing shape)."""
    x = np.asarray(a, np.float64)
    y = np.asarray(b, np.float64)
    x, y = x.reshape(len(x), -1), y.reshape(len(y), -1)
    if len(x) != len(y) or len(x) < 2:
        raise AuditInputError("distance correlation needs >= 2 paired samples")
    ax, by = _centred(x), _centred(y)
    v_xy, v_xx, v_yy = (ax * by).mean(), (ax * ax).mean(), (by * by).mean()
    if v_xx <= 0 or v_yy <= 0:
        return 0.0
    return float(np.sqrt(max(v_xy, 0.0) / np.sqrt(v_xx * v_yy)))
