"""The demo summary says how to get a baseline when none is recorded for the run's dataset."""

from __future__ import annotations

from typing import Any

import pytest

from deploy.stack_cli import _print_summary


def _summary(baseline: dict[str, float] | None) -> dict[str, Any]:
    return {"baseline_accuracy": baseline, "final_accuracy": 0.3, "final_version": 2,
            "dataset": "ACSF1", "model": "mlp_dp/cut2", "rejected_proposals": [],
            "epsilon_budget": None, "per_device": [], "rejected_by_reason": {},
            "ledger_verify": {"org1": {"ok": True}}, "ledger_height": 9,
            "run_dir": "runs/x", "wall_time_s": 12.0}


def test_missing_baseline_prints_the_command(capsys: pytest.CaptureFixture[str]) -> None:
    _print_summary(_summary(None))
    out = capsys.readouterr().out
    assert "Keras -, LiteRT -" in out
    assert "splitfed-models baseline --dataset ACSF1 --model mlp_dp --cut 2" in out


def test_recorded_baseline_prints_no_hint(capsys: pytest.CaptureFixture[str]) -> None:
    _print_summary(_summary({"keras": 0.5, "litert": 0.51}))
    out = capsys.readouterr().out
    assert "Keras 0.500, LiteRT 0.510" in out and "splitfed-models baseline" not in out
