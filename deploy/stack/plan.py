"""What a one-machine stack run will do, decided before anything starts (pure).

:func:`make_plan` turns the user's options and the dataset's labels into a
:class:`StackPlan`: organisation and device ids, each device's share of the
training set (non-IID: Dirichlet across organisations, then across the
organisation's devices), which devices sit on a serial line (Modbus RTU over
a pty) and which on Modbus TCP, the held-out split of the test set between
the server and the validator organisations, and the noise multiplier that
makes the planned number of epochs fit the epsilon budget
(:func:`agent.privacy.calibrate.noise_multiplier_for_budget`).

Each device's local dataset is its share of the training set; its meter
serves every record once (no looping, so one dataset record is one privacy
record on the device) and the device iterates epochs over what it holds.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import numpy.typing as npt

from agent.privacy.calibrate import noise_multiplier_for_budget
from models.datasets.partition import hierarchical_partition
from protocol.errors import ConfigError

__all__ = ["DevicePlan", "StackOptions", "StackPlan", "make_plan"]


@dataclass(frozen=True, slots=True, kw_only=True)
class StackOptions:
    run_dir: Path
    data_dir: Path
    dataset: str = "PLAID"             # a name in data_dir, a .ts path, or synthetic-vibration
    orgs: int = 2
    devices_per_org: int = 2
    rounds: int = 3
    epsilon: float | None = 8.0        # None: non-private (no noise, no label DP)
    delta: float = 1e-5
    sfl: Literal["v1", "v2"] = "v2"
    ledger: Literal["solo", "etcd"] = "solo"
    privacy_mode: Literal["sl-frozen", "sl-dpsgd"] = "sl-frozen"
    labels_public: bool = False        # declared on the ledger; default: randomized response
    label_epsilon: float | None = None  # per release; default: a quarter of the budget
                                        # spread over the planned epochs
    model: str = "mlp_dp"             # narrow unit-norm cut made for local DP
    cut: int = 2
    steps_per_round: int = 4           # rounds*steps*batch ~ 1-2 epochs of a device's records
    batch_size: int = 8
    lr: float = 0.01
    server_replay_steps: int = 0       # extra server steps per batch on received rows
    alpha: float = 1.0                 # Dirichlet concentration; smaller = more skewed
    serial_every: int = 2              # every n-th device reads its meter over RTU on a pty
    seed: int = 0
    # the server's round policy ([round] in server.toml); the launcher's waits derive from it
    round_deadline_s: float = 120.0
    collect_deadline_s: float = 60.0
    decide_s: float = 60.0             # the launcher's allowance for the votes and finalise

    def __post_init__(self) -> None:
        problems = []
        if not 1 <= self.orgs <= 16:
            problems.append("--orgs must be in 1..16")
        if not 1 <= self.devices_per_org <= 64:
            problems.append("--devices-per-org must be in 1..64")
        if not 1 <= self.rounds <= 1000:
            problems.append("--rounds must be in 1..1000")
        if self.epsilon is not None and not (math.isfinite(self.epsilon) and self.epsilon > 0):
            problems.append("--epsilon must be > 0 (or omitted for a non-private run)")
        if self.steps_per_round < 1 or self.batch_size < 1 or not self.lr > 0:
            problems.append("steps, batch size and learning rate must be positive")
        if self.privacy_mode not in ("sl-frozen", "sl-dpsgd"):
            problems.append("--privacy-mode must be sl-frozen or sl-dpsgd")
        if not all(0 < v <= 3600 for v in (self.round_deadline_s, self.collect_deadline_s,
                                            self.decide_s)):
            problems.append("round, collection and decision deadlines must be in (0, 3600] s")
        if self.ledger == "etcd" and self.orgs < 3:
            problems.append("--ledger etcd needs at least 3 organisations (Raft quorum, 2f+1; "
                            "the default with --ledger etcd)")
        if problems:
            raise ConfigError(problems)


@dataclass(frozen=True, slots=True, kw_only=True)
class DevicePlan:
    org: str
    device: str
    indices: tuple[int, ...]           # into the training set
    transport: Literal["tcp", "rtu"]

    @property
    def name(self) -> str:
        return f"{self.org}-{self.device}"


@dataclass(frozen=True, slots=True, kw_only=True)
class StackPlan:
    options: StackOptions
    orgs: tuple[str, ...]
    devices: tuple[DevicePlan, ...]
    server_eval: tuple[int, ...]                  # test-set indices the server evaluates on
    validator_eval: dict[str, tuple[int, ...]]    # per validator org: its own held-out data
    epochs_per_record: int                        # worst case over devices
    noise_multiplier: float | None                # None: non-private
    label_epsilon: float | None                   # per label release (randomized response)
    num_classes: int
    majority_rate: float = 0.0                    # most common class on the server's eval set

    def devices_of(self, org: str) -> list[DevicePlan]:
        return [d for d in self.devices if d.org == org]


def _majority_rate(labels: npt.NDArray[np.int64]) -> float:
    """Accuracy of always answering the most common class (the floor to beat)."""
    if labels.size == 0:
        return 0.0
    return float(np.bincount(labels.astype(np.int64)).max() / labels.size)


def make_plan(options: StackOptions, *, train_labels: npt.NDArray[np.int64],
              test_labels: npt.NDArray[np.int64], num_classes: int) -> StackPlan:
    """Partition the data and size the noise for ``options``."""
    rng = np.random.default_rng(options.seed)
    orgs = tuple(f"org{i + 1}" for i in range(options.orgs))
    n_dev = options.orgs * options.devices_per_org
    if len(train_labels) < 2 * n_dev:
        raise ConfigError(f"{len(train_labels)} training records are too few for {n_dev} devices")
    parts = hierarchical_partition(train_labels, orgs=options.orgs,
                                   devices_per_org=options.devices_per_org,
                                   alpha_org=options.alpha, alpha_device=options.alpha * 2,
                                   rng=rng, min_per_device=2)
    devices = []
    for (o, d), idx in sorted(parts.items()):
        k = o * options.devices_per_org + d
        transport: Literal["tcp", "rtu"] = (
            "rtu" if options.serial_every > 0 and k % options.serial_every == 1 else "tcp")
        devices.append(DevicePlan(org=orgs[o], device=f"dev{d + 1}",
                                  indices=tuple(int(i) for i in idx), transport=transport))
    per_round = options.steps_per_round * options.batch_size
    smallest = min(len(d.indices) for d in devices)
    epochs = max(1, math.ceil(options.rounds * per_round / smallest))
    z: float | None = None
    label_eps: float | None = None
    if options.epsilon is not None:
        if not options.labels_public:
            label_eps = (options.label_epsilon if options.label_epsilon is not None
                         else options.epsilon / 4 / epochs)
        # sl-dpsgd: each epoch charges a record its row AND the DP-SGD step of its batch
        # (same noise multiplier for both), so twice the Gaussian releases of sl-frozen
        gauss_per_epoch = 2 if options.privacy_mode == "sl-dpsgd" else 1
        z = noise_multiplier_for_budget(
            epsilon=options.epsilon, delta=options.delta,
            releases_per_record=epochs * gauss_per_epoch,
            label_epsilon=None if label_eps is None else label_eps / gauss_per_epoch)
    order = rng.permutation(len(test_labels))
    half = len(order) // 2
    server_eval = tuple(int(i) for i in sorted(order[:half]))
    shares = np.array_split(order[half:], len(orgs))
    validator_eval = {org: tuple(int(i) for i in sorted(s)) for org, s in zip(orgs, shares,
                                                                             strict=True)}
    return StackPlan(options=options, orgs=orgs, devices=tuple(devices),
                     server_eval=server_eval, validator_eval=validator_eval,
                     epochs_per_record=epochs, noise_multiplier=z, label_epsilon=label_eps,
                     num_classes=num_classes,
                     majority_rate=_majority_rate(test_labels[list(server_eval)]))
