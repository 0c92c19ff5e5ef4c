"""Cross-group aggregation of client halves (grouped federated learning).

Pure. Each gateway sends its group's FedAvg of client halves with the
number of samples behind it. Groups that share a cut point (the same client
architecture) are averaged together, weighted by samples; groups with
different cut points cannot be averaged with each other and each cut gets its
own result. Inputs are checked (shapes against the cut's manifest,
finiteness) before any arithmetic: one malformed group aggregate is refused
with :class:`models.fedavg.AggregationError` naming the group, and the others
still aggregate (see :func:`aggregate_groups`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from models.fedavg import AggregationError, WeightedUpdate, check_weights, fedavg

__all__ = ["CutResult", "GroupAggregate", "aggregate_groups"]


@dataclass(frozen=True, slots=True, kw_only=True)
class GroupAggregate:
    """One group's averaged client half for a round."""

    group: str
    cut: int
    weights: tuple[np.ndarray, ...]
    num_samples: int
    aggregate_sha256: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class CutResult:
    """The cross-group average of one cut, which groups made it, and who was refused."""

    cut: int
    weights: tuple[np.ndarray, ...] | None
    num_samples: int
    groups: tuple[str, ...]
    refused: Mapping[str, str]


def aggregate_groups(
    aggs: Sequence[GroupAggregate], shapes: Mapping[int, Sequence[tuple[int, ...]]]
) -> dict[int, CutResult]:
    """Average group aggregates per cut; ``shapes`` = client weight shapes per cut."""
    by_cut: dict[int, list[GroupAggregate]] = {c: [] for c in shapes}
    refused: dict[int, dict[str, str]] = {c: {} for c in shapes}
    for a in aggs:
        if a.cut not in shapes:
            raise AggregationError(f"group {a.group}: unknown cut {a.cut}")
        try:
            if a.num_samples <= 0:
                raise AggregationError(f"{a.group}: no samples")
            check_weights(a.weights, shapes[a.cut], source=a.group)
        except AggregationError as exc:
            refused[a.cut][a.group] = str(exc)
            continue
        by_cut[a.cut].append(a)
    out: dict[int, CutResult] = {}
    for cut, items in by_cut.items():
        items.sort(key=lambda a: a.group)
        mean = (
            fedavg(
                [
                    WeightedUpdate(weights=a.weights, num_samples=a.num_samples, source=a.group)
                    for a in items
                ]
            )
            if items
            else None
        )
        out[cut] = CutResult(
            cut=cut,
            weights=mean,
            num_samples=sum(a.num_samples for a in items),
            groups=tuple(a.group for a in items),
            refused=refused[cut],
        )
    return out
