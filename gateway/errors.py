"""Gateway errors, below :mod:`protocol.errors`.

::

    SplitfedError
    ├── GatewayError                  gateway logic refused an operation
    │   └── RoundStateError           operation not valid in the round's current state
    └── AggregationError              FedAvg inputs inconsistent (models.fedavg)

Rejections of device messages are *not* exceptions: the admission pipeline
returns a :class:`gateway.verify.Rejected` value, counts it and goes on.
"""

from __future__ import annotations

from protocol.errors import SplitfedError


class GatewayError(SplitfedError):
    """The gateway refused an operation (not a device message: those are counted)."""


class RoundStateError(GatewayError):
    """The round is not in a state that allows this operation."""
