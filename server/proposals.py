"""Model versions on the ledger: numbering, proposal bodies, finalisation status.

Theory of operation. After a round the server evaluates the aggregated
model and proposes version ``v+1`` (``model_propose`` tx). Validator
organisations evaluate it on their own held-out data and vote
(``model_vote``); once accepting votes reach the session's ``vote_quorum``
anyone may submit ``model_finalise`` and the contract records the version as
finalised. The server then starts the next round from it. If enough
validators reject that the quorum can no longer be reached, the proposal is
*rejected*: the server reloads the last finalised weights and runs the round
again; devices keep the previous version. Pure: the ledger records are
passed in as mappings (the shape written by ``ledger_node.contracts``).

:class:`ProposalLifecycle` drives one proposal from its ``model_propose`` to
a decision, sans I/O (the app signs, submits and reads receipts; the clock is
passed in). Rules, in the order they protect liveness:

* A proposal is matched on the ledger by version *and* weights hash. A
  record of that version with another hash, or one marked ``superseded_by``,
  means this proposal can never be finalised: outcome ``ABANDONED``.
* One tx in flight at a time. Its signed bytes are kept and resubmitted
  unchanged after a submit error (exponential backoff, ``Backoff``) or when
  no receipt came within ``receipt_timeout_s``: the ledger keys txs by their
  hash, so a resubmission that already landed is a no-op, never a
  duplicate. A fresh tx (new nonce) is signed only after a receipt.
* An invalid receipt is counted; after ``max_invalid`` of them the proposal
  is ``ABANDONED`` (an ``already proposed`` conflict at once). Nothing is
  resubmitted in a loop the contract will reject.
* ``model_finalise`` is sent once the record shows a vote quorum, by this
  server only; a valid receipt is the decision (``FINALISED``), it is not
  sent again on a stale status read.
* Half-way to the deadline without a quorum the candidate is announced to
  the gateways once more (:meth:`ProposalLifecycle.reannounce_due`).
* No decision within ``deadline_s`` of the start: ``EXPIRED`` (never while a
  finalise awaits its receipt). The consortium's quorum is never lowered: the
  server drops the candidate, trains the next round from the last finalised
  version, and that round's proposal supersedes this one on the ledger.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from protocol.errors import ConfigError

__all__ = [
    "Backoff",
    "Proposal",
    "ProposalLifecycle",
    "ProposalStatus",
    "TxRequest",
    "next_version",
    "open_proposal",
    "proposal_status",
]


def _hex64(v: str) -> bool:
    return len(v) == 64 and all(c in "0123456789abcdef" for c in v)


@dataclass(frozen=True, slots=True, kw_only=True)
class Proposal:
    """A model version proposed to the consortium."""

    session_id: str
    version: int
    round: int
    weights_sha256: str  # canonical hash of the client-half weights devices will load
    client_sha256: str  # client artifact (.tflite) hash
    server_sha256: str
    metrics: Mapping[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        problems = []
        if self.version < 1:
            problems.append("version must be >= 1")
        for name in ("weights_sha256", "client_sha256", "server_sha256"):
            if not _hex64(getattr(self, name)):
                problems.append(f"{name} must be 64 lowercase hex characters")
        for k, v in self.metrics.items():
            if not math.isfinite(v):
                problems.append(f"metric {k} is not finite")
        if problems:
            raise ConfigError(problems)

    def body(self) -> dict[str, Any]:
        """The ``model_propose`` tx body."""
        return {
            "session_id": self.session_id,
            "version": self.version,
            "round": self.round,
            "weights_sha256": self.weights_sha256,
            "client_sha256": self.client_sha256,
            "server_sha256": self.server_sha256,
            "metrics": {k: float(v) for k, v in sorted(self.metrics.items())},
        }


def next_version(*, latest_finalised: int | None, last_proposed: int | None) -> int:
    """The next version number: above both the finalised and any earlier proposal."""
    return max(latest_finalised or 0, last_proposed or 0) + 1


class ProposalStatus(enum.Enum):
    PENDING = "pending"
    FINALISABLE = "finalisable"  # quorum of accepts reached, finalise tx not yet in
    FINALISED = "finalised"
    REJECTED = "rejected"  # quorum no longer reachable
    EXPIRED = "expired"  # no decision before the server's proposal deadline
    ABANDONED = "abandoned"  # superseded, version taken by another proposal, or too many invalid


def proposal_status(
    record: Mapping[str, Any] | None, *, vote_quorum: int, validators: int
) -> ProposalStatus:
    """Status of a proposal from its ledger record (``None`` = not yet in a block)."""
    if record is None:
        return ProposalStatus.PENDING
    if record.get("finalised"):
        return ProposalStatus.FINALISED
    if record.get("superseded_by") is not None:
        return ProposalStatus.ABANDONED
    votes = dict(record.get("votes", {}))
    accepts = sum(1 for v in votes.values() if dict(v).get("accept") is True)
    if accepts >= vote_quorum:
        return ProposalStatus.FINALISABLE
    if accepts + (validators - len(votes)) < vote_quorum:
        return ProposalStatus.REJECTED
    return ProposalStatus.PENDING


def open_proposal(
    records: Sequence[Mapping[str, Any]], *, latest_finalised: int
) -> Mapping[str, Any] | None:
    """The session's proposal still awaiting a decision (the highest one), if any."""
    best: Mapping[str, Any] | None = None
    for r in records:
        v = r.get("version")
        if isinstance(v, int) and (best is None or v > int(best["version"])):
            best = r
    if (
        best is None
        or best.get("finalised")
        or best.get("superseded_by") is not None
        or int(best["version"]) <= latest_finalised
    ):
        return None
    return best


@dataclass(frozen=True, slots=True)
class Backoff:
    """Exponential retry delays: ``initial_s``, doubled per failure, capped at ``max_s``."""

    initial_s: float = 0.5
    max_s: float = 30.0

    def delay(self, failures: int) -> float:
        return float(min(self.max_s, self.initial_s * 2.0 ** max(0, failures - 1)))


@dataclass(frozen=True, slots=True)
class TxRequest:
    """Submit a ``kind`` tx: ``raw`` is the bytes to resend, ``None`` = sign ``body`` afresh."""

    kind: str
    body: Mapping[str, Any]
    raw: bytes | None


@dataclass(slots=True)
class _InFlight:
    kind: str
    body: Mapping[str, Any]
    raw: bytes | None = None
    txid: str | None = None
    sent_at: float | None = None  # None: not (successfully) submitted yet
    failures: int = 0
    not_before: float = 0.0


class ProposalLifecycle:
    """One proposal from ``model_propose`` to a decision; see the module docstring."""

    def __init__(
        self,
        proposal: Proposal,
        *,
        now: float,
        deadline_s: float,
        on_ledger: bool = False,
        max_invalid: int = 3,
        receipt_timeout_s: float = 30.0,
        backoff: Backoff = Backoff(),
    ) -> None:
        self.proposal = proposal
        self.deadline = now + deadline_s
        self._reannounce_at: float | None = now + deadline_s / 2
        self.max_invalid = max_invalid
        self.receipt_timeout_s = receipt_timeout_s
        self.backoff = backoff
        self.invalid = 0  # invalid receipts for this proposal's txs
        self.outcome = ProposalStatus.PENDING
        self.reason = ""
        self._on_ledger = on_ledger
        self._finalisable = False
        self._tx: _InFlight | None = None
        self._not_before = 0.0  # after an invalid receipt: no fresh tx before this

    @property
    def decided(self) -> bool:
        return self.outcome not in (ProposalStatus.PENDING, ProposalStatus.FINALISABLE)

    @property
    def status(self) -> ProposalStatus:
        if self.decided:
            return self.outcome
        return ProposalStatus.FINALISABLE if self._finalisable else ProposalStatus.PENDING

    @property
    def awaiting_receipt(self) -> str | None:
        """The txid whose receipt the app should look up, if one was submitted."""
        t = self._tx
        return None if t is None or t.sent_at is None else t.txid

    @property
    def in_flight_kind(self) -> str | None:
        """The kind of the tx being submitted, if any."""
        return None if self._tx is None else self._tx.kind

    def _decide(self, outcome: ProposalStatus, reason: str) -> ProposalStatus:
        self.outcome, self.reason, self._tx = outcome, reason, None
        return outcome

    def _finalise_body(self) -> dict[str, Any]:
        p = self.proposal
        return {
            "session_id": p.session_id,
            "version": p.version,
            "weights_sha256": p.weights_sha256,
            "client_sha256": p.client_sha256,
            "server_sha256": p.server_sha256,
        }

    def reannounce_due(self, now: float) -> bool:
        """True once, half-way to the deadline, while votes are missing: the app sends the
        candidate to the gateways again (one that restarted after taking the first
        announcement but before voting has it again; settled votes are not cast twice)."""
        if self.decided or self._finalisable or self._reannounce_at is None:
            return False
        if now < self._reannounce_at:
            return False
        self._reannounce_at = None
        return True

    # -- what to submit --------------------------------------------------------------
    def due(self, now: float) -> TxRequest | None:
        """The tx to submit now, if any (call :meth:`signed` for a fresh one, then
        :meth:`sent` or :meth:`send_failed`)."""
        if self.decided:
            return None
        t = self._tx
        if t is not None:
            if t.sent_at is not None and now - t.sent_at >= self.receipt_timeout_s:
                t.sent_at = None  # no receipt: resend the same bytes (idempotent by txid)
            if t.sent_at is not None or now < t.not_before:
                return None
            return TxRequest(kind=t.kind, body=t.body, raw=t.raw)
        if now < self._not_before:
            return None
        if not self._on_ledger:
            self._tx = _InFlight(kind="model_propose", body=self.proposal.body())
        elif self._finalisable:
            self._tx = _InFlight(kind="model_finalise", body=self._finalise_body())
        else:
            return None
        return TxRequest(kind=self._tx.kind, body=self._tx.body, raw=None)

    def signed(self, raw: bytes, txid: str) -> None:
        assert self._tx is not None and self._tx.raw is None
        self._tx.raw, self._tx.txid = raw, txid

    def sent(self, now: float) -> None:
        if self._tx is not None:
            self._tx.sent_at, self._tx.failures = now, 0

    def send_failed(self, now: float) -> float:
        """A submit error (ledger unreachable): back off; returns the delay."""
        if self._tx is None:
            return 0.0
        self._tx.failures += 1
        d = self.backoff.delay(self._tx.failures)
        self._tx.not_before = now + d
        return d

    # -- what the ledger says ----------------------------------------------------------
    def on_receipt(self, *, valid: bool, reason: str | None, now: float) -> ProposalStatus:
        t = self._tx
        if t is None:
            return self.status
        self._tx = None
        if valid:
            if t.kind == "model_propose":
                self._on_ledger = True
                return self.status
            return self._decide(ProposalStatus.FINALISED, "finalise tx valid")
        why = reason or "invalid"
        if t.kind == "model_finalise" and "already finalised" in why:
            # another party's finalise landed first: the (fresh) record decides
            self._finalisable = False
            self._not_before = now + self.backoff.delay(1)
            return self.status
        self.invalid += 1
        if t.kind == "model_propose" and (
            "already proposed" in why or "not above" in why or "not newer" in why
        ):
            return self._decide(ProposalStatus.ABANDONED, f"{t.kind} invalid: {why}")
        if self.invalid >= self.max_invalid:
            return self._decide(
                ProposalStatus.ABANDONED, f"{self.invalid} invalid txs, last: {why}"
            )
        self._not_before = now + self.backoff.delay(self.invalid)
        return self.status

    def observe(
        self,
        record: Mapping[str, Any] | None,
        *,
        vote_quorum: int,
        validators: int,
        now: float,
    ) -> ProposalStatus:
        """Apply the ledger's record of this version (``None``: not in a block yet)."""
        if self.decided:
            return self.outcome
        p = self.proposal
        if record is not None:
            if any(
                record.get(k) != getattr(p, k)
                for k in ("weights_sha256", "client_sha256", "server_sha256")
            ):
                return self._decide(
                    ProposalStatus.ABANDONED,
                    f"version {p.version} on the ledger is another proposal",
                )
            self._on_ledger = True
            if self._tx is not None and self._tx.kind == "model_propose":
                self._tx = None  # its receipt may be lost: the record is what counts
            status = proposal_status(record, vote_quorum=vote_quorum, validators=validators)
            if status is ProposalStatus.FINALISED:
                return self._decide(status, "finalised on the ledger")
            if status is ProposalStatus.ABANDONED:
                return self._decide(status, f"superseded by version {record.get('superseded_by')}")
            if status is ProposalStatus.REJECTED:
                return self._decide(status, "vote quorum no longer reachable")
            self._finalisable = status is ProposalStatus.FINALISABLE
        finalising = (
            self.awaiting_receipt is not None
            and self._tx is not None
            and (self._tx.kind == "model_finalise")
        )
        if now >= self.deadline and not finalising:
            return self._decide(ProposalStatus.EXPIRED, "no decision before the deadline")
        return self.status
