"""Replay protection: a sliding window of sequence numbers per sender.

Theory of operation. Every sender numbers its messages with a monotonic
``seq`` (0, 1, 2, ...; gaps are fine). A receiver keeps, per sender, the
highest sequence number seen (``top``) and a bitmap of which of the ``size``
numbers ``top - size + 1 .. top`` it has accepted (the anti-replay window of
IPsec, RFC 4303 section 3.4.3). :meth:`ReplayWindow.observe` answers:

* ``Verdict.FRESH``: first time; the number is now marked as seen. Act on it.
* ``Verdict.DUPLICATE``: already seen, inside the window. This is what MQTT
  QoS 1 redelivery looks like; acknowledge it and do nothing else
  (idempotent), do not raise an alarm.
* :class:`ReplayError`: older than the window; it cannot be told apart from
  a replay and is refused.

So a sequence number is accepted (FRESH) at most once per window state, and
numbers may arrive out of order by up to ``size - 1``.

Persistence. The window is pure state: :meth:`state_dict` returns a
JSON-serialisable dict and :meth:`from_state_dict` checks one back in. The
adapter that owns the window must persist the state after a FRESH verdict and
*before* the message's effect becomes durable (e.g. before the leaf enters
the Merkle batch); otherwise, after a crash, messages accepted since the last
persist are accepted again. A receiver that starts without state accepts any
first number from each sender: that is the limit of the guarantee.

Forward jumps. A message that is validly signed but otherwise unacceptable
(wrong round, wrong session, below the DP policy) must not move the window:
the receiver first asks :meth:`ReplayGuard.check`, runs its other checks, and
only then calls :meth:`ReplayGuard.observe`. Otherwise one such message with
``seq = 2**62`` turns every later genuine message of that sender into a
"replay" until the receiver forgets its state. As a second line, ``check``
and ``observe`` take ``max_jump``: a number more than ``max_jump`` above
``top`` raises :class:`SeqJumpError` (a :class:`ReplayError`) and marks
nothing. :data:`MAX_SEQ_JUMP` (2**20, about a million messages) is the
bound for device senders, whose ``seq`` is a dense counter (one per release;
an agent never skips more than the few messages it dropped). Senders whose
``seq`` is derived from a clock (a gateway numbers its endorsements with
microseconds since the epoch, so a restart jumps by the downtime) are
checked with ``max_jump=None`` (unbounded). The first number seen from a
sender is not bounded: there is nothing to measure the jump from.

Threat model: the window stops an attacker who captured signed messages from
making a receiver act on them twice. It does not stop a sender from skipping
ahead by up to ``max_jump`` (only its own later messages suffer) nor delay or
suppression of messages.
"""

from __future__ import annotations

import enum
from collections.abc import Iterator, Mapping
from typing import Final, Self

from protocol.errors import ConfigError, InvalidState, ReplayError, SeqJumpError, TopicError
from protocol.topics import validate_id

__all__ = ["MAX_SEQ", "MAX_SEQ_JUMP", "ReplayGuard", "ReplayWindow", "Verdict"]

MAX_SEQ: Final = (1 << 63) - 1
MAX_SEQ_JUMP: Final = 1 << 20  # largest forward move of a device's window by one message
MAX_WINDOW: Final = 1 << 16
_STATE_VERSION: Final = 1


class Verdict(enum.Enum):
    """Outcome of :meth:`ReplayWindow.observe` for a number that is not stale."""

    FRESH = "fresh"
    DUPLICATE = "duplicate"


def _check_size(size: object) -> int:
    if type(size) is not int or not 1 <= size <= MAX_WINDOW:
        raise ConfigError(f"replay window size must be an int in [1, {MAX_WINDOW}], got {size!r}")
    return size


class ReplayWindow:
    """The anti-replay window of one sender."""

    __slots__ = ("_bits", "_size", "_top")

    def __init__(self, *, size: int = 1024) -> None:
        self._size = _check_size(size)
        self._top: int | None = None
        self._bits = 0

    @property
    def size(self) -> int:
        return self._size

    @property
    def top(self) -> int | None:
        """Highest sequence number accepted so far (None before the first)."""
        return self._top

    def check(self, seq: int, *, max_jump: int | None = None) -> Verdict:
        """What :meth:`observe` would answer, without marking anything.

        ``max_jump``: refuse (:class:`SeqJumpError`) a number more than this above ``top``.
        """
        if type(seq) is not int or not 0 <= seq <= MAX_SEQ:
            raise ReplayError(f"sequence number must be an int in [0, {MAX_SEQ}]")
        if self._top is None:
            return Verdict.FRESH
        if seq > self._top:
            if max_jump is not None and seq - self._top > max_jump:
                raise SeqJumpError(
                    f"sequence number {seq} jumps {seq - self._top} ahead of {self._top}"
                    f" (at most {max_jump})"
                )
            return Verdict.FRESH
        offset = self._top - seq
        if offset >= self._size:
            raise ReplayError(
                f"sequence number {seq} is older than the window ({self._top - self._size + 1}..)"
            )
        return Verdict.DUPLICATE if self._bits >> offset & 1 else Verdict.FRESH

    def observe(self, seq: int, *, max_jump: int | None = None) -> Verdict:
        """Classify ``seq`` and mark it as seen; raises :class:`ReplayError` if stale.

        Nothing is marked when it raises (stale, or :class:`SeqJumpError` beyond ``max_jump``).
        """
        verdict = self.check(seq, max_jump=max_jump)
        if verdict is Verdict.DUPLICATE:
            return verdict
        if self._top is None:
            self._top, self._bits = seq, 1
        elif seq > self._top:
            shift = seq - self._top
            mask = (1 << self._size) - 1
            self._bits = ((self._bits << shift) | 1) & mask if shift < self._size else 1
            self._top = seq
        else:
            self._bits |= 1 << (self._top - seq)
        return verdict

    def state_dict(self) -> dict[str, object]:
        """JSON-serialisable state: version, size, top, bitmap (hex string)."""
        return {
            "version": _STATE_VERSION,
            "size": self._size,
            "top": self._top,
            "bitmap": format(self._bits, "x"),
        }

    @classmethod
    def from_state_dict(cls, state: Mapping[str, object]) -> Self:
        """Rebuild a window; :class:`InvalidState` if ``state`` is not one we wrote."""
        if not isinstance(state, Mapping) or set(state) != {"version", "size", "top", "bitmap"}:
            raise InvalidState("replay window state must have keys version, size, top, bitmap")
        if state["version"] != _STATE_VERSION or type(state["version"]) is not int:
            raise InvalidState(f"unsupported replay window state version {state['version']!r}")
        try:
            window = cls(size=state["size"])  # type: ignore[arg-type]
        except ConfigError as exc:
            raise InvalidState(str(exc)) from exc
        top, bitmap = state["top"], state["bitmap"]
        if not isinstance(bitmap, str) or not 0 < len(bitmap) <= MAX_WINDOW // 4 + 1:
            raise InvalidState("replay window bitmap must be a hex string")
        try:
            bits = int(bitmap, 16)
        except ValueError as exc:
            raise InvalidState("replay window bitmap is not hex") from exc
        if top is None:
            if bits:
                raise InvalidState("replay window has marks but no top")
        else:
            if type(top) is not int or not 0 <= top <= MAX_SEQ:
                raise InvalidState("replay window top must be an int in [0, 2**63-1]")
            if not bits & 1 or bits >> window.size or bits >> (top + 1):
                raise InvalidState("replay window bitmap does not fit its top and size")
        window._top, window._bits = top, bits
        return window


class ReplayGuard:
    """One :class:`ReplayWindow` per sender id (the COSE ``kid``)."""

    __slots__ = ("_size", "_windows")

    def __init__(self, *, size: int = 1024) -> None:
        self._size = _check_size(size)
        self._windows: dict[str, ReplayWindow] = {}

    def __len__(self) -> int:
        return len(self._windows)

    def __contains__(self, sender: object) -> bool:
        return sender in self._windows

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._windows))

    def window(self, sender: str) -> ReplayWindow:
        """The sender's window, created empty on first use."""
        win = self._windows.get(sender)
        if win is None:
            validate_id(sender, what="sender")
            win = self._windows[sender] = ReplayWindow(size=self._size)
        return win

    def check(self, sender: str, seq: int, *, max_jump: int | None = None) -> Verdict:
        """What :meth:`observe` would answer, without marking (or creating) anything."""
        win = self._windows.get(sender)
        if win is None:
            return ReplayWindow(size=self._size).check(seq, max_jump=max_jump)
        return win.check(seq, max_jump=max_jump)

    def observe(self, sender: str, seq: int, *, max_jump: int | None = None) -> Verdict:
        """Classify ``seq`` from ``sender`` and mark it; raises :class:`ReplayError` if stale.

        Call it only once every other check of the message passed (module docstring).
        """
        return self.window(sender).observe(seq, max_jump=max_jump)

    def forget(self, sender: str) -> None:
        """Drop a sender's window (e.g. after its key was revoked and will never be accepted)."""
        self._windows.pop(sender, None)

    def state_dict(self) -> dict[str, object]:
        return {
            "version": _STATE_VERSION,
            "size": self._size,
            "senders": {s: w.state_dict() for s, w in sorted(self._windows.items())},
        }

    @classmethod
    def from_state_dict(cls, state: Mapping[str, object]) -> Self:
        if not isinstance(state, Mapping) or set(state) != {"version", "size", "senders"}:
            raise InvalidState("replay guard state must have keys version, size, senders")
        if state["version"] != _STATE_VERSION or type(state["version"]) is not int:
            raise InvalidState(f"unsupported replay guard state version {state['version']!r}")
        try:
            guard = cls(size=state["size"])  # type: ignore[arg-type]
        except ConfigError as exc:
            raise InvalidState(str(exc)) from exc
        senders = state["senders"]
        if not isinstance(senders, Mapping):
            raise InvalidState("replay guard senders must be a map")
        for sender, wstate in senders.items():
            try:
                validate_id(sender, what="sender")
            except TopicError as exc:
                raise InvalidState(str(exc)) from exc
            win = ReplayWindow.from_state_dict(wstate)
            if win.size != guard._size:
                raise InvalidState(f"window of {sender!r} has size {win.size} != {guard._size}")
            guard._windows[sender] = win
        return guard
