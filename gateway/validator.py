"""A validator organisation's votes on model candidates, sans I/O.

Theory of operation. The server announces each candidate (both halves) on
``central/{org}/down`` and submits its ``model_propose`` concurrently, so a
candidate usually arrives before its proposal is in a block. The gateway app
hands every announced candidate to :meth:`VoteTracker.add` and, on each
ledger poll, the session's proposal records to :meth:`VoteTracker.observe`.
A vote is *pending* from ``add`` until one of:

* the ledger records this org's vote on the proposal (``voted``);
* the proposal is decided or can no longer take votes: finalised,
  superseded (``superseded_by`` or a higher version proposed), a finalised
  version at or above it, or a record of that version with other hashes
  (``dropped``);
* its vote was refused ``max_invalid`` times (``dropped``), or it waited
  ``max_age_s`` for its proposal (``dropped``).

Per pending vote, in order: wait for the proposal record (a vote before it
would be invalid); have the app evaluate the candidate once
(:meth:`needs_evaluation` -> :meth:`set_vote`); sign once and submit
(:meth:`due`). A submit error (connection reset, ledger down) backs off
exponentially and resends the *same bytes*; so does a missing receipt after
``receipt_timeout_s``. The ledger keys txs by their hash, so a resend that
already landed is a no-op, never a second, invalid vote. An invalid receipt
is counted and, unless the reason means the vote is moot (already voted,
finalised, superseded), a fresh tx is signed after a backoff. The clock is
passed in; nothing here does I/O.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = ["Backoff", "VoteDone", "VoteOutcome", "VoteRequest", "VoteTracker"]


@dataclass(frozen=True, slots=True)
class Backoff:
    """Exponential retry delays: ``initial_s``, doubled per failure, capped at ``max_s``."""

    initial_s: float = 1.0
    max_s: float = 30.0

    def delay(self, failures: int) -> float:
        return float(min(self.max_s, self.initial_s * 2.0 ** max(0, failures - 1)))


class VoteOutcome(enum.Enum):
    VOTED = "voted"  # this org's vote is on the ledger
    DROPPED = "dropped"  # the vote is moot or cannot be cast


@dataclass(frozen=True, slots=True)
class VoteDone:
    version: int
    outcome: VoteOutcome
    reason: str
    body: Mapping[str, Any] | None  # the vote cast (None if never evaluated)


@dataclass(frozen=True, slots=True)
class VoteRequest:
    """Submit the vote on ``version``: ``raw`` to resend, ``None`` = sign ``body``."""

    version: int
    body: Mapping[str, Any]
    raw: bytes | None


@dataclass(slots=True)
class _Pending:
    session: str
    version: int
    weights_sha256: str
    added_at: float
    proposed: bool = False
    body: Mapping[str, Any] | None = None
    raw: bytes | None = None
    txid: str | None = None
    sent_at: float | None = None
    failures: int = 0
    invalid: int = 0
    not_before: float = 0.0


_MOOT = ("already finalised", "superseded", "no such proposal")


class VoteTracker:
    """Pending votes of one validator org; see the module docstring."""

    def __init__(
        self,
        *,
        org: str,
        backoff: Backoff = Backoff(),
        receipt_timeout_s: float = 30.0,
        max_invalid: int = 3,
        max_age_s: float = 3600.0,
    ) -> None:
        self.org = org
        self.backoff = backoff
        self.receipt_timeout_s = receipt_timeout_s
        self.max_invalid = max_invalid
        self.max_age_s = max_age_s
        self._pending: dict[int, _Pending] = {}
        self._settled: dict[int, str] = {}  # version -> weights hash of settled votes
        self._done: list[VoteDone] = []
        self.invalid = 0  # invalid vote receipts, all versions

    def __contains__(self, version: int) -> bool:
        return version in self._pending

    @property
    def versions(self) -> list[int]:
        return sorted(self._pending)

    def add(self, *, session: str, version: int, weights_sha256: str, now: float) -> bool:
        """A candidate was announced; ``False`` if already pending or settled (re-announced)."""
        old = self._pending.get(version)
        if (old is not None and old.weights_sha256 == weights_sha256) or self._settled.get(
            version
        ) == weights_sha256:
            return False
        self._pending[version] = _Pending(session, version, weights_sha256, added_at=now)
        return True

    def take_done(self) -> list[VoteDone]:
        """Votes settled since the last call (the app logs, publishes, forgets them)."""
        out, self._done = self._done, []
        return out

    def _finish(self, p: _Pending, outcome: VoteOutcome, reason: str) -> None:
        self._pending.pop(p.version, None)
        self._settled[p.version] = p.weights_sha256
        while len(self._settled) > 64:  # only recent versions are ever re-announced
            del self._settled[min(self._settled)]
        self._done.append(VoteDone(p.version, outcome, reason, p.body))

    # -- the ledger's view ---------------------------------------------------------
    def observe(
        self, records: Sequence[Mapping[str, Any]], *, latest_finalised: int | None, now: float
    ) -> None:
        """Apply the session's proposal records (``GET /v1/model``) and latest version."""
        by_version = {r.get("version"): r for r in records}
        head = max((v for v in by_version if isinstance(v, int)), default=0)
        for p in list(self._pending.values()):
            rec = by_version.get(p.version)
            if (
                latest_finalised is not None
                and latest_finalised >= p.version
                and (rec is None or not rec.get("finalised"))
            ):
                self._finish(p, VoteOutcome.DROPPED, f"version {latest_finalised} is finalised")
            elif rec is None:
                if head > p.version:
                    self._finish(p, VoteOutcome.DROPPED, f"version {head} was proposed since")
                elif now - p.added_at >= self.max_age_s:
                    self._finish(p, VoteOutcome.DROPPED, "its proposal never reached the ledger")
            elif rec.get("weights_sha256") != p.weights_sha256:
                self._finish(p, VoteOutcome.DROPPED, "the ledger's proposal has other weights")
            elif self.org in dict(rec.get("votes") or {}):
                self._finish(p, VoteOutcome.VOTED, "vote recorded")
            elif rec.get("finalised"):
                self._finish(p, VoteOutcome.DROPPED, "finalised without this vote")
            elif rec.get("superseded_by") is not None:
                self._finish(p, VoteOutcome.DROPPED, f"superseded by {rec['superseded_by']}")
            else:
                p.proposed = True

    def needs_evaluation(self) -> list[tuple[str, int]]:
        """``(session, version)`` of proposed candidates not yet evaluated."""
        return [
            (p.session, p.version)
            for p in sorted(self._pending.values(), key=lambda p: p.version)
            if p.proposed and p.body is None
        ]

    def set_vote(self, version: int, body: Mapping[str, Any]) -> None:
        p = self._pending.get(version)
        if p is not None and p.body is None:
            p.body = dict(body)

    def drop(self, version: int, reason: str) -> None:
        p = self._pending.get(version)
        if p is not None:
            self._finish(p, VoteOutcome.DROPPED, reason)

    # -- submitting ----------------------------------------------------------------
    def due(self, now: float) -> list[VoteRequest]:
        out = []
        for p in sorted(self._pending.values(), key=lambda p: p.version):
            if not p.proposed or p.body is None:
                continue
            if p.sent_at is not None and now - p.sent_at >= self.receipt_timeout_s:
                p.sent_at = None  # no receipt: resend the same bytes
            if p.sent_at is None and now >= p.not_before:
                out.append(VoteRequest(p.version, p.body, p.raw))
        return out

    def signed(self, version: int, raw: bytes, txid: str) -> None:
        p = self._pending[version]
        p.raw, p.txid = raw, txid

    def sent(self, version: int, now: float) -> None:
        p = self._pending.get(version)
        if p is not None:
            p.sent_at, p.failures = now, 0

    def send_failed(self, version: int, now: float) -> float:
        """A submit error: back off, resend the same bytes later; returns the delay."""
        p = self._pending.get(version)
        if p is None:
            return 0.0
        p.failures += 1
        d = self.backoff.delay(p.failures)
        p.not_before = now + d
        return d

    def awaiting(self) -> list[tuple[int, str]]:
        """``(version, txid)`` of submitted votes without a receipt yet."""
        return [
            (p.version, p.txid)
            for p in sorted(self._pending.values(), key=lambda p: p.version)
            if p.sent_at is not None and p.txid is not None
        ]

    def on_receipt(self, version: int, *, valid: bool, reason: str | None, now: float) -> None:
        p = self._pending.get(version)
        if p is None:
            return
        if valid:
            self._finish(p, VoteOutcome.VOTED, "vote tx valid")
            return
        why = reason or "invalid"
        self.invalid += 1
        p.invalid += 1
        p.raw = p.txid = p.sent_at = None  # a fresh tx (new nonce) if it is tried again
        if "already voted" in why:  # an earlier tx of ours landed first
            self._finish(p, VoteOutcome.VOTED, why)
        elif any(m in why for m in _MOOT):
            self._finish(p, VoteOutcome.DROPPED, f"vote refused: {why}")
        elif p.invalid >= self.max_invalid:
            self._finish(p, VoteOutcome.DROPPED, f"{p.invalid} votes refused, last: {why}")
        else:
            p.not_before = now + self.backoff.delay(p.invalid)
