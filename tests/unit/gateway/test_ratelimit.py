"""Log limiter: one line per (device, reason) per interval; the suppressed count is not lost."""

from __future__ import annotations

import pytest

from gateway.ratelimit import LogLimiter, Suppressed


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def test_one_line_per_interval_then_the_count() -> None:
    c = Clock()
    lim = LogLimiter(clock=c, interval=60.0)
    assert lim.check("d1", "replay").emit
    assert [lim.check("d1", "replay").emit for _ in range(5)] == [False] * 5
    assert lim.check("d2", "replay").emit  # another key is independent
    c.t += 60.0
    d = lim.check("d1", "replay")
    assert d.emit and d.suppressed == 5


def test_suppressed_count_emitted_when_the_window_closes_without_recurrence() -> None:
    c = Clock()
    lim = LogLimiter(clock=c, interval=60.0)
    lim.check("d1", "replay")
    for _ in range(3):
        lim.check("d1", "replay")
    lim.check("d2", "oversize")  # nothing suppressed for d2
    c.t += 59.9
    assert lim.expired() == []  # window still open
    c.t += 0.1
    assert lim.expired() == [Suppressed(device="d1", reason="replay", suppressed=3,
                                        interval=60.0)]
    assert lim.expired() == []  # reported once
    # the summary counts as the line: an event right after it is suppressed ...
    assert not lim.check("d1", "replay").emit
    # ... and reported when that window closes
    c.t += 60.0
    assert [s.suppressed for s in lim.expired()] == [1]
    # d2's window closed with nothing suppressed: its next event logs at once
    assert lim.check("d2", "oversize").emit
    c.t += 60.0
    assert lim.expired() == []
    assert lim.check("d1", "replay").emit  # idle key forgotten, logs immediately


def test_bad_arguments() -> None:
    with pytest.raises(ValueError):
        LogLimiter(clock=Clock(), interval=0)
