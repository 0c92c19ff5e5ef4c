"""FedAvg: the sample-weighted mean of weight lists (McMahan et al. 2017, Alg. 1).

Pure. Used by the gateway for its group's client halves, by the server for
the cross-group average and by the server's split trainer. Every input is
checked before any arithmetic: same number of tensors, same shapes, all
finite, positive sample counts. The mean is computed in float64 and returned
in the first update's dtypes, so the result does not depend on the order
updates arrived in beyond float64 rounding.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from protocol.errors import SplitfedError

__all__ = ["AggregationError", "WeightedUpdate", "check_weights", "fedavg"]


class AggregationError(SplitfedError):
    """Weights to average disagree in count or shape, are non-finite, or have no samples."""


@dataclass(frozen=True, slots=True, kw_only=True)
class WeightedUpdate:
    """One participant's weights and the number of samples they were trained on."""

    weights: tuple[np.ndarray, ...]
    num_samples: int
    source: str = ""

    def __post_init__(self) -> None:
        if isinstance(self.num_samples, bool) or not isinstance(self.num_samples, int):
            raise AggregationError("num_samples must be an int")
        if self.num_samples <= 0:
            raise AggregationError(f"{self.source or 'update'}: num_samples must be > 0")
        if not self.weights:
            raise AggregationError(f"{self.source or 'update'}: empty weight list")


def check_weights(
    weights: Sequence[np.ndarray],
    shapes: Sequence[tuple[int, ...]] | None = None,
    *,
    source: str = "",
) -> None:
    """Raise :class:`AggregationError` unless ``weights`` are finite floats of ``shapes``."""
    who = source or "weights"
    if shapes is not None:
        if len(weights) != len(shapes):
            raise AggregationError(f"{who}: {len(weights)} tensors, expected {len(shapes)}")
        for i, (w, s) in enumerate(zip(weights, shapes, strict=True)):
            if tuple(w.shape) != tuple(s):
                raise AggregationError(f"{who}: tensor {i} has shape {w.shape}, expected {s}")
    for i, w in enumerate(weights):
        if not np.issubdtype(w.dtype, np.floating):
            raise AggregationError(f"{who}: tensor {i} has dtype {w.dtype}, expected float")
        if not np.all(np.isfinite(w)):
            raise AggregationError(f"{who}: tensor {i} has NaN or Inf")


def fedavg(updates: Sequence[WeightedUpdate]) -> tuple[np.ndarray, ...]:
    """Sample-weighted average of ``updates``; all shapes must match the first's."""
    if not updates:
        raise AggregationError("nothing to average")
    ref = updates[0].weights
    shapes = [tuple(w.shape) for w in ref]
    for u in updates:
        check_weights(u.weights, shapes, source=u.source)
    total = float(sum(u.num_samples for u in updates))
    out: list[np.ndarray] = []
    for i, w0 in enumerate(ref):
        acc = np.zeros(w0.shape, dtype=np.float64)
        for u in updates:
            acc += u.weights[i].astype(np.float64) * (u.num_samples / total)
        out.append(acc.astype(w0.dtype))
    return tuple(out)
