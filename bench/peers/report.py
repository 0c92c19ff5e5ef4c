"""Curves to comparable numbers and the markdown table (pure, no I/O)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

__all__ = ["Curve", "curve_from_flower", "curve_from_ours", "time_to_target"]


@dataclass(frozen=True, slots=True, kw_only=True)
class Curve:
    """Accuracy after each round and the seconds since the system was launched."""

    rounds: tuple[int, ...]
    accuracy: tuple[float, ...]
    wall_s: tuple[float, ...]

    @property
    def final(self) -> float | None:
        return self.accuracy[-1] if self.accuracy else None

    @property
    def best(self) -> float | None:
        return max(self.accuracy) if self.accuracy else None

    def summary(self) -> str:
        """``final (best b)``: curves of few-client runs are noisy round to round."""
        return f"{fmt(self.final)} (best {fmt(self.best)})"


def curve_from_flower(out: dict[str, Any]) -> Curve:
    """Flower's ServerApp evaluations; round 0 (the initial model) is dropped.

    Seconds count from the start of the Flower process (imports, Ray start-up
    and the simulated SuperNodes included), as ours count from ``splitfed demo``'s
    start (ledger, broker, provisioning included).
    """
    rows = [r for r in out.get("rounds", []) if r["round"] >= 1]
    return Curve(rounds=tuple(int(r["round"]) for r in rows),
                 accuracy=tuple(float(r["accuracy"]) for r in rows),
                 wall_s=tuple(float(r["since_launch_s"]) for r in rows))


def curve_from_ours(summary: dict[str, Any]) -> Curve:
    """``splitfed demo``'s per-round history (``elapsed_s`` counts from the stack's launch)."""
    rows = [r for r in summary.get("per_round", []) if r.get("accuracy") is not None]
    return Curve(rounds=tuple(int(r["round"]) + 1 for r in rows),
                 accuracy=tuple(float(r["accuracy"]) for r in rows),
                 wall_s=tuple(float(r.get("elapsed_s", float("nan"))) for r in rows))


def time_to_target(curve: Curve, target: float) -> tuple[int, float] | None:
    """First (round, seconds) whose accuracy reaches ``target``; None if never."""
    for r, acc, t in zip(curve.rounds, curve.accuracy, curve.wall_s, strict=True):
        if acc >= target:
            return r, t
    return None


def fmt_target(hit: tuple[int, float] | None, rounds: int) -> str:
    if hit is None:
        return f"not reached in {rounds} rounds"
    return f"round {hit[0]}, {hit[1]:.1f} s"


def fmt(value: float | None, spec: str = ".3f") -> str:
    return "n/a" if value is None else format(value, spec)


def accuracy_rows(entries: Sequence[tuple[str, str, Curve | None, str]]) -> list[tuple[str, str]]:
    """``(system, setting, curve, note)`` -> table rows ``(measure, value)``."""
    rows = []
    for system, setting, curve, note in entries:
        value = note if curve is None else f"{fmt(curve.final)} {note}".rstrip()
        rows.append((f"accuracy, {system}, {setting}", value))
    return rows
