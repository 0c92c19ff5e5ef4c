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
"""

from __future__ import annotations

import enum
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from protocol.errors import ConfigError

__all__ = ["Proposal", "ProposalStatus", "next_version", "proposal_status", "vote_decision"]


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


def proposal_status(
    record: Mapping[str, Any] | None, *, vote_quorum: int, validators: int
) -> ProposalStatus:
    """Status of a proposal from its ledger record (``None`` = not yet in a block)."""
    if record is None:
        return ProposalStatus.PENDING
    if record.get("finalised"):
        return ProposalStatus.FINALISED
    votes = dict(record.get("votes", {}))
    accepts = sum(1 for v in votes.values() if dict(v).get("accept") is True)
    if accepts >= vote_quorum:
        return ProposalStatus.FINALISABLE
    if accepts + (validators - len(votes)) < vote_quorum:
        return ProposalStatus.REJECTED
    return ProposalStatus.PENDING


def vote_decision(
    *,
    candidate_accuracy: float,
    baseline_accuracy: float | None,
    max_drop: float = 0.05,
    min_accuracy: float = 0.0,
) -> bool:
    """A validator's vote: accept unless the candidate is worse than allowed.

    Accept when accuracy on the validator's own held-out data is finite, at
    least ``min_accuracy``, and at most ``max_drop`` below the currently
    finalised version (``baseline_accuracy``; ``None`` for the first version).
    A corrupted aggregate (NaN weights, garbage) fails these checks.
    """
    if not math.isfinite(candidate_accuracy) or candidate_accuracy < min_accuracy:
        return False
    return baseline_accuracy is None or candidate_accuracy >= baseline_accuracy - max_drop
