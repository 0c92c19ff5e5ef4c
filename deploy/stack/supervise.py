"""Restart policy of the stack's services, like systemd's ``Restart=on-failure`` (pure).

Theory of operation
-------------------
A service that exits on its own with a non-zero status (or is killed by a
signal) has *failed*; one that exits with status 0 has *finished* and is not
restarted (the server exits 0 when its session is done). After a failure the
supervisor waits ``backoff_s * 2**k`` seconds (``RestartSec``, doubled for
each restart already made inside the window, capped at ``max_backoff_s``)
and starts the same command again, with the same configuration, state
directory and log file. More than ``max_restarts`` restarts inside
``window_s`` seconds (``StartLimitBurst`` / ``StartLimitIntervalSec``) and the
supervisor gives up: the service stays down and the run fails with the
service's last log lines, as ``systemctl`` shows a unit in the *failed* state.

Defaults: 1 s first backoff, doubling to at most 8 s, 5 restarts per 300 s;
the worst case from a crash loop to giving up is 1+2+4+8+8 = 23 s of backoff
plus five start-ups. :func:`decide` holds the rule; time is passed in, so it
is tested without sleeping. :class:`deploy.stack.procs.ProcessGroup` applies it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from protocol.errors import ConfigError

__all__ = ["GiveUp", "RestartAt", "RestartEvent", "RestartPolicy", "decide", "failed"]


@dataclass(frozen=True, slots=True, kw_only=True)
class RestartPolicy:
    max_restarts: int = 5        # StartLimitBurst
    window_s: float = 300.0      # StartLimitIntervalSec
    backoff_s: float = 1.0       # RestartSec of the first restart
    max_backoff_s: float = 8.0

    def __post_init__(self) -> None:
        problems = []
        if self.max_restarts < 0:
            problems.append("max_restarts must be >= 0")
        for name in ("window_s", "backoff_s", "max_backoff_s"):
            v = getattr(self, name)
            if not (math.isfinite(v) and v >= 0):
                problems.append(f"{name} must be a finite number >= 0")
        if problems:
            raise ConfigError(problems)

    @property
    def worst_case_backoff_s(self) -> float:
        """Total backoff of a crash loop, from the first failure to giving up."""
        return sum(min(self.backoff_s * 2.0**k, self.max_backoff_s)
                   for k in range(self.max_restarts))


@dataclass(frozen=True, slots=True)
class RestartAt:
    """Restart at monotonic time ``at``; ``attempt`` counts restarts inside the window."""

    at: float
    attempt: int


@dataclass(frozen=True, slots=True)
class GiveUp:
    """The restart limit is reached: leave the service down."""

    restarts_in_window: int


@dataclass(frozen=True, slots=True, kw_only=True)
class RestartEvent:
    """What the supervisor did, for the progress output and the summary."""

    service: str
    exit_code: int
    attempt: int                 # 1 for the first restart inside the window
    delay_s: float
    at_s: float                  # seconds since the run started
    gave_up: bool = False

    def describe(self) -> str:
        why = f"killed by signal {-self.exit_code}" if self.exit_code < 0 else (
            f"exit {self.exit_code}")
        if self.gave_up:
            return (f"supervisor: {self.service} failed ({why}); restart limit reached, "
                    f"giving up")
        return (f"supervisor: {self.service} failed ({why}); restart {self.attempt} in "
                f"{self.delay_s:.0f} s")

    def as_dict(self) -> dict[str, object]:
        return {"service": self.service, "exit_code": self.exit_code, "attempt": self.attempt,
                "delay_s": self.delay_s, "at_s": round(self.at_s, 1), "gave_up": self.gave_up}


def failed(returncode: int | None) -> bool:
    """``Restart=on-failure``: a non-zero exit status or death by a signal."""
    return returncode is not None and returncode != 0


def decide(policy: RestartPolicy, restarts: Sequence[float], now: float) -> RestartAt | GiveUp:
    """What to do about a failure at ``now`` given the times of earlier restarts."""
    recent = [t for t in restarts if now - t < policy.window_s]
    if len(recent) >= policy.max_restarts:
        return GiveUp(len(recent))
    delay = min(policy.backoff_s * 2.0 ** len(recent), policy.max_backoff_s)
    return RestartAt(at=now + delay, attempt=len(recent) + 1)
