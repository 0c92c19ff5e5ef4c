"""The one release path of the agent: account, spool, publish.

Theory of operation
-------------------
``Outbox.release(build, events)``:

1. ``seq`` := the spool's persistent sequence counter; ``build(seq)`` returns
   ``(topic, sealed_envelope_bytes)``.  Building is pure (encode + sign):
   nothing can leave the device except through the spool.
2. If the spool's overflow policy is ``stop_sampling`` and the message would
   not fit, :class:`agent.spool.SpoolFull` is raised before any spend.
3. ``accountant.spend(events)``: the privacy spend is fsynced to disk, or
   :class:`protocol.errors.BudgetExceeded` is raised (and the halt persisted).
4. ``spool.put(topic, payload, seq=seq)``: the message and the next sequence
   number are committed in one SQLite transaction.
5. ``publisher.kick()``: the MQTT adapter sends it when connected and deletes
   it from the spool only on PUBACK.

Crash analysis (kill -9 at any point): before 3 nothing happened; between 3
and 4 the spend is counted but the message never exists (over-count, never
under-count); after 4 the message is durable and will be sent after restart.
The sequence number is allocated with the message, so a crash never creates
a gap or a duplicate ``seq`` for a message that was actually sent.

``ActivationBatch.epsilon_spent`` should be ``accountant.epsilon_after(events)``
computed before ``release``: it is exactly the value ``spend`` then records
(the same deterministic composition), i.e. the spend including this message.
Example (the agent's activation path)::

    eps = accountant.epsilon_after(events)

    def build(seq: int) -> tuple[str, bytes]:
        msg = ActivationBatch(..., device=dev, seq=seq, ..., epsilon_spent=eps)
        return topics.up(org, dev), seal(msg, signing_key=key, kid=dev)

    outbox.release(build, events)

Reset detection: the spool remembers the accountant's ``instance_id``.  A
privacy state that was deleted (with its marker) and re-created empty is
detected here because the spool still holds the old id (or a non-zero
sequence counter) - the outbox refuses to start instead of restarting the
spend from zero.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from agent.privacy.accountant import Accountant
from agent.privacy.errors import AccountantStateError
from agent.privacy.events import PrivacyEvent
from agent.spool import Spool, SpoolFull
from protocol.errors import BudgetExceeded

log = logging.getLogger(__name__)

MessageBuilder = Callable[[int], tuple[str, bytes]]


class Publisher(Protocol):
    """Something that sends spooled messages when it can (e.g. :class:`PahoPublisher`)."""

    def kick(self) -> None: ...

    def update_state(self) -> None: ...


@dataclass(frozen=True, slots=True, kw_only=True)
class Release:
    seq: int
    spool_id: int
    epsilon: float


class Outbox:
    """Account -> spool -> publish, in that order (see module docstring)."""

    def __init__(self, accountant: Accountant, spool: Spool, publisher: Publisher, *,
                 qos: int = 1, private: bool = True, labels_public: bool = False) -> None:
        self.accountant, self.spool, self.publisher, self.qos = accountant, spool, publisher, qos
        # An explicitly non-private device reports epsilon as infinite, never as a number;
        # a device whose session declared labels public says so beside every epsilon.
        self.private, self.labels_public = private, labels_public
        known = spool.get_meta("accountant_id")
        if known is None:
            if spool.next_seq() > 0 and accountant.created_new:
                raise AccountantStateError(
                    f"the spool shows {spool.next_seq()} earlier releases but the privacy state "
                    "is brand new: refusing to restart the spend from zero")
            spool.set_meta("accountant_id", accountant.instance_id)
        elif known != accountant.instance_id:
            raise AccountantStateError(
                "the privacy state does not belong to this spool (it was replaced or reset): "
                "refusing to restart the spend from zero")

    @property
    def halted(self) -> bool:
        return self.accountant.halted

    def release(self, build: MessageBuilder, events: Sequence[PrivacyEvent]) -> Release:
        """Charge ``events``, then spool the message ``build(seq)`` and kick the publisher."""
        if self.accountant.halted:
            raise BudgetExceeded(f"privacy budget exhausted: {self.accountant.halt_reason}")
        seq = self.spool.next_seq()
        topic, payload = build(seq)
        if self.spool.overflow == "stop_sampling" and not self.spool.would_fit(len(payload)):
            raise SpoolFull(f"spool full ({self.spool.depth} messages): not releasing seq {seq}")
        try:
            epsilon = self.accountant.spend(events)
        except BudgetExceeded:
            self.publisher.update_state()  # the retained state now says halted
            raise
        spool_id = self.spool.put(topic, payload, qos=self.qos, seq=seq)
        self.publisher.kick()
        return Release(seq=seq, spool_id=spool_id, epsilon=epsilon)

    def send(self, build: MessageBuilder) -> Release:
        """Spool a message that costs no privacy: no accountant charge, allowed when halted.

        For round-end client weights only: trained by plain SGD they are declared
        ``unprotected`` in the message itself; trained by DP-SGD every step was
        already charged. Activations and labels must go through :meth:`release`.
        """
        seq = self.spool.next_seq()
        topic, payload = build(seq)
        if self.spool.overflow == "stop_sampling" and not self.spool.would_fit(len(payload)):
            raise SpoolFull(f"spool full ({self.spool.depth} messages): not sending seq {seq}")
        spool_id = self.spool.put(topic, payload, qos=self.qos, seq=seq)
        self.publisher.kick()
        return Release(seq=seq, spool_id=spool_id, epsilon=self.accountant.epsilon)

    def state_detail(self) -> dict[str, str | int | float]:
        """Privacy figures for the retained MQTT birth certificate (``state_detail=``)."""
        acc = self.accountant
        return {"epsilon": self._epsilon_shown(round(acc.epsilon, 6)),
                "epsilon_budget": self._epsilon_shown(acc.epsilon_budget),
                "delta": acc.delta, "halted": int(acc.halted),
                "labels_public": int(self.labels_public)}

    def _epsilon_shown(self, value: float) -> float | str:
        return value if self.private else "inf"

    def status(self) -> dict[str, Any]:
        """Numbers for ``status`` commands and birth details (no keys, no data)."""
        acc = self.accountant
        return {"epsilon": self._epsilon_shown(acc.epsilon),
                "epsilon_budget": self._epsilon_shown(acc.epsilon_budget),
                "private": self.private, "labels_public": self.labels_public,
                "delta": acc.delta, "releases": acc.releases, "halted": acc.halted,
                "halt_reason": acc.halt_reason, "spool_depth": self.spool.depth,
                "spool_dropped": self.spool.dropped, "spool_refused": self.spool.refused,
                "next_seq": self.spool.next_seq()}
