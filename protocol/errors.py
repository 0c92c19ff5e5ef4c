"""The one exception tree of iiot-splitfed.

Every error the project raises on purpose derives from :class:`SplitfedError`,
so a process can catch "anything of ours" in one place and let real bugs
(``TypeError``, ``KeyError`` ...) surface. Adapters translate third-party
errors into this tree with ``raise X from exc``; paho return codes, pymodbus
exceptions, sqlite3 errors and LiteRT ``RuntimeError`` never leak past them.

::

    SplitfedError
    ├── ProtocolError                  wire messages (protocol/)
    │   ├── MalformedMessage           not decodable / fails schema validation
    │   ├── BadSignature               signature, algorithm or key does not match
    │   ├── ReplayError                sequence number stale (outside window)
    │   │   └── SeqJumpError           sequence number too far ahead of the window
    │   ├── LimitExceeded              payload size, tensor shape, element count
    │   ├── TopicError                 bad topic or id (wildcards, separators)
    │   └── InvalidState               persisted protocol state (replay window) is corrupt
    ├── KeyFileError                   key file missing, unreadable, too permissive
    ├── ConfigError                    invalid configuration (lists every problem)
    ├── ModelError                     model artifact / runtime (models/)
    │   └── ArtifactIntegrityError     sha256 of an artifact does not match
    ├── SensorError                    sensor read failed (agent/)
    ├── PrivacyError                   privacy mechanism misuse (agent/privacy)
    │   └── BudgetExceeded             next release would exceed the budget
    ├── TransportError                 MQTT / network adapter failures
    ├── SpoolError                     offline spool storage failure
    └── LedgerError                    ledger node (ledger_node/), ledger client, light client
        ├── InvalidTransaction         tx rejected by validation or contract
        ├── ChainIntegrityError        stored chain fails verification
        ├── CertificateError           a header certificate lacks a quorum / has a bad signature
        ├── NotFoundError              block, tx or state key unknown to the node
        └── OrderingError              the ordering service failed or is unreachable

Packages define their finer errors in their own ``errors.py`` as subclasses
of these.
"""

from __future__ import annotations

# ruff: noqa: N818  # the class names are the project's public API; renaming would break every package


class SplitfedError(Exception):
    """Root of every error iiot-splitfed raises on purpose."""


class ProtocolError(SplitfedError):
    """A wire message or topic is unacceptable. Receivers count and drop it."""


class MalformedMessage(ProtocolError):
    """Bytes are not a valid message (CBOR, COSE structure or schema)."""


class BadSignature(ProtocolError):
    """The signature does not verify, or the algorithm or key id is wrong."""


class ReplayError(ProtocolError):
    """The sequence number is older than the receiver's replay window."""


class SeqJumpError(ReplayError):
    """A sequence number further ahead of the window than the receiver allows."""


class LimitExceeded(ProtocolError):
    """Payload size, tensor rank, shape or element count above the limit."""


class TopicError(ProtocolError):
    """A topic or identifier does not fit the splitfed/v1 namespace."""


class InvalidState(ProtocolError):
    """Persisted protocol state (a replay window's ``state_dict``) is corrupt."""


class KeyFileError(SplitfedError):
    """A key file is missing, malformed, or readable by group/others."""


class ConfigError(SplitfedError):
    """Configuration is invalid. ``problems`` lists every problem found."""

    def __init__(self, problems: list[str] | str) -> None:
        self.problems: list[str] = [problems] if isinstance(problems, str) else list(problems)
        super().__init__("; ".join(self.problems))


class ModelError(SplitfedError):
    """A model artifact cannot be loaded or a runtime call failed."""


class ArtifactIntegrityError(ModelError):
    """An artifact's sha256 does not match its manifest or announcement."""


class SensorError(SplitfedError):
    """A sensor read failed (timeout, Modbus exception, bad line)."""


class PrivacyError(SplitfedError):
    """A privacy mechanism was called with invalid parameters."""


class BudgetExceeded(PrivacyError):
    """Releasing the next message would exceed the device's privacy budget."""


class TransportError(SplitfedError):
    """The MQTT or network adapter failed."""


class SpoolError(SplitfedError):
    """The offline spool could not store or read a message."""


class LedgerError(SplitfedError):
    """The ledger node failed or refused a request."""


class InvalidTransaction(LedgerError):
    """A transaction failed validation or its contract rejected it."""


class ChainIntegrityError(LedgerError):
    """The stored chain does not verify (hash, signature, certificate, state)."""


class CertificateError(LedgerError):
    """A finality certificate does not reach the quorum or has a bad signature."""


class NotFoundError(LedgerError):
    """The requested block, transaction or state key does not exist (yet)."""


class OrderingError(LedgerError):
    """The ordering service failed (etcd unreachable, bad response)."""
