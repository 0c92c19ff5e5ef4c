"""Server errors, below :mod:`protocol.errors`.

::

    SplitfedError
    └── ServerError                   the server refused an operation
        ├── UnknownGroupError              a batch names a group the session does not have
        └── ProposalError             a model proposal was refused or not finalised in time
"""

from __future__ import annotations

from protocol.errors import SplitfedError


class ServerError(SplitfedError):
    """The server refused an operation."""


class UnknownGroupError(ServerError):
    """A message names a group (or cut) the session does not define."""


class ProposalError(ServerError):
    """A model proposal was rejected by the quorum or did not finalise in time."""
