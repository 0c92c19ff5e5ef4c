"""The gateway's view of one training round, restart-safe.

Theory of operation. A :class:`GatewayRound` is created when the server
starts a round (``open``). While OPEN it takes accepted activation batches:
each batch's *original signed bytes* become one leaf of the round's RFC 6962
Merkle tree (leaf hash = SHA-256(0x00 || bytes), so an auditor holding a
captured envelope can prove its inclusion with :mod:`protocol.merkle`), and
the batch size is added to the device's sample count. Accepted client-half
weights are kept per device (the last one per device wins). ``close`` builds
the group aggregate (FedAvg) and the round-record body and moves to CLOSED;
``abandon`` moves to ABANDONED (no record is written; the server retries the
round). Every state change is first written to a :class:`RoundJournal`
(SQLite in :mod:`gateway.journal`), and only then acted upon (forwarded), so
a gateway that restarts replays its journal with :meth:`GatewayRound.restore`
and recognises every (device, seq) it already counted: nothing is counted
twice, and a redelivered message becomes a duplicate.

Forwarding. A journaled message keeps its original bytes until it is known
to have reached the server: ``mark_forwarded`` (the broker acknowledged the
gateway's forward) or a gradient for it. :meth:`GatewayRound.unforwarded`
lists what a restarted gateway must forward again (it was journaled, then
the process died before the forward left it; the device's redelivery is a
duplicate, so without this the batch would be lost while its device waits
out its gradient timeout).

Sample counts and FedAvg weights: a batch's rows count for its device only
once the server's gradient for it passes through the gateway
(:meth:`GatewayRound.mark_trained`): that is the batch the device trains on.
A batch the server never answered (lost, refused, late) is a Merkle leaf
(it was admitted) but no sample. A device's weight in the group average is
``min(claimed num_samples, trained rows of this round)``; a device that sent
weights but had no batch trained this round is left out. Epsilon: devices declare their cumulative
spend in every message; the record carries, per device, the cumulative
value and the increase over what the ledger already holds for it, so the sum
of recorded increases equals the device accountant's cumulative epsilon.
Pure; not thread-safe.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from gateway.errors import RoundStateError
from models.fedavg import WeightedUpdate, fedavg
from protocol.merkle import leaf_hash, root_from_hashes

__all__ = [
    "GatewayRound",
    "InMemoryJournal",
    "JournalEntry",
    "Phase",
    "RoundJournal",
    "RoundResult",
]

WeightsHasher = Callable[[tuple[np.ndarray, ...]], str]


class Phase(enum.Enum):
    OPEN = "open"
    CLOSED = "closed"
    ABANDONED = "abandoned"


@dataclass(frozen=True, slots=True, kw_only=True)
class JournalEntry:
    """One durable event of a round (what :class:`RoundJournal` stores)."""

    kind: str  # "open" | "leaf" | "weights" | "forwarded" | "trained" | "phase"
    device: str = ""
    seq: int = -1
    samples: int = 0
    epsilon: float = 0.0
    leaf: bytes = b""
    weights: tuple[np.ndarray, ...] = ()
    info: Mapping[str, Any] = field(default_factory=dict)
    data: bytes = b""  # "leaf"/"weights": the original bytes, kept until forwarded


class RoundJournal(Protocol):
    """Durable, ordered log of one gateway's round events."""

    def append(self, session: str, round_no: int, entry: JournalEntry) -> None: ...

    def load(self, session: str, round_no: int) -> list[JournalEntry]: ...


class InMemoryJournal:
    """A journal kept in memory (unit tests; a gateway without a state dir)."""

    def __init__(self) -> None:
        self._log: dict[tuple[str, int], list[JournalEntry]] = {}

    def append(self, session: str, round_no: int, entry: JournalEntry) -> None:
        self._log.setdefault((session, round_no), []).append(entry)

    def load(self, session: str, round_no: int) -> list[JournalEntry]:
        return list(self._log.get((session, round_no), []))


@dataclass(frozen=True, slots=True, kw_only=True)
class RoundResult:
    """What a closed round produced: the group aggregate and the ledger record body."""

    aggregate: tuple[np.ndarray, ...] | None
    aggregate_sha256: str | None
    num_samples: int
    record: dict[str, Any]
    weights_dp: str = "unprotected"  # "dp_sgd" only if every averaged upload was DP-SGD


class GatewayRound:
    """State of one (session, round) at one gateway; see the module docstring."""

    def __init__(
        self,
        *,
        org: str,
        session: str,
        round_no: int,
        journal: RoundJournal,
        prior_epsilon: Mapping[str, float] | None = None,
        _replaying: bool = False,
    ) -> None:
        self.org = org
        self.session = session
        self.round_no = round_no
        self.phase = Phase.OPEN
        self._journal = journal
        self._prior = dict(prior_epsilon or {})
        self._leaves: list[bytes] = []
        self._seen: set[tuple[str, int]] = set()
        self._samples: dict[str, int] = {}  # trained rows per device
        self._rows: dict[tuple[str, int], int] = {}  # rows of every leaf
        self._trained: set[tuple[str, int]] = set()
        self._unforwarded: dict[tuple[str, int], bytes] = {}
        self._epsilon: dict[str, float] = {}
        self._weights: dict[str, tuple[int, tuple[np.ndarray, ...]]] = {}
        self._weights_dp: dict[str, str] = {}
        if not _replaying:
            journal.append(
                session,
                round_no,
                JournalEntry(kind="open", info={"org": org, "prior": dict(self._prior)}),
            )

    # -- restart ---------------------------------------------------------------
    @classmethod
    def restore(
        cls, *, org: str, session: str, round_no: int, journal: RoundJournal
    ) -> GatewayRound | None:
        """Rebuild a round from its journal; ``None`` if it was never opened."""
        entries = journal.load(session, round_no)
        if not entries or entries[0].kind != "open":
            return None
        prior = {str(k): float(v) for k, v in dict(entries[0].info.get("prior", {})).items()}
        r = cls(
            org=org,
            session=session,
            round_no=round_no,
            journal=journal,
            prior_epsilon=prior,
            _replaying=True,
        )
        for e in entries[1:]:
            r._apply(e)
        return r

    def _apply(self, e: JournalEntry) -> None:
        key = (e.device, e.seq)
        if e.kind == "leaf":
            self._leaves.append(e.leaf)
            self._seen.add(key)
            self._rows[key] = e.samples
            self._samples.setdefault(e.device, 0)
            self._epsilon[e.device] = max(self._epsilon.get(e.device, 0.0), e.epsilon)
            if e.data:
                self._unforwarded[key] = e.data
        elif e.kind == "weights":
            self._weights_dp[e.device] = str(e.info.get("weights_dp", "unprotected"))
            self._seen.add(key)
            self._weights[e.device] = (e.samples, e.weights)
            self._epsilon[e.device] = max(self._epsilon.get(e.device, 0.0), e.epsilon)
            if e.data:
                self._unforwarded[key] = e.data
        elif e.kind == "forwarded":
            self._unforwarded.pop(key, None)
        elif e.kind == "trained":
            self._unforwarded.pop(key, None)
            if key in self._rows and key not in self._trained:
                self._trained.add(key)
                self._samples[e.device] = self._samples.get(e.device, 0) + self._rows[key]
        elif e.kind == "phase":
            self.phase = Phase(str(e.info["phase"]))

    # -- events ----------------------------------------------------------------
    def seen(self, device: str, seq: int) -> bool:
        """Whether (device, seq) was already counted in this round (also after restart)."""
        return (device, seq) in self._seen

    def seen_items(self) -> list[tuple[str, int]]:
        """Every counted (device, seq), to re-seed a replay guard after restart."""
        return sorted(self._seen)

    def add_activation(
        self, *, device: str, seq: int, data: bytes, rows: int, epsilon_total: float
    ) -> int | None:
        """Journal and count one accepted batch; its leaf index, or ``None`` if seen."""
        self._require_open()
        if (device, seq) in self._seen:
            return None
        entry = JournalEntry(
            kind="leaf",
            device=device,
            seq=seq,
            samples=rows,
            epsilon=epsilon_total,
            leaf=leaf_hash(data),
            data=data,
        )
        self._journal.append(self.session, self.round_no, entry)
        self._apply(entry)
        return len(self._leaves) - 1

    def add_weights(
        self,
        *,
        device: str,
        seq: int,
        num_samples: int,
        weights: tuple[np.ndarray, ...],
        epsilon_total: float,
        weights_dp: str = "unprotected",
        data: bytes = b"",
    ) -> bool:
        """Journal one accepted client-half upload; ``False`` if already seen.

        ``data``: the original bytes, kept until :meth:`mark_forwarded`.
        """
        self._require_open()
        if (device, seq) in self._seen:
            return False
        entry = JournalEntry(
            kind="weights",
            device=device,
            seq=seq,
            samples=num_samples,
            epsilon=epsilon_total,
            weights=weights,
            info={"weights_dp": weights_dp},
            data=data,
        )
        self._journal.append(self.session, self.round_no, entry)
        self._apply(entry)
        return True

    def mark_forwarded(self, device: str, seq: int) -> bool:
        """The forward of (device, seq) reached the broker; ``False`` if nothing to mark."""
        if (device, seq) not in self._unforwarded:
            return False
        entry = JournalEntry(kind="forwarded", device=device, seq=seq)
        self._journal.append(self.session, self.round_no, entry)
        self._apply(entry)
        return True

    def mark_trained(self, device: str, seq: int) -> int | None:
        """The server's gradient for batch (device, seq) went to the device: count its rows.

        Returns the rows counted, ``None`` if the batch is not a leaf of this round, was
        counted already, or the round is no longer open (the record is fixed at close).
        """
        key = (device, seq)
        if self.phase is not Phase.OPEN or key not in self._rows or key in self._trained:
            return None
        entry = JournalEntry(kind="trained", device=device, seq=seq)
        self._journal.append(self.session, self.round_no, entry)
        self._apply(entry)
        return self._rows[key]

    def unforwarded(self) -> list[tuple[str, int, bytes]]:
        """Journaled messages whose forward was never confirmed, in journal order."""
        return [(d, s, b) for (d, s), b in self._unforwarded.items()]

    # -- views -----------------------------------------------------------------
    @property
    def leaf_count(self) -> int:
        return len(self._leaves)

    def merkle_root(self) -> bytes:
        return root_from_hashes(self._leaves)

    def devices_with_weights(self) -> set[str]:
        return set(self._weights)

    def devices_active(self) -> set[str]:
        return {d for d, n in self._samples.items() if n > 0}

    def samples(self, device: str) -> int:
        return self._samples.get(device, 0)

    # -- end -------------------------------------------------------------------
    def close(self, *, hasher: WeightsHasher, group: str = "") -> RoundResult:
        """Average the group's weights and build the round-record body; OPEN -> CLOSED."""
        self._require_open()
        result = self.result(hasher=hasher, group=group)
        self._set_phase(Phase.CLOSED)
        return result

    def result(self, *, hasher: WeightsHasher, group: str = "") -> RoundResult:
        """The aggregate and record body from the current state (deterministic).

        A gateway restarted after ``close`` calls this again to resubmit the
        same record (the ledger refuses a second record for the same round).
        """
        updates = [
            WeightedUpdate(weights=ws, num_samples=min(claimed, self._samples[d]), source=d)
            for d, (claimed, ws) in sorted(self._weights.items())
            if self._samples.get(d, 0) > 0 and claimed > 0
        ]
        aggregate = fedavg(updates) if updates else None
        agg_hash = hasher(aggregate) if aggregate is not None else None
        devices = {}
        for d in sorted(set(self._samples) | set(self._weights)):
            total = self._epsilon.get(d, 0.0)
            devices[d] = {
                "samples": self._samples.get(d, 0),
                "epsilon": max(0.0, total - self._prior.get(d, 0.0)),
                "epsilon_total": total,
            }
        record = {
            "session_id": self.session,
            "round": self.round_no,
            "org": self.org,
            "group": group or self.org,
            "envelopes_root": self.merkle_root().hex(),
            "envelope_count": len(self._leaves),
            "devices": devices,
            "aggregate_sha256": agg_hash or "",
            "aggregated_devices": [u.source for u in updates],
        }
        return RoundResult(
            aggregate=aggregate,
            aggregate_sha256=agg_hash,
            num_samples=sum(u.num_samples for u in updates),
            record=record,
            weights_dp="dp_sgd"
            if updates and all(self._weights_dp.get(u.source) == "dp_sgd" for u in updates)
            else "unprotected",
        )

    def abandon(self, reason: str) -> None:
        """Give the round up (no record); the server will run it again."""
        if self.phase is Phase.OPEN:
            self._set_phase(Phase.ABANDONED, reason=reason)

    def _set_phase(self, phase: Phase, reason: str = "") -> None:
        entry = JournalEntry(kind="phase", info={"phase": phase.value, "reason": reason})
        self._journal.append(self.session, self.round_no, entry)
        self._apply(entry)

    def _require_open(self) -> None:
        if self.phase is not Phase.OPEN:
            raise RoundStateError(f"round {self.session}/{self.round_no} is {self.phase.value}")
