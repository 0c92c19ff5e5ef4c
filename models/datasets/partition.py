"""Non-IID partitioning of a labelled dataset (pure numpy).

Label-distribution skew as in Hsu, Qi & Brown, "Measuring the Effects of
Non-Identical Data Distribution for Federated Visual Classification" (2019):
for each class k draw proportions ``p_k ~ Dir(alpha * 1)`` over the
parts and deal that class's (shuffled) samples out in those proportions.
Small ``alpha`` (0.1) gives parts dominated by one or two classes; large
``alpha`` approaches an IID split; ``alpha = math.inf`` is exactly
proportional (IID up to rounding).

Counts are rounded with the largest-remainder rule, so every index is used
exactly once. When a part ends up with fewer than ``min_per_part`` samples,
samples are moved to it one at a time from the currently largest part
(random sample, random choice among ties); this is a small, documented
correction of the Dirichlet draw that makes tiny-alpha splits usable.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np

from models.datasets.errors import DatasetError


def _labels(labels: np.ndarray) -> np.ndarray:
    y = np.asarray(labels)
    if y.ndim != 1 or not np.issubdtype(y.dtype, np.integer):
        raise DatasetError("labels must be a 1-D integer array")
    if y.size and y.min() < 0:
        raise DatasetError("labels must be >= 0")
    return y


def _largest_remainder(total: int, p: np.ndarray) -> np.ndarray:
    raw = p * total
    counts: np.ndarray = np.floor(raw).astype(np.int64)
    short = total - int(counts.sum())
    if short > 0:
        order = np.argsort(-(raw - counts), kind="stable")
        counts[order[:short]] += 1
    return counts


def dirichlet_partition(
    labels: np.ndarray,
    *,
    n_parts: int,
    alpha: float,
    rng: np.random.Generator,
    min_per_part: int = 1,
) -> list[np.ndarray]:
    """Split ``range(len(labels))`` into ``n_parts`` sorted int64 index arrays.

    Every index appears in exactly one part; each part has at least
    ``min_per_part`` indices. Reproducible for a given ``rng`` state.
    """
    y = _labels(labels)
    if n_parts < 1:
        raise DatasetError(f"n_parts must be >= 1, got {n_parts}")
    if not alpha > 0:
        raise DatasetError(f"alpha must be > 0 (math.inf for IID), got {alpha}")
    if min_per_part < 0:
        raise DatasetError(f"min_per_part must be >= 0, got {min_per_part}")
    if y.size < n_parts * min_per_part:
        raise DatasetError(
            f"{y.size} samples cannot give {n_parts} parts of at least {min_per_part}")
    buckets: list[list[np.ndarray]] = [[] for _ in range(n_parts)]
    for k in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == k))
        if math.isinf(alpha):
            p = np.full(n_parts, 1.0 / n_parts)
        else:
            p = rng.dirichlet(np.full(n_parts, float(alpha)))
        bounds = np.cumsum(_largest_remainder(idx.size, p))[:-1]
        for part, chunk in enumerate(np.split(idx, bounds)):
            buckets[part].append(chunk)
    parts = [np.concatenate(b) if b else np.zeros(0, np.int64) for b in buckets]
    parts = _top_up(parts, min_per_part, rng)
    return [np.sort(p).astype(np.int64) for p in parts]


def _top_up(parts: list[np.ndarray], minimum: int, rng: np.random.Generator) -> list[np.ndarray]:
    sizes = np.array([p.size for p in parts])
    while sizes.min() < minimum:
        poor = int(np.argmin(sizes))
        rich_all = np.flatnonzero(sizes == sizes.max())
        rich = int(rng.choice(rich_all))
        j = int(rng.integers(parts[rich].size))
        parts[poor] = np.append(parts[poor], parts[rich][j])
        parts[rich] = np.delete(parts[rich], j)
        sizes[poor] += 1
        sizes[rich] -= 1
    return parts


def hierarchical_partition(
    labels: np.ndarray,
    *,
    orgs: int,
    devices_per_org: int,
    alpha_org: float,
    alpha_device: float,
    rng: np.random.Generator,
    min_per_device: int = 1,
) -> dict[tuple[int, int], np.ndarray]:
    """Non-IID across organisations (``alpha_org``), then inside each across devices.

    Returns ``{(org, device): indices}`` for ``org < orgs``,
    ``device < devices_per_org``; indices refer to ``labels`` and every index
    is used exactly once.
    """
    y = _labels(labels)
    if devices_per_org < 1:
        raise DatasetError(f"devices_per_org must be >= 1, got {devices_per_org}")
    org_parts = dirichlet_partition(
        y, n_parts=orgs, alpha=alpha_org, rng=rng,
        min_per_part=devices_per_org * min_per_device)
    out: dict[tuple[int, int], np.ndarray] = {}
    for o, org_idx in enumerate(org_parts):
        dev_parts = dirichlet_partition(
            y[org_idx], n_parts=devices_per_org, alpha=alpha_device, rng=rng,
            min_per_part=min_per_device)
        for d, local in enumerate(dev_parts):
            out[(o, d)] = np.sort(org_idx[local]).astype(np.int64)
    return out


Parts = Sequence[np.ndarray] | Mapping[tuple[int, int], np.ndarray]


def _as_list(parts: Parts) -> list[np.ndarray]:
    if isinstance(parts, Mapping):
        return [parts[k] for k in sorted(parts)]
    return list(parts)


def describe_partition(
    labels: np.ndarray,
    parts: Parts,
    *,
    n_classes: int | None = None,
) -> np.ndarray:
    """Per-part class histogram, int64 ``(n_parts, n_classes)``.

    Rows follow ``parts`` (sorted keys for a mapping from
    :func:`hierarchical_partition`). Counts only, no sample values, so it
    is safe to log.
    """
    y = _labels(labels)
    k = int(n_classes if n_classes is not None else (y.max() + 1 if y.size else 0))
    if y.size and y.max() >= k:
        raise DatasetError(f"label {int(y.max())} does not fit n_classes={k}")
    rows = [np.bincount(y[np.asarray(p, dtype=np.int64)], minlength=k)[:k] for p in _as_list(parts)]
    return np.array(rows, dtype=np.int64).reshape(len(rows), k)


def partition_skew(
    labels: np.ndarray, parts: Parts
) -> float:
    """Label skew in [0, 1]: sample-weighted mean total-variation distance
    between each part's class distribution and the whole dataset's.

    0 = every part has the global class mix (IID); near 1 = parts hold
    classes the others do not.
    """
    hist = describe_partition(labels, parts).astype(np.float64)
    sizes = hist.sum(axis=1)
    total = sizes.sum()
    if total == 0:
        return 0.0
    glob = hist.sum(axis=0) / total
    keep = sizes > 0
    local = hist[keep] / sizes[keep, None]
    tv = 0.5 * np.abs(local - glob).sum(axis=1)
    return float((tv * sizes[keep]).sum() / total)


def format_partition(labels: np.ndarray, parts: Parts) -> str:
    """A small text table of :func:`describe_partition` for logs and demos."""
    hist = describe_partition(labels, parts)
    names = [f"{k}" for k in sorted(parts)] if isinstance(parts, Mapping) else [
        str(i) for i in range(len(hist))]
    width = max([4, *(len(n) for n in names)])
    head = "part".ljust(width) + " | " + " ".join(f"{c:>5d}" for c in range(hist.shape[1]))
    lines = [head, "-" * len(head)]
    for name, row in zip(names, hist, strict=True):
        lines.append(name.ljust(width) + " | " + " ".join(f"{v:>5d}" for v in row))
    return "\n".join(lines)
