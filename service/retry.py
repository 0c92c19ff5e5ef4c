"""Retry policy of the ledger client: exponential backoff, jitter, total deadline (pure).

Theory of operation: :func:`call_with_retry` runs one attempt; when it
raises :class:`TransientError` and the request is *idempotent*, it sleeps and
tries again, until an attempt succeeds, ``max_attempts`` attempts were made,
or the next sleep would end after ``deadline_s`` (counted from the first
attempt). The sleep before retry ``n`` (1-based) is "equal jitter"::

    d = min(cap_s, base_s * 2 ** (n - 1));   sleep = d / 2 + uniform(0, d / 2)

so retries spread out (no thundering herd of gateways after a node restart)
yet never come back sooner than half the nominal backoff. A server's
``Retry-After`` hint, when larger, replaces the computed sleep (still
bounded by the deadline).

Idempotency is the caller's declaration. A GET is idempotent. ``POST
/v1/tx`` is idempotent by construction: the txid is the SHA-256 of the tx
bytes, both orderers store a tx at most once per txid (SQLite ``INSERT OR
IGNORE`` / etcd put-if-absent) and a second inclusion would fail the
``(key, nonce)`` replay rule, so sending the same bytes twice cannot apply
them twice. A non-idempotent call gets exactly one attempt: a lost response
cannot be told from a lost request, so blindly repeating it could act twice.

Which failures are retryable is decided by the caller (the HTTP client: a
refused/reset/timed-out connection, 502/503/504, 429); a 4xx answer or a
plain 500 means retrying would get the same answer and is raised at once.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

__all__ = ["DEFAULT_RETRY", "NO_RETRY", "RetryPolicy", "TransientError", "call_with_retry"]

T = TypeVar("T")


class TransientError(Exception):
    """Wraps a transient failure; ``retry_after`` is the server's hint in seconds."""

    def __init__(self, cause: Exception, retry_after: float | None = None) -> None:
        super().__init__(str(cause))
        self.cause = cause
        self.retry_after = retry_after


@dataclass(frozen=True, slots=True, kw_only=True)
class RetryPolicy:
    max_attempts: int = 6
    base_s: float = 0.1
    cap_s: float = 2.0
    deadline_s: float = 8.0

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be >= 1")
        if not (0 < self.base_s <= self.cap_s) or not 0 <= self.deadline_s < 3600:
            raise ValueError("need 0 < base_s <= cap_s and 0 <= deadline_s < 3600")

    def backoff(self, retry: int, rng: Callable[[], float] = random.random) -> float:
        """Sleep before retry number ``retry`` (1-based), equal jitter."""
        d = min(self.cap_s, self.base_s * 2 ** min(retry - 1, 30))
        return float(d / 2 + rng() * d / 2)


NO_RETRY = RetryPolicy(max_attempts=1, deadline_s=0.0)
# ~3 s of retries in the worst case (0.1+0.2+0.4+0.8+1.6), inside 8 s: rides
# through a node restart, gives up before a gateway poll loop stalls for long
DEFAULT_RETRY = RetryPolicy()


def call_with_retry(attempt: Callable[[], T], policy: RetryPolicy, *, idempotent: bool,
                    clock: Callable[[], float] = time.monotonic,
                    sleep: Callable[[float], None] = time.sleep,
                    rng: Callable[[], float] = random.random) -> T:
    """Run ``attempt`` under ``policy``; re-raises the last ``TransientError``'s cause."""
    start = clock()
    n = 0
    while True:
        n += 1
        try:
            return attempt()
        except TransientError as exc:
            if not idempotent or n >= policy.max_attempts:
                raise exc.cause from exc.__cause__
            delay = policy.backoff(n, rng)
            if exc.retry_after is not None:
                delay = max(delay, min(exc.retry_after, policy.cap_s))
            if clock() + delay - start > policy.deadline_s:
                raise exc.cause from exc.__cause__
            sleep(delay)
