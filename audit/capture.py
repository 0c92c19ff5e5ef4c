"""Captured traffic of one device, read from a directory of envelopes (adapter: file I/O).

Theory of operation
-------------------
The auditor captures what crossed the wire, e.g. with
``mosquitto_sub -t 'splitfed/v1/#' -F %x`` writing one envelope per line,
or by saving each MQTT payload to its own file. :func:`load_capture` reads a
directory of such files:

* ``*.cose`` / ``*.cbor`` / ``*.bin``: one raw envelope per file;
* ``*.hex``: one hex-encoded envelope per line (the ``-F %x`` format).

Each envelope is structurally checked (:func:`protocol.envelope.peek`),
verified against the device's key when the caller passes it (an unverified
capture proves nothing about who sent it: pass the keys from the ledger's
device registry), and decoded by content type. Gradient batches are signed
by the server, not the device, and are kept unverified: the canary scores
never use them, the gradient label attack only as an observer would. Endorsements (gateway ->
server) are unwrapped to the device envelope they carry. Activation batches,
gradient batches and client weights of the audited device are kept;
everything else is ignored. A file or line that is not a valid message is
rejected and counted with its reason (:attr:`DeviceCapture.rejected`), never
silently dropped and never fatal: one corrupt line must not hide the rest.

Duplicates (QoS 1 redelivery, the same envelope captured on two topics) are
removed by ``(kind, round, step, seq)``.
"""

from __future__ import annotations

import binascii
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import nacl.signing

from audit.errors import AuditInputError
from protocol.control import Endorsement
from protocol.envelope import check_signature, peek
from protocol.errors import ProtocolError
from protocol.messages import decode_any
from protocol.training import ActivationBatch, ClientWeights, GradientBatch

__all__ = ["DeviceCapture", "load_capture"]

_RAW = (".cose", ".cbor", ".bin")


@dataclass(slots=True)
class DeviceCapture:
    """Everything captured about one device, in sequence order."""

    device: str
    rows: list[ActivationBatch] = field(default_factory=list)
    grads: list[GradientBatch] = field(default_factory=list)
    weights: list[ClientWeights] = field(default_factory=list)
    rejected: Counter[str] = field(default_factory=Counter)
    ignored: int = 0
    duplicates: int = 0

    @property
    def reported_epsilon(self) -> float:
        """The largest ``epsilon_spent`` the device declared in any captured message.

        Infinite when any message declares itself non-private (``mechanism = none``
        or ``weights_dp = unprotected``): such a device claims nothing.
        """
        if (any(m.dp.mechanism == "none" for m in self.rows)
                or any(m.weights_dp == "unprotected" for m in self.weights)):
            return float("inf")
        eps = [m.epsilon_spent for m in self.rows] + [m.epsilon_spent for m in self.weights]
        return max(eps, default=0.0)


def _blobs(directory: Path) -> Iterator[tuple[str, bytes | None, str]]:
    """``(where, envelope bytes or None, reason)`` for every file / hex line."""
    for path in sorted(directory.iterdir()):
        if not path.is_file():
            continue
        try:
            data = path.read_bytes()
        except OSError as exc:
            yield path.name, None, f"unreadable: {exc.strerror}"
            continue
        if path.suffix in _RAW:
            yield path.name, data, ""
        elif path.suffix == ".hex":
            for n, line in enumerate(data.splitlines(), 1):
                if not line.strip():
                    continue
                try:
                    yield f"{path.name}:{n}", binascii.unhexlify(line.strip()), ""
                except (binascii.Error, ValueError):
                    yield f"{path.name}:{n}", None, "not hex"


def load_capture(directory: str | Path, *, device: str,
                 verify_key: nacl.signing.VerifyKey | None = None) -> DeviceCapture:
    """Read ``directory``; keep the training messages of ``device`` (see module docstring)."""
    d = Path(directory)
    if not d.is_dir():
        raise AuditInputError(f"capture directory {d} does not exist")
    cap = DeviceCapture(device=device)
    seen: set[tuple[str, int, int, int]] = set()
    for _where, data, reason in _blobs(d):
        if data is None:
            cap.rejected[reason] += 1
            continue
        try:
            env = peek(data)
            msg = decode_any(env.payload, env.content_type)
            if isinstance(msg, Endorsement):
                env = peek(msg.envelope)
                msg = decode_any(env.payload, env.content_type)
            if not isinstance(msg, ActivationBatch | GradientBatch | ClientWeights):
                cap.ignored += 1
                continue
            if msg.device != device:
                cap.ignored += 1
                continue
            if verify_key is not None and not isinstance(msg, GradientBatch):
                check_signature(env, verify_key=verify_key)  # device-signed messages only
        except ProtocolError as exc:
            cap.rejected[f"{type(exc).__name__}"] += 1
            continue
        step = msg.step if isinstance(msg, ActivationBatch | GradientBatch) else -1
        key = (type(msg).__name__, msg.round, step, msg.seq)
        if key in seen:
            cap.duplicates += 1
            continue
        seen.add(key)
        if isinstance(msg, ActivationBatch):
            cap.rows.append(msg)
        elif isinstance(msg, GradientBatch):
            cap.grads.append(msg)
        else:
            cap.weights.append(msg)
    cap.rows.sort(key=lambda m: (m.round, m.seq))
    cap.grads.sort(key=lambda m: (m.round, m.seq))
    cap.weights.sort(key=lambda m: (m.round, m.seq))
    return cap
