"""Per-device privacy accountant with a crash-safe spend file.

Theory of operation
-------------------
The unit of privacy is ONE RECORD (one sensor window).  For every record r
the accountant keeps the total Gaussian-DP "energy" rho_r = sum mu_i^2 of the
Gaussian releases that touched r (activation rows and DP-SGD steps of batches
that contained r), and the pure epsilon eps_r of the label releases that
touched r.  Releases declared with ``records=None`` and every
Poisson-sampled step are charged to every record (a global tally).  The reported

    epsilon = composed_epsilon(rho = max_r rho_r + rho_global,
                               pure = max_r eps_r + eps_global, delta)

Using the two maxima separately (they may come from different records) can
only over-state the true max over records, never under-state it.  So the
guarantee is: every record the device holds is protected with
(epsilon, delta)-DP over EVERYTHING the device released through this
accountant, under the declared adjacency (``"replace"``: the record may take
any other value, sensitivity 2C; ``"zero_out"``: the record versus a null /
absent record, sensitivity C).  Amplification by subsampling is claimed only
for :class:`PoissonSampledGaussian` (record-level DP-FedAvg, where which
records were sampled never leaves the device), composed by ``dp_accounting``
PLD under the same adjacency.  A DP-SGD step in split learning is charged to
its batch with no amplification: the server sees which records' rows formed
the batch.

Audit log: every spend is appended (fsync) to ``<state>.events.jsonl`` before
the per-record table and the summary are written, one JSON line per release
with its events and record ids, so anyone can recompute the epsilon
independently (``tests/unit/agent/privacy/test_transcript.py`` does it with
``dp_accounting``).  A crash leaves the log ahead of the summary, never behind.

Storage: a small JSON summary ``<state>`` (global tallies, per-record maxima,
halted flag, SHA-256 checksum) plus the per-record tallies in SQLite
``<state>.records.db`` (:mod:`agent.privacy.record_store`), so a spend costs
O(records in the release), not O(records ever seen).

Crash safety: :meth:`Accountant.spend` computes the new state, refuses (and
persists a halted flag) if it would exceed the budget, otherwise commits the
touched per-record rows (fsync), then writes the JSON summary to a temp file,
fsyncs it, renames it over the state file and fsyncs the directory, all
BEFORE it returns.  A crash between the two writes leaves the table ahead of
the summary; on load the higher values win (over-count).  A table that is
behind the summary (deleted, rolled back) is refused.  The caller releases the message only
after ``spend`` returned, so a crash can at worst count a release that never
left, never the reverse.

Reset detection: a corrupt state file (bad JSON, bad checksum, wrong types)
raises :class:`AccountantStateError`; it is never replaced by zero.  On first
creation a marker file ``<state>.created`` is written (fsync) before the
state; if the marker (or the record table) exists but the state does not,
loading fails.  If both
are deleted the accountant cannot tell by itself: the Outbox cross-checks the
accountant's ``instance_id`` against the one recorded in the spool database.
What is NOT detected: an attacker (or operator) who replaces all three files
consistently, e.g. restores an old backup of the whole state directory.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from agent.privacy.composition import composed_epsilon, sensitivity_factor
from agent.privacy.errors import AccountantStateError
from agent.privacy.events import (
    DpSgdStep,
    GaussianRelease,
    LabelRelease,
    PoissonSampledGaussian,
    PrivacyEvent,
)
from agent.privacy.record_store import RecordStore
from protocol.errors import BudgetExceeded, PrivacyError
from service.files import atomic_write

log = logging.getLogger(__name__)

Adjacency = Literal["replace", "zero_out"]
STATE_VERSION = 1


@dataclass(frozen=True, slots=True, kw_only=True)
class _Tally:
    rho_global: float
    pure_global: float
    max_rho: float
    max_pure: float
    sampled: tuple[tuple[float, float, int], ...]


class Accountant:
    """Composes a device's releases and enforces ``epsilon_budget`` at ``delta``."""

    def __init__(self, *, epsilon_budget: float, delta: float, state_path: str | os.PathLike[str],
                 adjacency: Adjacency = "replace") -> None:
        if not (math.isfinite(epsilon_budget) and epsilon_budget > 0):
            raise PrivacyError(f"epsilon_budget must be finite and > 0, got {epsilon_budget!r}")
        if not 0.0 < delta < 1.0:
            raise PrivacyError(f"delta must be in (0, 1), got {delta!r}")
        sensitivity_factor(adjacency)  # raises PrivacyError on anything else
        self.epsilon_budget = float(epsilon_budget)
        self.delta = float(delta)
        self.adjacency: Adjacency = adjacency
        self.state_path = Path(state_path)
        self._marker = self.state_path.with_name(self.state_path.name + ".created")
        self.events_path = self.state_path.with_name(self.state_path.name + ".events.jsonl")
        records_path = self.state_path.with_name(self.state_path.name + ".records.db")
        had_records = records_path.exists()
        self.records_tracked = 0
        self._tally = _Tally(rho_global=0.0, pure_global=0.0, max_rho=0.0, max_pure=0.0,
                             sampled=())
        self.releases = 0
        self.halted = False
        self.halt_reason: str | None = None
        self.created_new = False
        if self.state_path.exists():
            self.load_state_dict(self._read())
            if not self._marker.exists():
                self._write_marker()  # a crash on the very first start can leave it missing
            self._store = RecordStore(records_path)
            self._reconcile()
        elif self._marker.exists() or had_records:
            raise AccountantStateError(
                f"privacy state {self.state_path} is missing but "
                f"{self._marker.name if self._marker.exists() else records_path.name} shows it "
                "existed: refusing to restart the spend from zero")
        else:
            self.instance_id = secrets.token_hex(16)
            self.created_new = True
            log.warning("no privacy state at %s: starting a new accountant", self.state_path)
            self._persist()  # state first: a crash here leaves nothing that looks like a reset
            self._write_marker()
            self._store = RecordStore(records_path)

    def close(self) -> None:
        """Close the per-record table (the state is already on disk)."""
        self._store.close()

    def _reconcile(self) -> None:
        """Check the per-record table against the JSON summary (see module docstring)."""
        n, max_rho, max_pure = self._store.summary()
        t = self._tally
        tol = 1e-9
        if (n < self.records_tracked or max_rho < t.max_rho * (1 - tol)
                or max_pure < t.max_pure * (1 - tol)):
            raise AccountantStateError(
                f"privacy record table {self._store.path.name} is behind the privacy state "
                f"({n} records, summary says {self.records_tracked}): it was deleted or rolled "
                "back; refusing to under-count")
        if n > self.records_tracked or max_rho > t.max_rho or max_pure > t.max_pure:
            log.warning("privacy record table is ahead of the summary (crash during a spend): "
                        "counting the higher values")
            self._tally = _Tally(rho_global=t.rho_global, pure_global=t.pure_global,
                                 max_rho=max(max_rho, t.max_rho),
                                 max_pure=max(max_pure, t.max_pure), sampled=t.sampled)
            self.records_tracked = n
            self._persist()

    # -- queries -----------------------------------------------------------------
    @property
    def epsilon(self) -> float:
        """Epsilon spent so far at ``delta`` (max over records, see module docstring)."""
        return self._epsilon_of(self._tally)

    @property
    def remaining(self) -> float:
        return max(0.0, self.epsilon_budget - self.epsilon)

    def epsilon_after(self, events: Iterable[PrivacyEvent]) -> float:
        """Epsilon the device would have spent after also releasing ``events``."""
        return self._epsilon_of(self._tally_after(list(events))[0])

    def would_exceed(self, events: Iterable[PrivacyEvent]) -> bool:
        return self.halted or self.epsilon_after(events) > self.epsilon_budget

    # -- the one mutating call ------------------------------------------------------
    def spend(self, events: Iterable[PrivacyEvent]) -> float:
        """Charge ``events``; persist (fsync) before returning the new epsilon.

        Raises :class:`BudgetExceeded` (after persisting ``halted``) when the
        release would exceed the budget or the accountant is already halted.
        """
        evs = list(events)
        if self.halted:
            raise BudgetExceeded(f"privacy budget exhausted: {self.halt_reason}")
        tally, touched, n_new = self._tally_after(evs)
        new_eps = self._epsilon_of(tally)
        if new_eps > self.epsilon_budget:
            self.halted = True
            self.halt_reason = (f"next release needs epsilon {new_eps:.6g} > budget "
                                f"{self.epsilon_budget:.6g} (spent {self.epsilon:.6g}, "
                                f"delta {self.delta:g}) after {self.releases} releases")
            self._persist()
            log.error("privacy budget: halting, %s", self.halt_reason)
            raise BudgetExceeded(self.halt_reason)
        self._log_events(evs, new_eps)          # audit log first (durable) ...
        self._store.put_many(touched)           # ... then the per-record rows ...
        self.records_tracked += n_new
        self._tally = tally
        self.releases += 1
        self._persist()
        return new_eps

    # -- composition -----------------------------------------------------------------
    def _mu2(self, z: float) -> float:
        return (sensitivity_factor(self.adjacency) / z) ** 2

    def _log_events(self, events: list[PrivacyEvent], epsilon: float) -> None:
        line = json.dumps({"release": self.releases + 1, "epsilon": epsilon,
                           "events": [event_to_json(ev) for ev in events]},
                          sort_keys=True, separators=(",", ":")) + "\n"
        try:
            fd = os.open(self.events_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
            try:
                view = memoryview(line.encode())
                while view:
                    view = view[os.write(fd, view):]
                os.fsync(fd)
            finally:
                os.close(fd)
        except OSError as exc:
            raise AccountantStateError(f"cannot append privacy audit log {self.events_path}: "
                                       f"{exc}") from exc

    def _tally_after(self, events: list[PrivacyEvent]
                     ) -> tuple[_Tally, dict[str, tuple[float, float]], int]:
        """New tally, the touched records' new values, and how many of them are new."""
        t = self._tally
        rho_g, pure_g, max_rho, max_pure = t.rho_global, t.pure_global, t.max_rho, t.max_pure
        sampled = dict(((z, q), n) for z, q, n in t.sampled)
        touched: dict[str, tuple[float, float]] = {}
        known = self._store.get_many(
            str(r) for ev in events
            if not isinstance(ev, PoissonSampledGaussian) and ev.records is not None
            for r in ev.records)
        for ev in events:
            if isinstance(ev, PoissonSampledGaussian):
                zq = (float(ev.noise_multiplier), float(ev.sampling_prob))
                sampled[zq] = sampled.get(zq, 0) + ev.count
                continue
            if isinstance(ev, GaussianRelease | DpSgdStep):
                d_rho, d_pure = ev.count * self._mu2(ev.noise_multiplier), 0.0
            elif isinstance(ev, LabelRelease):
                d_rho, d_pure = 0.0, float(ev.epsilon)
            else:  # pragma: no cover - the union is closed
                raise PrivacyError(f"unknown privacy event {ev!r}")
            if ev.records is None:
                rho_g += d_rho
                pure_g += d_pure
                continue
            for rid in ev.records:
                rkey = str(rid)
                prev = touched.get(rkey) or known.get(rkey) or (0.0, 0.0)
                rho, pure = prev[0] + d_rho, prev[1] + d_pure
                touched[rkey] = (rho, pure)
                max_rho, max_pure = max(max_rho, rho), max(max_pure, pure)
        new = _Tally(rho_global=rho_g, pure_global=pure_g, max_rho=max_rho, max_pure=max_pure,
                     sampled=tuple(sorted((z, q, n) for (z, q), n in sampled.items())))
        return new, touched, sum(1 for k in touched if k not in known)

    def _epsilon_of(self, t: _Tally) -> float:
        return composed_epsilon(rho=t.max_rho + t.rho_global, sampled=t.sampled,
                                pure_epsilon=t.max_pure + t.pure_global, delta=self.delta,
                                adjacency=self.adjacency)

    # -- state -----------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        t = self._tally
        body: dict[str, Any] = {
            "version": STATE_VERSION, "instance_id": self.instance_id,
            "adjacency": self.adjacency, "delta": self.delta,
            "epsilon_budget": self.epsilon_budget, "epsilon": self.epsilon,
            "releases": self.releases, "halted": self.halted, "halt_reason": self.halt_reason,
            "rho_global": t.rho_global, "pure_global": t.pure_global,
            "sampled": [list(s) for s in t.sampled], "max_rho": t.max_rho,
            "max_pure": t.max_pure, "records_tracked": self.records_tracked,
        }
        return {**body, "sha256": _digest(body)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        try:
            body = {k: v for k, v in state.items() if k != "sha256"}
            if state.get("sha256") != _digest(body):
                raise AccountantStateError("privacy state checksum mismatch (file edited or torn)")
            if state["version"] != STATE_VERSION:
                raise AccountantStateError(f"unsupported privacy state version {state['version']}")
            if state["adjacency"] != self.adjacency:
                raise AccountantStateError(
                    f"privacy state was accounted under adjacency {state['adjacency']!r}, "
                    f"config says {self.adjacency!r}")
            sampled = tuple((float(z), float(q), int(n)) for z, q, n in state["sampled"])
            tally = _Tally(
                rho_global=float(state["rho_global"]), pure_global=float(state["pure_global"]),
                max_rho=float(state["max_rho"]), max_pure=float(state["max_pure"]),
                sampled=sampled)
            records_tracked = int(state["records_tracked"])
            instance_id = str(state["instance_id"])
            releases, halted = int(state["releases"]), bool(state["halted"])
            reason = state["halt_reason"]
        except (KeyError, TypeError, ValueError, AttributeError, IndexError) as exc:
            raise AccountantStateError(f"privacy state is malformed: {exc!r}") from exc
        if float(state["epsilon_budget"]) != self.epsilon_budget:
            log.warning("privacy budget changed from %g to %g by configuration",
                        float(state["epsilon_budget"]), self.epsilon_budget)
        self.instance_id, self._tally = instance_id, tally
        self.records_tracked = records_tracked
        self.releases, self.halted = releases, halted
        self.halt_reason = None if reason is None else str(reason)

    def _read(self) -> dict[str, Any]:
        try:
            data = json.loads(self.state_path.read_bytes())
        except (OSError, ValueError) as exc:
            raise AccountantStateError(f"cannot read privacy state {self.state_path}: {exc}"
                                       ) from exc
        if not isinstance(data, dict):
            raise AccountantStateError("privacy state is not a JSON object")
        return data

    def _write_marker(self) -> None:
        _atomic_write(self._marker, json.dumps({"instance_id": self.instance_id}).encode())

    def _persist(self) -> None:
        _atomic_write(self.state_path, json.dumps(self.state_dict(), sort_keys=True).encode())


def event_to_json(ev: PrivacyEvent) -> dict[str, Any]:
    """One event as the audit log writes it (``kind`` plus the dataclass fields)."""
    kind = {GaussianRelease: "gaussian", LabelRelease: "label", DpSgdStep: "dp_sgd",
            PoissonSampledGaussian: "poisson_gaussian"}[type(ev)]
    out: dict[str, Any] = {"kind": kind}
    for name in ev.__dataclass_fields__:
        v = getattr(ev, name)
        out[name] = list(v) if isinstance(v, tuple) else v
    return out


def _digest(body: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


def _atomic_write(path: Path, data: bytes) -> None:
    """The shared durable replace (fsync file and directory), errors as accountant errors."""
    try:
        atomic_write(path, data)
    except OSError as exc:
        raise AccountantStateError(f"cannot persist privacy state {path}: {exc}") from exc
