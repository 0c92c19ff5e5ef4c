"""Errors of the ledger node, all under :class:`protocol.errors.LedgerError`.

The first five are shared with the ledger client and the light client, so they
are defined in :mod:`protocol.errors`; the node's own are defined here.

::

    LedgerError
    ├── InvalidTransaction        tx undecodable, bad signature, wrong chain (refused at submit)
    ├── ChainIntegrityError       stored chain fails verification (``verify`` names the block)
    ├── CertificateError          a header certificate lacks a quorum or a signature is bad
    ├── NotFoundError                  block, tx or state key unknown to this node
    ├── OrderingError             the ordering service (etcd) failed or is unreachable
    └── BadRequestError           an API request's query, path number or body is malformed (400)
        └── BodyTooLargeError     a request body over the API's cap (413)
"""

from __future__ import annotations

from protocol.errors import (
    CertificateError,
    ChainIntegrityError,
    InvalidTransaction,
    LedgerError,
    NotFoundError,
    OrderingError,
)

__all__ = [
    "BadRequestError",
    "BodyTooLargeError",
    "CertificateError",
    "ChainIntegrityError",
    "InvalidTransaction",
    "LedgerError",
    "NotFoundError",
    "OrderingError",
]


class BadRequestError(LedgerError):
    """An API request is malformed: a query/path number or the body length (HTTP 400).

    ``name`` is the offending parameter (``"timeout"``, ``"height"``, ``"body"``...).
    """

    def __init__(self, name: str, message: str) -> None:
        super().__init__(f"{name}: {message}")
        self.name = name


class BodyTooLargeError(BadRequestError):
    """A request body larger than the API's cap (HTTP 413)."""
