"""What a session admits: model hashes, tensor shapes and the DP policy floor.

Built by the gateway app from the ledger's session record and the model
manifests; pure values here. "At least as strong as the policy" means, for
an activation batch: noise multiplier >= ``min_noise_multiplier``; clip norm
<= ``max_clip_norm`` when set (the noise is sigma*C, so a larger C with the
same sigma would not weaken the epsilon, but the policy fixes the scale the
server expects); label mode among ``label_modes``; a randomized-response
label epsilon <= ``max_label_epsilon``; the device's declared epsilon spent
<= ``max_epsilon``. For client-half weights: ``dp_sgd`` when
``require_dp_weights``, and none at all in ``sl-frozen`` (the client half
is never uploaded). Every batch must declare the session's privacy mode,
and labels travel in clear only where the session declared them public.
The gateway checks *declared* parameters; it cannot
see whether a device really added the noise it declares (a compromised
device is outside the threat model, see docs/privacy.md).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

from protocol.errors import ConfigError

__all__ = ["ModelSpec", "SessionPolicy"]


@dataclass(frozen=True, slots=True, kw_only=True)
class ModelSpec:
    """Shapes admitted for one client-half hash (from its manifest)."""

    activation_shape: tuple[int, ...]
    num_classes: int
    max_batch: int
    client_weight_shapes: tuple[tuple[int, ...], ...]
    cut: int = 0

    def __post_init__(self) -> None:
        problems = []
        if not self.activation_shape or any(d <= 0 for d in self.activation_shape):
            problems.append("activation_shape must be non-empty positive dims")
        if self.num_classes < 2:
            problems.append("num_classes must be >= 2")
        if self.max_batch < 1:
            problems.append("max_batch must be >= 1")
        if problems:
            raise ConfigError(problems)


@dataclass(frozen=True, slots=True, kw_only=True)
class SessionPolicy:
    """The admission rules of one session."""

    session: str
    models: Mapping[str, ModelSpec]  # client-half sha256 -> spec
    min_noise_multiplier: float
    max_epsilon: float
    max_clip_norm: float | None = None
    label_modes: frozenset[str] = field(
        default_factory=lambda: frozenset({"plain", "randomized_response", "none"})
    )
    max_label_epsilon: float | None = None
    require_dp_weights: bool = False
    privacy_mode: str = "sl-frozen"  # every activation batch must declare this mode

    def __post_init__(self) -> None:
        problems = []
        if not self.session:
            problems.append("session id is empty")
        if not self.models:
            problems.append("no model hash admitted")
        if not (self.min_noise_multiplier >= 0 and math.isfinite(self.min_noise_multiplier)):
            problems.append("min_noise_multiplier must be finite and >= 0")
        if not (self.max_epsilon > 0):
            problems.append("max_epsilon must be > 0")
        if self.max_clip_norm is not None and not self.max_clip_norm > 0:
            problems.append("max_clip_norm must be > 0")
        if self.max_label_epsilon is not None and not self.max_label_epsilon > 0:
            problems.append("max_label_epsilon must be > 0")
        if problems:
            raise ConfigError(problems)
