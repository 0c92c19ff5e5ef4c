"""Per-record L2 clipping: the bound every DP release and every evaluator applies.

Pure. :func:`clip_rows` scales each row (axis 0 = one record) into the ball of
radius ``clip_norm``; rows inside stay as they are. The agent's Gaussian
mechanism (:mod:`agent.privacy.mechanisms`) clips before adding noise, and the
held-out evaluators (:mod:`models.evaluate`) clip the same way, so the server
half is measured on the inputs it is trained for.
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

from protocol.errors import PrivacyError

__all__ = ["clip_rows"]

FloatArray = npt.NDArray[np.floating]


def clip_rows(a: npt.ArrayLike, *, clip_norm: float) -> FloatArray:
    """Scale every row (axis 0 = record) so its flattened L2 norm is at most ``clip_norm``.

    Rows already inside the ball, including all-zero rows, are returned unchanged.
    Non-finite inputs are rejected: a NaN row has no norm to bound.
    """
    if not (isinstance(clip_norm, int | float) and math.isfinite(clip_norm) and clip_norm > 0):
        raise PrivacyError(f"clip_norm must be a finite number > 0, got {clip_norm!r}")
    arr = np.asarray(a, dtype=np.float64)
    if arr.ndim < 1:
        raise PrivacyError("clip_rows needs an array with a record axis (ndim >= 1)")
    if not np.all(np.isfinite(arr)):
        raise PrivacyError("clip_rows: input contains NaN or Inf")
    flat = arr.reshape(arr.shape[0], -1)
    norms = np.linalg.norm(flat, axis=1)
    scale = np.ones_like(norms)
    over = norms > clip_norm
    scale[over] = clip_norm / norms[over]
    out: FloatArray = (flat * scale[:, None]).reshape(arr.shape)
    return out
