"""The device side of a training round (pure state machine).

Theory of operation
-------------------
The server, through the gateway, sends ``start_round`` (round r, steps K,
batch size, learning rate) on the device's ``down`` topic. The device then
releases up to K activation batches, never more than ``max_pending`` waiting
for gradients at once. Every batch *finishes* when its gradient was applied
or it expired. When all K finished, or ``stop_round``/``upload_weights``
arrives, the device owes the round its client-half weights; once uploaded it
is idle until the next ``start_round``.

Stale or duplicate commands (QoS 1 redelivery, a ``start_round`` for a round
already done) change nothing. A device whose privacy budget is exhausted is
*halted*: it releases no more activations, ever, but still answers
``upload_weights`` so the round can close (weights trained by plain SGD are
declared unprotected; DP-SGD weights were accounted step by step).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from protocol.errors import SplitfedError

__all__ = ["DeviceRound", "Phase", "RoundPlan"]


class Phase(enum.Enum):
    IDLE = "idle"
    TRAINING = "training"
    UPLOAD_DUE = "upload_due"


@dataclass(frozen=True, slots=True, kw_only=True)
class RoundPlan:
    session: str
    round: int
    steps: int
    batch_size: int
    lr: float

    def __post_init__(self) -> None:
        if self.round < 0 or self.steps < 1 or self.batch_size < 1 or not self.lr > 0:
            raise SplitfedError(f"invalid round plan {self}")


class DeviceRound:
    """Where this device is in the session's rounds."""

    def __init__(self, *, session: str | None = None, last_completed: int = -1) -> None:
        self.session = session
        self.phase = Phase.IDLE
        self.plan: RoundPlan | None = None
        self.last_completed = last_completed
        self.released = 0
        self.finished = 0
        self.halted_reason: str | None = None

    @property
    def halted(self) -> bool:
        return self.halted_reason is not None

    def start(self, plan: RoundPlan) -> bool:
        """Begin ``plan``; False (ignored) if stale, a duplicate, or another session."""
        if self.session is not None and plan.session != self.session:
            return False
        if plan.round <= self.last_completed:
            return False
        if self.plan is not None and plan.round <= self.plan.round and self.phase != Phase.IDLE:
            return False
        self.session = plan.session
        self.plan = plan
        self.phase = Phase.TRAINING
        self.released = 0
        self.finished = 0
        return True

    def stop(self, round_no: int) -> bool:
        """Server closed round ``round_no``: weights are due now (if we were in it)."""
        if self.plan is None or self.plan.round != round_no or self.phase == Phase.IDLE:
            return False
        self.phase = Phase.UPLOAD_DUE
        return True

    def halt(self, reason: str) -> None:
        """Stop releasing activations for good (e.g. budget exhausted)."""
        self.halted_reason = reason

    def may_release(self, *, pending_full: bool) -> bool:
        return (self.phase == Phase.TRAINING and not self.halted and not pending_full
                and self.plan is not None and self.released < self.plan.steps)

    def note_released(self) -> int:
        """A batch left; returns its step number within the round."""
        if self.phase != Phase.TRAINING:
            raise SplitfedError("released a batch outside a training round")
        step = self.released
        self.released += 1
        return step

    def note_finished(self, round_no: int, n: int = 1) -> None:
        """``n`` batches of round ``round_no`` got their gradient applied or expired."""
        if self.plan is None or round_no != self.plan.round or self.phase != Phase.TRAINING:
            return
        self.finished += n
        if self.finished >= self.plan.steps:
            self.phase = Phase.UPLOAD_DUE

    def note_no_more_releases(self, pending: int) -> None:
        """Halted (or out of data) with nothing in flight: close the round early."""
        if self.phase == Phase.TRAINING and pending == 0 and self.halted:
            self.phase = Phase.UPLOAD_DUE

    def note_uploaded(self) -> None:
        if self.plan is None or self.phase != Phase.UPLOAD_DUE:
            raise SplitfedError("uploaded weights without a round that owes them")
        self.last_completed = self.plan.round
        self.phase = Phase.IDLE
