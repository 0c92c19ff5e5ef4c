"""Retry policy: backoff bounds, jitter, deadline, idempotency (pure, fake clock)."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from ledger_node.errors import NotFoundError, OrderingError
from service.retry import NO_RETRY, RetryPolicy, TransientError, call_with_retry


class FakeTime:
    def __init__(self) -> None:
        self.now = 100.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, s: float) -> None:
        self.sleeps.append(s)
        self.now += s


def _flaky(fails: int, *, retry_after: float | None = None
           ) -> tuple[list[int], Callable[[], str]]:
    calls: list[int] = []

    def attempt() -> str:
        calls.append(1)
        if len(calls) <= fails:
            raise TransientError(OrderingError("reset"), retry_after)
        return "ok"
    return calls, attempt


@pytest.mark.parametrize(("rng", "expect"), [(0.0, [0.05, 0.1, 0.2, 0.4, 0.8]),
                                              (1.0, [0.1, 0.2, 0.4, 0.8, 1.6])])
def test_backoff_doubles_with_equal_jitter_bounds(rng: float, expect: list[float]) -> None:
    p = RetryPolicy()
    assert [p.backoff(n, lambda: rng) for n in range(1, 6)] == pytest.approx(expect)
    assert p.backoff(40, lambda: 1.0) == pytest.approx(p.cap_s)  # capped, no overflow


def test_succeeds_after_transient_failures() -> None:
    t = FakeTime()
    calls, attempt = _flaky(3)
    assert call_with_retry(attempt, RetryPolicy(), idempotent=True, clock=t.clock,
                           sleep=t.sleep, rng=lambda: 0.5) == "ok"
    assert len(calls) == 4 and len(t.sleeps) == 3
    assert t.sleeps == pytest.approx([0.075, 0.15, 0.3])


def test_non_idempotent_gets_one_attempt() -> None:
    t = FakeTime()
    calls, attempt = _flaky(1)
    with pytest.raises(OrderingError, match="reset"):
        call_with_retry(attempt, RetryPolicy(), idempotent=False, clock=t.clock,
                        sleep=t.sleep)
    assert len(calls) == 1 and t.sleeps == []


def test_gives_up_at_max_attempts_and_at_the_deadline() -> None:
    t = FakeTime()
    calls, attempt = _flaky(100)
    with pytest.raises(OrderingError):
        call_with_retry(attempt, RetryPolicy(max_attempts=4), idempotent=True,
                        clock=t.clock, sleep=t.sleep, rng=lambda: 1.0)
    assert len(calls) == 4
    t2 = FakeTime()
    calls2, attempt2 = _flaky(100)
    policy = RetryPolicy(max_attempts=100, base_s=0.1, cap_s=1.0, deadline_s=3.0)
    with pytest.raises(OrderingError):
        call_with_retry(attempt2, policy, idempotent=True, clock=t2.clock,
                        sleep=t2.sleep, rng=lambda: 1.0)
    assert sum(t2.sleeps) <= 3.0  # never sleeps past the deadline
    assert sum(t2.sleeps) + 1.0 > 3.0  # and does not give up while a retry still fits
    assert len(calls2) == len(t2.sleeps) + 1


def test_retry_after_hint_is_honoured_up_to_the_cap() -> None:
    t = FakeTime()
    _, attempt = _flaky(2, retry_after=1.0)
    call_with_retry(attempt, RetryPolicy(), idempotent=True, clock=t.clock,
                    sleep=t.sleep, rng=lambda: 0.0)
    assert t.sleeps == [1.0, 1.0]
    t2 = FakeTime()
    _, attempt2 = _flaky(1, retry_after=3600.0)
    call_with_retry(attempt2, RetryPolicy(), idempotent=True, clock=t2.clock,
                    sleep=t2.sleep, rng=lambda: 0.0)
    assert t2.sleeps == [2.0]  # a hostile hint cannot park the client


def test_permanent_errors_are_not_retried() -> None:
    calls: list[int] = []

    def attempt() -> None:
        calls.append(1)
        raise NotFoundError("no block")
    with pytest.raises(NotFoundError):
        call_with_retry(attempt, RetryPolicy(), idempotent=True)
    assert calls == [1]


def test_no_retry_and_bad_policies() -> None:
    t = FakeTime()
    calls, attempt = _flaky(1)
    with pytest.raises(OrderingError):
        call_with_retry(attempt, NO_RETRY, idempotent=True, clock=t.clock,
                        sleep=t.sleep)
    assert len(calls) == 1
    for bad in ({"max_attempts": 0}, {"base_s": 0.0}, {"base_s": 3.0, "cap_s": 2.0},
                {"deadline_s": float("nan")}, {"deadline_s": -1.0}):
        with pytest.raises(ValueError):
            RetryPolicy(**bad)
