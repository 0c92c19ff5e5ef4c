"""Canary scores from what crossed the wire (pure given the runtimes; higher = "included").

Three scores, one per thing an attacker can see (docs/audit.md):

* :func:`row_distance_scores` (split modes): the auditor recomputes each
  canary's row with the client half published at session start (clipped to
  the declared ``clip_norm`` unless the messages say ``mechanism = none``)
  and scores it by minus its distance to the nearest row the device sent.
  An included canary was sent as "its row + noise"; an excluded one was not
  sent at all.
* :func:`weight_update_scores` (client halves that are uploaded:
  ``sl-dpsgd`` and, later, ``fl-dpsgd``): the update ``dW`` of the first
  layer between the published and the uploaded client half, projected on
  the canary's normalised input: ``|| x_i^T dW || / ||x_i||``. A gradient
  step on canary ``i`` moves the first layer by ``x_i (outer) delta_i``,
  which this projection picks out (update alignment).
* :func:`loss_scores` (the finalised model): minus the canary's
  cross-entropy under the final client + server halves.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from audit.canaries import CanaryPlan
from audit.capture import DeviceCapture
from audit.errors import AuditError
from models.clip import clip_rows
from models.runtime import ClientRuntime, ServerRuntime

__all__ = ["canary_rows", "forward_all", "loss_scores", "losses", "row_distance_scores",
           "weight_update_scores"]

F64 = npt.NDArray[np.float64]


def forward_all(rt: ClientRuntime, windows: npt.NDArray[np.floating]) -> F64:
    """Client-half activations of raw ``windows`` ``(N, C, L)``, flattened to ``(N, d)``."""
    x = rt.normalise(np.asarray(windows, np.float32)).astype(np.float32)
    b = rt.manifest.max_batch
    parts = [rt.forward(x[i:i + b]) for i in range(0, len(x), b)]
    out = np.concatenate(parts).astype(np.float64)
    return out.reshape(len(x), -1)


def canary_rows(rt: ClientRuntime, plan: CanaryPlan, capture: DeviceCapture) -> F64:
    """The rows the device would send for each canary, before noise (as declared on the wire)."""
    if not capture.rows:
        raise AuditError(f"no activation batches of device {capture.device} in the capture")
    dp = capture.rows[0].dp
    rows = forward_all(rt, plan.windows())
    if dp.mechanism == "none":
        return rows
    return np.asarray(clip_rows(rows, clip_norm=dp.clip_norm), np.float64)


def received_rows(capture: DeviceCapture) -> F64:
    return np.concatenate([m.activations.reshape(m.activations.shape[0], -1)
                           for m in capture.rows]).astype(np.float64)


def _min_dist(a: F64, b: F64, chunk: int = 512) -> F64:
    out = np.empty(len(a))
    bb = (b * b).sum(axis=1)
    for i in range(0, len(a), chunk):
        ai = a[i:i + chunk]
        d2 = (ai * ai).sum(axis=1)[:, None] + bb[None, :] - 2.0 * ai @ b.T
        out[i:i + chunk] = np.sqrt(np.maximum(d2.min(axis=1), 0.0))
    return out


def _log_kernel_sum(a: F64, b: F64, sigma: float, chunk: int = 256) -> F64:
    """``log sum_j exp(-||a_i - b_j||^2 / (2 sigma^2))`` per row of ``a`` (stable)."""
    out = np.empty(len(a))
    bb = (b * b).sum(axis=1)
    for i in range(0, len(a), chunk):
        ai = a[i:i + chunk]
        d2 = np.maximum((ai * ai).sum(axis=1)[:, None] + bb[None, :] - 2.0 * ai @ b.T, 0.0)
        e = -d2 / (2.0 * sigma * sigma)
        top = e.max(axis=1)
        out[i:i + chunk] = top + np.log(np.exp(e - top[:, None]).sum(axis=1))
    return out


def row_distance_scores(rt: ClientRuntime, plan: CanaryPlan, capture: DeviceCapture,
                        versions: Sequence[Sequence[npt.NDArray[np.floating]]] = ()) -> F64:
    """How well the rows the device sent explain each canary's row.

    With declared Gaussian noise sigma = z*C: the log of the summed Gaussian
    likelihoods of all received rows around the canary's row (a canary sent in
    several epochs adds up); without noise: minus the distance to the nearest row.
    ``versions``: further client halves the attacker saw (uploads); the canary's
    row is recomputed with each (the runtime's own weights first) and the best
    score kept, since a client half that trains moves the rows it sends. The
    runtime's weights are restored.
    """
    got = received_rows(capture)
    dp = capture.rows[0].dp
    sigma = dp.noise_multiplier * dp.clip_norm
    own = rt.get_weights()
    best: F64 | None = None
    try:
        for ws in (own, *versions):
            rt.set_weights(ws)
            ref = canary_rows(rt, plan, capture)
            s = (-_min_dist(ref, got) if dp.mechanism == "none" or sigma <= 0
                 else _log_kernel_sum(ref, got, sigma))
            best = s if best is None else np.maximum(best, s)
    finally:
        rt.set_weights(own)
    assert best is not None
    return best


def weight_update_scores(rt: ClientRuntime, plan: CanaryPlan,
                         initial: Sequence[npt.NDArray[np.floating]],
                         uploaded: Sequence[npt.NDArray[np.floating]]) -> F64:
    """Alignment of the first layer's update with each canary's normalised input."""
    w0, w1 = np.asarray(initial[0], np.float64), np.asarray(uploaded[0], np.float64)
    x = rt.normalise(plan.windows()).astype(np.float64).reshape(plan.m, -1)
    if w0.shape != w1.shape or w0.ndim != 2 or w0.shape[0] != x.shape[1]:
        raise AuditError(f"first client layer {w0.shape} does not take flat inputs of "
                         f"{x.shape[1]}: no update-alignment score for this architecture")
    proj = x @ (w1 - w0)
    out: F64 = np.linalg.norm(proj, axis=1) / np.maximum(np.linalg.norm(x, axis=1), 1e-12)
    return out


def losses(client: ClientRuntime, server: ServerRuntime, windows: npt.NDArray[np.floating],
           labels: npt.NDArray[np.integer]) -> F64:
    """Per-example cross-entropy of the final model (the runtimes' current weights)."""
    acts = forward_all(client, windows).astype(np.float32)
    acts = acts.reshape(len(acts), *client.manifest.activation_shape)
    b = server.manifest.max_batch
    probs = np.concatenate([server.predict(acts[i:i + b]) for i in range(0, len(acts), b)])
    p = probs[np.arange(len(labels)), np.asarray(labels, np.int64)].astype(np.float64)
    out: F64 = -np.log(np.clip(p, 1e-12, 1.0))
    return out


def loss_scores(client: ClientRuntime, server: ServerRuntime, plan: CanaryPlan) -> F64:
    out: F64 = -losses(client, server, plan.windows(), plan.labels())
    return out
