"""Canary plans for one-run auditing (pure, no I/O except :func:`save_plan`/:func:`load_plan`).

Theory of operation
-------------------
A plan is ``m`` canary *slots*, each with a canary record (window + label), a
decoy record and a secret fair coin ``included[i]``, all derived from one
128-bit secret seed, so the plan file that stays with the auditor is small
and everything can be regenerated anywhere the seed is known. The device
receives one record per slot (:func:`canaries_for_device`): the canary when
its coin says so (a random half, in expectation), else the decoy. The device
cannot tell which, and the auditor never tells it.

Why decoys: the device's guarantee is per record under *replace-one*
adjacency (or zero-out: the record against a null record). Simply leaving a
canary out would change how many records, and so how many rows, the device
sends: a difference its guarantee does not cover (the row count is public).
With a decoy in the slot, flipping one coin changes exactly one record's
value, which is the adjacency the device claims, so the one-run theorem
(:mod:`audit.bound`) applies to its claim as stated. A decoy is a constant
window (a distinct level per slot, so the device keeps each as its own
record); per-window z-scoring maps every constant window to the all-zero
input, which adds nothing to the first layer's weight gradient and is the
null record of zero-out adjacency.

Each coin is drawn independently with probability 1/2: the one-run theorem
needs independent coins, so "a random half" means half in expectation, not
exactly ``m/2``.

Canary kinds (both are out-of-distribution by design; an audit tests the
worst case a device could meet, not a typical record):

* ``spike``: zero everywhere but one sample (distinct position per canary,
  random sign), so after per-window z-scoring its input is close to a scaled
  basis vector. Its contribution to the first layer's weights lands in the
  row of its position, which makes the weight-update score
  (:func:`audit.scores.weight_update_scores`) sharp. Needs ``m <= C * L``.
* ``gaussian``: i.i.d. N(0, 1) windows; any ``m``.

Labels are uniform over the classes.
"""

from __future__ import annotations

import json
import os
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import numpy.typing as npt

from audit.errors import AuditInputError

__all__ = ["CanaryPlan", "canaries_for_device", "load_plan", "new_plan", "save_plan"]

CanaryKind = Literal["spike", "gaussian"]
PLAN_VERSION = 1


@dataclass(frozen=True, slots=True, kw_only=True)
class CanaryPlan:
    """``m`` canaries for windows of ``shape`` and a model with ``num_classes`` classes."""

    m: int
    seed: int
    shape: tuple[int, int]
    num_classes: int
    kind: CanaryKind = "spike"
    first_id: int = 1_000_000_000  # record ids the harness gives canaries (never a real id)

    def __post_init__(self) -> None:
        problems = []
        if isinstance(self.m, bool) or not isinstance(self.m, int) or self.m < 2:
            problems.append(f"m must be an int >= 2, got {self.m!r}")
        if not (isinstance(self.seed, int) and 0 <= self.seed < 2**128):
            problems.append("seed must be an int in [0, 2**128)")
        if len(self.shape) != 2 or min(self.shape) < 1:
            problems.append(f"shape must be (channels, length), got {self.shape!r}")
        if self.num_classes < 2:
            problems.append("num_classes must be >= 2")
        if self.kind not in ("spike", "gaussian"):
            problems.append(f"kind must be spike or gaussian, got {self.kind!r}")
        elif self.kind == "spike" and not problems and self.m > self.shape[0] * self.shape[1]:
            problems.append(f"spike canaries need m <= channels*length = "
                            f"{self.shape[0] * self.shape[1]}, got {self.m}")
        if problems:
            raise AuditInputError(problems)

    def _rng(self, stream: int) -> np.random.Generator:
        return np.random.Generator(np.random.Philox(key=self.seed, counter=[stream, 0, 0, 0]))

    @property
    def included(self) -> npt.NDArray[np.bool_]:
        """The secret coins: canary ``i`` goes to the device iff ``included[i]``."""
        return self._rng(0).random(self.m) < 0.5

    def windows(self) -> npt.NDArray[np.float32]:
        """All ``m`` canary windows ``(m, C, L)`` (raw, before the runtime's normalisation)."""
        c, length = self.shape
        rng = self._rng(1)
        if self.kind == "gaussian":
            return rng.normal(size=(self.m, c, length)).astype(np.float32)
        out = np.zeros((self.m, c, length), np.float32)
        pos = rng.permutation(c * length)[:self.m]
        sign = np.where(rng.random(self.m) < 0.5, -1.0, 1.0)
        out.reshape(self.m, -1)[np.arange(self.m), pos] = sign * 10.0
        return out

    def positions(self) -> npt.NDArray[np.int64]:
        """Flat input position of each spike canary (``spike`` kind only)."""
        if self.kind != "spike":
            raise AuditInputError("positions exist only for spike canaries")
        c, length = self.shape
        rng = self._rng(1)
        return rng.permutation(c * length)[:self.m].astype(np.int64)

    def decoys(self) -> npt.NDArray[np.float32]:
        """The decoy of each slot ``(m, C, L)``: the constant window ``i + 1``."""
        c, length = self.shape
        levels = np.arange(1, self.m + 1, dtype=np.float32)[:, None, None]
        out: npt.NDArray[np.float32] = np.broadcast_to(levels, (self.m, c, length)).copy()
        return out

    def labels(self) -> npt.NDArray[np.int64]:
        return self._rng(2).integers(0, self.num_classes, size=self.m).astype(np.int64)

    @property
    def ids(self) -> tuple[int, ...]:
        return tuple(range(self.first_id, self.first_id + self.m))

    def to_json(self) -> dict[str, object]:
        return {"version": PLAN_VERSION, "m": self.m, "seed": f"{self.seed:032x}",
                "shape": list(self.shape), "num_classes": self.num_classes, "kind": self.kind,
                "first_id": self.first_id}

    @classmethod
    def from_json(cls, d: object) -> CanaryPlan:
        if not isinstance(d, dict) or d.get("version") != PLAN_VERSION:
            raise AuditInputError(f"not a canary plan of version {PLAN_VERSION}")
        try:
            return cls(m=int(d["m"]), seed=int(str(d["seed"]), 16),
                       shape=(int(d["shape"][0]), int(d["shape"][1])),
                       num_classes=int(d["num_classes"]), kind=d["kind"],
                       first_id=int(d["first_id"]))
        except (KeyError, TypeError, ValueError, IndexError) as exc:
            raise AuditInputError(f"malformed canary plan: {exc!r}") from exc


def new_plan(*, m: int, shape: tuple[int, int], num_classes: int, kind: CanaryKind = "spike",
             seed: int | None = None) -> CanaryPlan:
    """A plan with a fresh secret seed from the OS CSPRNG (``seed`` only for tests)."""
    return CanaryPlan(m=m, seed=secrets.randbits(128) if seed is None else seed, shape=shape,
                      num_classes=num_classes, kind=kind)


def canaries_for_device(plan: CanaryPlan) -> list[tuple[int, npt.NDArray[np.float32], int]]:
    """``(record id, window, label)`` per slot, canary or decoy by its coin (the device's)."""
    inc, xs, ds, ys = plan.included, plan.windows(), plan.decoys(), plan.labels()
    return [(rid, xs[i] if inc[i] else ds[i], int(ys[i])) for i, rid in enumerate(plan.ids)]


def save_plan(plan: CanaryPlan, path: str | os.PathLike[str]) -> None:
    """Write the plan (it holds the secret seed: mode 0600, never shared with the device)."""
    p = Path(path)
    data = json.dumps(plan.to_json(), indent=2, sort_keys=True).encode()
    fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)


def load_plan(path: str | os.PathLike[str]) -> CanaryPlan:
    try:
        return CanaryPlan.from_json(json.loads(Path(path).read_text()))
    except (OSError, ValueError) as exc:
        raise AuditInputError(f"cannot read canary plan {path}: {exc}") from exc
