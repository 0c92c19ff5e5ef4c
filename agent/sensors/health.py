"""Per-device failure bookkeeping: counters, retries and exponential backoff.

Theory of operation: a device is *ready* when the clock has passed its
``next_attempt``. Every successful read resets the failure streak. Every
failed read increments the counter of its kind and the streak ``k``; the
device then waits ``min(max_s, base_s * 2**(k-1))`` seconds, multiplied by a
random factor in ``[1 - jitter, 1 + jitter]``, before it is ready again.
Inside one read call, ``retries`` further attempts follow a failure (each
counted in ``retries``); a shared-bus scheduler instead makes one attempt
per turn and lets the backoff space them, so a dead device costs the bus
at most one timeout per backoff interval.

Pure: the clock value is passed in and the random source injected.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Literal

from agent.sensors.errors import SensorConfigError

FailureKind = Literal["timeout", "exception", "frame", "connection"]


@dataclass(frozen=True, slots=True, kw_only=True)
class BackoffPolicy:
    """Retry and backoff parameters of one device."""

    retries: int = 2
    base_s: float = 0.2
    max_s: float = 30.0
    jitter: float = 0.2

    def __post_init__(self) -> None:
        if self.retries < 0:
            raise SensorConfigError("retries must be >= 0")
        if not 0 < self.base_s <= self.max_s:
            raise SensorConfigError("need 0 < base_s <= max_s")
        if not 0.0 <= self.jitter < 1.0:
            raise SensorConfigError("jitter must be in [0, 1)")

    def delay(self, streak: int, rng: random.Random) -> float:
        """Seconds to wait after the ``streak``-th consecutive failure (streak >= 1)."""
        d = min(self.max_s, self.base_s * 2.0 ** min(streak - 1, 60))
        return d * (1.0 + rng.uniform(-self.jitter, self.jitter))


@dataclass(frozen=True, slots=True, kw_only=True)
class DeviceCounters:
    """Snapshot of one device's counters."""

    reads_ok: int = 0
    timeouts: int = 0
    exceptions: int = 0
    crc_errors: int = 0
    connection_errors: int = 0
    retries: int = 0
    capture_restarts: int = 0
    consecutive_failures: int = 0
    last_error: str | None = None

    @property
    def failures(self) -> int:
        """All failed attempts."""
        return self.timeouts + self.exceptions + self.crc_errors + self.connection_errors


class DeviceHealth:
    """Mutable counters + backoff state of one device (not thread-safe; one owner)."""

    def __init__(self, policy: BackoffPolicy, *, rng: random.Random | None = None) -> None:
        self.policy = policy
        self._rng = rng or random.Random()  # noqa: S311 - jitter, not security
        self._c: dict[str, int] = dict.fromkeys(
            ("reads_ok", "timeouts", "exceptions", "crc_errors", "connection_errors",
             "retries", "capture_restarts"), 0)
        self.streak = 0
        self.next_attempt = float("-inf")
        self.last_error: str | None = None

    def ready(self, now: float) -> bool:
        """Whether the device may be tried at time ``now``."""
        return now >= self.next_attempt

    def record_success(self) -> None:
        """A read succeeded: reset the streak, device is ready at once."""
        self._c["reads_ok"] += 1
        self.streak = 0
        self.next_attempt = float("-inf")

    def record_retry(self) -> None:
        """A further attempt follows a failure within the same read."""
        self._c["retries"] += 1

    def record_capture_restart(self) -> None:
        """A capture changed mid-read and is read again."""
        self._c["capture_restarts"] += 1

    def record_failure(self, kind: FailureKind, now: float, message: str = "") -> float:
        """Count a failed attempt, start/extend the backoff; returns the delay."""
        key = {"timeout": "timeouts", "exception": "exceptions", "frame": "crc_errors",
               "connection": "connection_errors"}[kind]
        self._c[key] += 1
        self.streak += 1
        self.last_error = f"{kind}: {message}" if message else kind
        delay = self.policy.delay(self.streak, self._rng)
        self.next_attempt = now + delay
        return delay

    def snapshot(self) -> DeviceCounters:
        """Plain copy of the counters."""
        return DeviceCounters(**self._c, consecutive_failures=self.streak,
                              last_error=self.last_error)
