"""The experiment both systems run, fixed before either starts (pure, no I/O).

:func:`flower_job` derives a :class:`FlowerJob` from the stack's own plan
(:func:`deploy.stack.plan.make_plan`), so Flower trains on exactly the same
per-device training indices, evaluates on the same server-held test indices,
and gets the same optimiser budget (rounds x local steps x batch size) and
the same model (zoo architecture, window, normalisation constants).

Matched epsilon, different unit and trust model:

* ours: local DP against the server; the unit is ONE RECORD (window) of one
  device, replace-one adjacency, released ``epochs_per_record`` times (the
  device adds the noise itself, so the server, gateway and broker are not
  trusted with the activations).
* Flower's ``DifferentialPrivacyClientSideFixedClipping``: central DP on the
  aggregate; the unit is ONE CLIENT'S WHOLE UPDATE in a round, add/remove
  adjacency, released once per round with every client sampled every round
  (no amplification by subsampling). The server adds the noise, so the
  server is trusted; the clients only clip.

Both noise multipliers come from the same exact accountant
(:mod:`agent.privacy.composition`: k Gaussian releases compose into one
Gaussian, analytic Gaussian profile), and :func:`rdp_epsilon` cross-checks
the Flower multiplier with Google's ``dp_accounting`` RDP accountant.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agent.privacy.calibrate import epsilon_for, noise_multiplier_for_budget
from protocol.errors import ConfigError

if TYPE_CHECKING:
    from deploy.stack.plan import StackPlan

__all__ = ["FlowerJob", "flower_job", "flower_noise_multiplier", "rdp_epsilon"]


@dataclass(frozen=True, slots=True, kw_only=True)
class FlowerJob:
    """Everything the Flower run needs, as JSON-serialisable values."""

    name: str
    dataset: str
    data_dir: str
    model: str
    cut: int
    window_length: int
    window_mode: str
    per_window: bool
    devices: tuple[str, ...]
    partitions: tuple[tuple[int, ...], ...]      # training-set indices per device
    eval_indices: tuple[int, ...]                # test-set indices (the server's held-out part)
    rounds: int
    steps_per_round: int
    batch_size: int
    client_lr: float
    server_lr: float
    seed: int
    epsilon: float | None = None                 # None: FedAvg without DP
    delta: float = 1e-5
    noise_multiplier: float | None = None
    clipping_norm: float = 1.0
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        problems = []
        if len(self.devices) != len(self.partitions) or not self.devices:
            problems.append("one partition per device, at least one device")
        if any(len(p) == 0 for p in self.partitions):
            problems.append("every device needs at least one record")
        if self.rounds < 1 or self.steps_per_round < 1 or self.batch_size < 1:
            problems.append("rounds, steps and batch size must be >= 1")
        if not (self.client_lr > 0 and self.server_lr > 0):
            problems.append("learning rates must be > 0")
        if (self.epsilon is None) != (self.noise_multiplier is None):
            problems.append("epsilon and noise_multiplier go together")
        if self.noise_multiplier is not None and not self.noise_multiplier > 0:
            problems.append("noise_multiplier must be > 0")
        if not (math.isfinite(self.clipping_norm) and self.clipping_norm > 0):
            problems.append("clipping_norm must be > 0")
        if problems:
            raise ConfigError(problems)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1)

    @classmethod
    def from_json(cls, text: str) -> FlowerJob:
        raw = json.loads(text)
        raw["devices"] = tuple(raw["devices"])
        raw["partitions"] = tuple(tuple(p) for p in raw["partitions"])
        raw["eval_indices"] = tuple(raw["eval_indices"])
        return cls(**raw)

    def write(self, path: Path) -> None:
        path.write_text(self.to_json())


def flower_noise_multiplier(*, epsilon: float, delta: float, rounds: int) -> float:
    """Noise multiplier for Flower's client-level DP over ``rounds`` full-participation rounds.

    Each round releases the clipped sum plus N(0, (z C)^2): a Gaussian
    mechanism of sensitivity C for add/remove-one-client adjacency. With all
    clients in every round nothing is subsampled, so ``rounds`` releases
    compose exactly (same accountant as our devices).
    """
    return noise_multiplier_for_budget(epsilon=epsilon, delta=delta, releases_per_record=rounds,
                                       adjacency="zero_out")  # add/remove-one: sensitivity C


def flower_epsilon(*, noise_multiplier: float, delta: float, rounds: int) -> float:
    """Exact epsilon of ``rounds`` add/remove Gaussian releases at ``noise_multiplier``."""
    return epsilon_for(noise_multiplier=noise_multiplier, releases_per_record=rounds,
                       delta=delta, adjacency="zero_out")  # add/remove-one: sensitivity C


def rdp_epsilon(*, noise_multiplier: float, delta: float, rounds: int) -> float:
    """The same composition through ``dp_accounting``'s RDP accountant (an upper bound)."""
    import dp_accounting  # the harness venv only; the Flower venv lacks it

    acc = dp_accounting.rdp.RdpAccountant()
    acc.compose(dp_accounting.GaussianDpEvent(noise_multiplier), rounds)
    return float(acc.get_epsilon(delta))


def flower_job(plan: StackPlan, *, name: str, data_dir: Path, server_lr: float,
               epsilon: float | None, clipping_norm: float = 1.0,
               window_length: int = 256, window_mode: str = "pad",
               per_window: bool = True) -> FlowerJob:
    """The Flower counterpart of ``plan`` (same split, rounds, steps, batch, model)."""
    opts = plan.options
    z = None
    if epsilon is not None:
        z = flower_noise_multiplier(epsilon=epsilon, delta=opts.delta, rounds=opts.rounds)
    return FlowerJob(
        name=name, dataset=opts.dataset, data_dir=str(data_dir), model=opts.model, cut=opts.cut,
        window_length=window_length, window_mode=window_mode, per_window=per_window,
        devices=tuple(d.name for d in plan.devices),
        partitions=tuple(d.indices for d in plan.devices),
        eval_indices=plan.server_eval, rounds=opts.rounds,
        steps_per_round=opts.steps_per_round, batch_size=opts.batch_size,
        client_lr=opts.lr, server_lr=server_lr, seed=opts.seed, epsilon=epsilon,
        delta=opts.delta, noise_multiplier=z, clipping_norm=clipping_norm)
