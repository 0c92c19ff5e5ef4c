"""Server-half training for split-federated learning: SFLV1 and SFLV2.

Theory of operation (Thapa et al., "SplitFed: When Federated Learning Meets
Split Learning", AAAI 2022, section 3). Every batch of smashed activations is
trained through a server half, which returns the gradient with respect to the
activations for the device's backward pass.

- SFLV1: one server-half *replica per group*. Batches of a group update only
  that group's replica; at round end the replicas are averaged (FedAvg by the
  number of samples each replica trained on in the round) and the average is
  loaded into every replica.
- SFLV2: one server half; batches from all groups update it sequentially in
  arrival order; nothing to average at round end.

Replicas can only be averaged if they have the same architecture, so a
:class:`SplitTrainer` serves one model cut; the server keeps one trainer per
cut point. The runtime sits behind the :class:`ServerHalf` role
(:class:`models.runtime.ServerRuntime` in production, a numpy fake in unit
tests). Not thread-safe: one trainer is driven by one thread.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterable, Sequence
from typing import Protocol

import numpy as np

from models.fedavg import WeightedUpdate, fedavg
from server.errors import UnknownGroupError

__all__ = ["ServerHalf", "SflMode", "SplitTrainer"]


class ServerHalf(Protocol):
    """The server half of a split model (LiteRT ``server.tflite``)."""

    def train(
        self, activations: np.ndarray, labels: np.ndarray, *, lr: float
    ) -> tuple[float, np.ndarray]: ...

    def predict(self, activations: np.ndarray) -> np.ndarray: ...

    def get_weights(self) -> tuple[np.ndarray, ...]: ...

    def set_weights(self, ws: Sequence[np.ndarray]) -> None: ...


class SflMode(enum.Enum):
    SFLV1 = "sflv1"
    SFLV2 = "sflv2"


class SplitTrainer:
    """Trains the server half(s) of one cut for a set of groups."""

    def __init__(
        self,
        *,
        mode: SflMode,
        groups: Iterable[str],
        make_half: Callable[[], ServerHalf],
        lr: float,
    ) -> None:
        if not lr > 0:
            raise ValueError("lr must be > 0")
        self.mode = mode
        self.lr = lr
        self.groups = tuple(sorted(set(groups)))
        if not self.groups:
            raise ValueError("at least one group")
        if mode is SflMode.SFLV1:
            first = make_half()
            self._halves = {self.groups[0]: first}
            start = first.get_weights()
            for g in self.groups[1:]:
                h = make_half()
                h.set_weights(start)
                self._halves[g] = h
        else:
            shared = make_half()
            self._halves = dict.fromkeys(self.groups, shared)
        self._samples: dict[str, int] = dict.fromkeys(self.groups, 0)
        self._losses: list[float] = []

    def _half(self, group: str) -> ServerHalf:
        try:
            return self._halves[group]
        except KeyError:
            raise UnknownGroupError(f"group {group!r} is not part of this trainer") from None

    def train(
        self, group: str, activations: np.ndarray, labels: np.ndarray
    ) -> tuple[float, np.ndarray]:
        """One step on ``group``'s half; ``(loss, gradient wrt activations)``."""
        loss, grad = self._half(group).train(activations, labels, lr=self.lr)
        self._samples[group] += int(activations.shape[0])
        self._losses.append(float(loss))
        return float(loss), grad

    def predict(self, group: str, activations: np.ndarray) -> np.ndarray:
        """Class probabilities from ``group``'s half (split inference)."""
        return self._half(group).predict(activations)

    def mean_loss(self) -> float | None:
        """Mean training loss over the steps of the current round."""
        return float(np.mean(self._losses)) if self._losses else None

    def end_round(self) -> tuple[np.ndarray, ...]:
        """SFLV1: average the replicas by samples and load the mean everywhere.

        Returns the server-half weights after the round (identical in every
        replica). Replicas that trained on nothing this round do not vote.
        """
        if self.mode is SflMode.SFLV1:
            updates = [
                WeightedUpdate(
                    weights=self._halves[g].get_weights(), num_samples=self._samples[g], source=g
                )
                for g in self.groups
                if self._samples[g] > 0
            ]
            if updates:
                mean = fedavg(updates)
                for g in self.groups:
                    self._halves[g].set_weights(mean)
        self._samples = dict.fromkeys(self.groups, 0)
        self._losses = []
        return self.weights()

    def weights(self) -> tuple[np.ndarray, ...]:
        """The server-half weights (of the first replica; all equal after end_round)."""
        return self._halves[self.groups[0]].get_weights()

    def set_weights(self, ws: Sequence[np.ndarray]) -> None:
        """Load ``ws`` into every replica (e.g. a finalised version at start-up)."""
        for h in {id(h): h for h in self._halves.values()}.values():
            h.set_weights(ws)
