"""When does a round close? Quorum of finished devices, or a deadline.

Theory of operation. A :class:`RoundTracker` is started with the devices
expected (those online at round start; may be empty) and the time. Devices
that send their first batch after the start are *late joiners*: they are
added and may finish like anyone else. A device *finishes* when its gateway
reports its client-half weights. The round closes when

- every participant finished (``all_done``), or
- at least ``min_devices`` finished and ``min_fraction`` of the participants
  finished (``quorum``), or
- the deadline passed (``deadline``): the round is *usable* if at least
  ``min_devices_to_commit`` finished, otherwise it is abandoned and run again.

Dropouts (devices that never finish) and late joiners are normal and do not
raise. Pure: time is passed in by the caller.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Iterable
from dataclasses import dataclass

from protocol.errors import ConfigError

__all__ = ["CloseReason", "Decision", "RoundPolicy", "RoundTracker"]


@dataclass(frozen=True, slots=True, kw_only=True)
class RoundPolicy:
    """Closing rule of a round."""

    min_devices: int = 1
    min_fraction: float = 1.0
    deadline_s: float = 120.0
    min_devices_to_commit: int = 1

    def __post_init__(self) -> None:
        problems = []
        if self.min_devices < 1:
            problems.append("min_devices must be >= 1")
        if not 0.0 < self.min_fraction <= 1.0:
            problems.append("min_fraction must be in (0, 1]")
        if not (self.deadline_s > 0 and math.isfinite(self.deadline_s)):
            problems.append("deadline_s must be > 0")
        if self.min_devices_to_commit < 1:
            problems.append("min_devices_to_commit must be >= 1")
        if problems:
            raise ConfigError(problems)


class CloseReason(enum.Enum):
    ALL_DONE = "all_done"
    QUORUM = "quorum"
    DEADLINE = "deadline"


@dataclass(frozen=True, slots=True, kw_only=True)
class Decision:
    """``close``: stop the round now; ``commit``: aggregate it (else abandon and retry)."""

    close: bool
    commit: bool
    reason: CloseReason | None
    finished: int
    participants: int


class RoundTracker:
    """Participants and finishers of one round."""

    def __init__(
        self, *, policy: RoundPolicy, started_at: float, expected: Iterable[str] = ()
    ) -> None:
        self.policy = policy
        self.started_at = started_at
        self._participants: set[str] = set(expected)
        self._finished: set[str] = set()
        self._late: set[str] = set()
        self._closed = False

    def joined(self, device: str) -> None:
        """A device sent its first batch of the round (late joiners included)."""
        if self._closed or device in self._participants:
            return
        self._participants.add(device)
        self._late.add(device)

    def finished(self, device: str) -> None:
        """A device's weights for the round arrived."""
        if self._closed:
            return
        self.joined(device)
        self._finished.add(device)

    @property
    def late_joiners(self) -> frozenset[str]:
        return frozenset(self._late)

    @property
    def finishers(self) -> frozenset[str]:
        return frozenset(self._finished)

    def decide(self, now: float) -> Decision:
        """Whether to close now; once it says close, the tracker stops changing."""
        p = self.policy
        n_fin, n_part = len(self._finished), len(self._participants)
        reason: CloseReason | None = None
        if n_part and n_fin == n_part and n_fin >= p.min_devices:
            reason = CloseReason.ALL_DONE
        elif n_fin >= p.min_devices and n_fin >= math.ceil(p.min_fraction * n_part):
            reason = CloseReason.QUORUM
        elif now - self.started_at >= p.deadline_s:
            reason = CloseReason.DEADLINE
        if reason is None:
            return Decision(
                close=False, commit=False, reason=None, finished=n_fin, participants=n_part
            )
        self._closed = True
        return Decision(
            close=True,
            commit=n_fin >= p.min_devices_to_commit,
            reason=reason,
            finished=n_fin,
            participants=n_part,
        )
