"""The one-run canary audit of a captured session (orchestration; I/O only via its inputs).

:func:`audit_capture` computes every canary score the capture allows
(:mod:`audit.scores`), runs the one-run test (:mod:`audit.bound`) on each,
and corrects for having tried several scores: each score family is tested at
``1 - (1 - confidence) / families`` (Bonferroni, on top of the per-family
correction over abstention pairs), so the largest bound holds at the stated
confidence. The device is *flagged* when that bound exceeds the epsilon it
reported; ``strength`` is the bound a perfect attack could have shown with
this ``m`` (a claim above it cannot be refuted by this audit, whatever the
device does).
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from audit.bound import OneRunResult, audit_scores, max_reachable_bound
from audit.canaries import CanaryPlan
from audit.capture import DeviceCapture
from audit.errors import AuditError
from audit.metrics import auc
from audit.scores import loss_scores, row_distance_scores, weight_update_scores
from models.runtime import ClientRuntime, ServerRuntime

__all__ = ["CanaryAudit", "audit_capture", "canaries_needed"]


@dataclass(frozen=True, slots=True, kw_only=True)
class CanaryAudit:
    device: str
    reported_epsilon: float
    delta: float
    confidence: float
    per_score: dict[str, OneRunResult]
    score_auc: dict[str, float]

    @property
    def best(self) -> tuple[str, OneRunResult]:
        return max(self.per_score.items(), key=lambda kv: kv[1].epsilon_lower_bound)

    @property
    def epsilon_lower_bound(self) -> float:
        return self.best[1].epsilon_lower_bound

    @property
    def flagged(self) -> bool:
        return self.epsilon_lower_bound > self.reported_epsilon

    @property
    def strength(self) -> float:
        return self.best[1].max_reachable

    def note(self) -> str:
        lb, eps = self.epsilon_lower_bound, self.reported_epsilon
        if self.flagged:
            return (f"FLAGGED: the empirical lower bound {lb:.3g} exceeds the reported epsilon "
                    f"{eps:.3g} at {self.confidence:.0%} confidence: the device's claim is false")
        if not np.isfinite(eps):
            return (f"non-private session (reported epsilon is infinite): nothing to refute; "
                    f"the attack's lower bound {lb:.3g} shows what crossed the wire "
                    f"(a perfect attack with {self.best[1].m} canaries shows {self.strength:.3g})")
        need = canaries_needed(eps, delta=self.delta, confidence=self.confidence,
                               families=len(self.per_score))
        strength = (f"with {self.best[1].m} canaries a perfect attack shows at most "
                    f"{self.strength:.3g}")
        if need is None:
            more = ("no number of canaries could refute it with this test (the bound "
                    f"saturates at delta {self.delta:g})")
        else:
            more = (f"refuting epsilon {eps:.3g} needs at least {need} canaries and "
                    "near-perfect scores")
        return (f"not refuted: lower bound {lb:.3g} <= reported {eps:.3g}; {strength}; {more}. "
                "A pass is consistent with the claim, it does not prove it.")

    def as_dict(self) -> dict[str, object]:
        name, best = self.best
        return {"device": self.device, "reported_epsilon": self.reported_epsilon,
                "delta": self.delta, "confidence": self.confidence,
                "epsilon_lower_bound": best.epsilon_lower_bound, "best_score": name,
                "flagged": self.flagged, "strength": self.strength, "note": self.note(),
                "per_score": {k: v.as_dict() for k, v in self.per_score.items()},
                "score_auc": self.score_auc}


def canaries_needed(epsilon: float, *, delta: float, confidence: float = 0.95,
                    families: int = 1) -> int | None:
    """Smallest m whose perfect attack would exceed ``epsilon``, or None if no m can.

    With delta > 0 the strongest bound saturates (the ``2 m delta`` term of the
    p-value grows with m): about 7.1 at delta = 1e-5 and 95%, reached near
    m = 16k canaries; above that no one-run audit refutes the claim.
    """
    if not np.isfinite(epsilon):
        return 2
    conf = 1.0 - (1.0 - confidence) / max(1, families)

    def strength(m: int) -> float:
        return max_reachable_bound(m=m, delta=delta, confidence=conf)

    lo, prev = 2, strength(2)
    if prev > epsilon:
        return 2
    hi = 4
    while True:
        cur = strength(hi)
        if cur > epsilon:
            break
        if (0 < cur <= prev) or hi >= 1 << 17:
            return None
        lo, prev, hi = hi, cur, hi * 2
    while hi - lo > max(1, lo // 100):
        mid = (lo + hi) // 2
        if strength(mid) > epsilon:
            hi = mid
        else:
            lo = mid
    return hi


def audit_capture(plan: CanaryPlan, capture: DeviceCapture, *, client: ClientRuntime,
                  delta: float, confidence: float = 0.95,
                  initial_weights: Sequence[npt.NDArray[np.floating]] | None = None,
                  final_server: ServerRuntime | None = None,
                  reported_epsilon: float | None = None) -> CanaryAudit:
    """Score every canary from ``capture`` (and the final model if given); one-run test.

    ``client`` holds the client half published at session start;
    ``initial_weights`` defaults to its weights. With ``final_server`` the
    loss score is computed on the final model: the uploaded client half if
    the capture has one, else the published one (``sl-frozen``).
    """
    if not capture.rows and not capture.weights:
        raise AuditError(f"nothing to score: the capture holds no activation batches or client "
                         f"weights of device {capture.device} (rejected: "
                         f"{dict(capture.rejected) or 'none'}, other devices: {capture.ignored})")
    inc = plan.included
    init = tuple(initial_weights) if initial_weights is not None else client.get_weights()
    scores: dict[str, npt.NDArray[np.float64]] = {}
    if capture.rows:
        scores["row_distance"] = row_distance_scores(
            client, plan, capture, versions=[w.weights for w in capture.weights])
    if capture.weights:
        # an architecture without a flat first layer has no such score
        with contextlib.suppress(AuditError):
            scores["weight_update"] = weight_update_scores(client, plan, init,
                                                           capture.weights[-1].weights)
    if final_server is not None:
        if capture.weights:
            client.set_weights(capture.weights[-1].weights)
        try:
            scores["final_loss"] = loss_scores(client, final_server, plan)
        finally:
            client.set_weights(init)
    if not scores:
        raise AuditError("no canary score applies to this capture (no rows, an uploaded client "
                         "half without a flat first layer, no final server half given)")
    n = len(scores)
    conf = 1.0 - (1.0 - confidence) / n
    per = {k: audit_scores(v, inc, delta=delta, confidence=conf) for k, v in scores.items()}
    per = {k: _restate(v, confidence) for k, v in per.items()}
    eps = capture.reported_epsilon if reported_epsilon is None else reported_epsilon
    return CanaryAudit(device=capture.device, reported_epsilon=eps, delta=delta,
                       confidence=confidence, per_score=per,
                       score_auc={k: auc(v, inc) for k, v in scores.items()})


def _restate(r: OneRunResult, confidence: float) -> OneRunResult:
    """The same result labelled with the overall (family-wise) confidence."""
    return OneRunResult(m=r.m, k_plus=r.k_plus, k_minus=r.k_minus, guesses=r.guesses,
                        correct=r.correct, epsilon_lower_bound=r.epsilon_lower_bound,
                        confidence=confidence, pairs_tried=r.pairs_tried,
                        max_reachable=r.max_reachable)
