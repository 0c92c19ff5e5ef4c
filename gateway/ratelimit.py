"""Log each (device, reason) at most once per interval.

An attacker (or a broken device) can send thousands of bad messages per
second; the gateway counts every one in its metrics but writes a log line for
a given (device, reason) pair at most once per ``interval`` seconds, with the
number suppressed since the last line. Pure: the clock is injected. The table
is bounded (``max_keys``); when full, the oldest entries are forgotten, which
at worst lets one extra line through.

Closing a window. The suppressed count must not wait for the same reason to
recur (it may never recur): :meth:`LogLimiter.expired`, called periodically,
returns a :class:`Suppressed` summary for every key whose window has closed
with events suppressed in it; that summary counts as the key's line (the
next event within ``interval`` of it is suppressed again). Keys whose window
closed with nothing suppressed are dropped, so the next event logs at once.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["LogDecision", "LogLimiter", "Suppressed"]


@dataclass(frozen=True, slots=True, kw_only=True)
class LogDecision:
    """Whether to log now, and how many events were suppressed since the last line."""

    emit: bool
    suppressed: int


@dataclass(frozen=True, slots=True, kw_only=True)
class Suppressed:
    """``suppressed`` events of (device, reason) not logged in the window just closed."""

    device: str
    reason: str
    suppressed: int
    interval: float


class LogLimiter:
    """``check(device, reason)`` says whether a log line may be written now."""

    def __init__(
        self, *, clock: Callable[[], float], interval: float = 60.0, max_keys: int = 10_000
    ) -> None:
        if interval <= 0 or max_keys < 1:
            raise ValueError("interval must be > 0 and max_keys >= 1")
        self._clock = clock
        self._interval = interval
        self._max = max_keys
        # key -> (time of last emitted line, suppressed since)
        self._seen: OrderedDict[tuple[str, str], tuple[float, int]] = OrderedDict()

    def check(self, device: str | None, reason: str) -> LogDecision:
        """Record one event; ``emit`` is true at most once per interval per key."""
        key = (device or "-", reason)
        now = self._clock()
        prev = self._seen.get(key)
        if prev is not None and now - prev[0] < self._interval:
            self._seen[key] = (prev[0], prev[1] + 1)
            return LogDecision(emit=False, suppressed=prev[1] + 1)
        suppressed = 0 if prev is None else prev[1]
        self._seen[key] = (now, 0)
        self._seen.move_to_end(key)
        while len(self._seen) > self._max:
            self._seen.popitem(last=False)
        return LogDecision(emit=True, suppressed=suppressed)

    def expired(self) -> list[Suppressed]:
        """Summaries of the windows closed since the last call (see module docstring)."""
        now = self._clock()
        out: list[Suppressed] = []
        # entries are ordered by the time of their last line: stop at the first still open
        for key, (last, suppressed) in list(self._seen.items()):
            if now - last < self._interval:
                break
            if suppressed:
                out.append(Suppressed(device=key[0], reason=key[1], suppressed=suppressed,
                                      interval=self._interval))
                self._seen[key] = (now, 0)
                self._seen.move_to_end(key)
            else:
                del self._seen[key]
        return out
