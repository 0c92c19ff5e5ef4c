"""Window normalisation shared by the build, the baselines and the runtime (pure numpy).

Two steps, in this order, per channel:

1. if ``per_window``: each window is standardised by its own mean and standard
   deviation (floored at ``1e-6``, so a flat window becomes zeros). Absolute
   level and scale are dropped; the waveform shape is kept.
2. ``(x - mean) / std`` with constants measured on the training windows
   (after step 1) and shipped in the manifest.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

STD_FLOOR = 1e-6


def standardise_per_window(x: np.ndarray) -> np.ndarray:
    """Z-score every ``(..., C, L)`` window along ``L``; float32."""
    arr = np.asarray(x, dtype=np.float64)  # float64: a flat float32 window must give zeros
    mu = arr.mean(axis=-1, keepdims=True)
    sd = np.maximum(arr.std(axis=-1, keepdims=True), STD_FLOOR)
    out: np.ndarray = ((arr - mu) / sd).astype(np.float32)
    return out


def apply_norm(x: np.ndarray, *, mean: Sequence[float], std: Sequence[float],
               per_window: bool) -> np.ndarray:
    """Steps 1-2 of the module docstring on ``(C, L)`` or ``(B, C, L)`` windows."""
    arr = standardise_per_window(x) if per_window else np.asarray(x, dtype=np.float32)
    m = np.asarray(mean, np.float32)[:, None]
    s = np.asarray(std, np.float32)[:, None]
    out: np.ndarray = (arr - m) / s
    return out
