"""The privacy benchmark's report: findings, targets and table from result data (pure)."""

from __future__ import annotations

from typing import Any

from bench.bench_privacy import findings, render


def _row(mode: str, eps: float | None, accs: list[float]) -> dict[str, Any]:
    hp: dict[str, Any] = {"q": 1.0, "rounds": 10, "local_steps": 1, "lr": 1.0, "clip": 1.0,
                          "releases": 1, "label_share": 0.25, "passes": 5, "server_lr": 0.01,
                          "epochs": 2, "batch": 16, "client_lr": 0.1}
    return {"mode": mode, "epsilon": eps, "accuracies": accs, "mean": sum(accs) / len(accs),
            "sd": 0.0, "hp": hp, "noise_multiplier": 0.0 if eps is None else 3.0,
            "guarantee": "g", "simulated": mode == "sl-dpsgd"}


def _data() -> dict[str, Any]:
    setup = {"notes": "n", "devices": 4, "orgs": 2, "records_per_device": [1, 2, 3, 4],
             "test": 10, "input_shape": [1, 8], "classes": 3, "majority_rate": 0.2}
    plaid = {"setup": setup, "centralized": {"accuracies": [0.5, 0.5], "mean": 0.5,
                                             "epochs": 3},
             "rows": [_row("fl-dpsgd", 8.0, [0.46, 0.44]), _row("sl-frozen", 8.0, [0.2, 0.2]),
                      _row("fl-dpsgd", 1.0, [0.2, 0.22]), _row("fl-dpsgd", None, [0.49, 0.49])]}
    vib = {"setup": setup, "centralized": {"accuracies": [0.9], "mean": 0.9, "epochs": 1},
           "rows": [_row("fl-dpsgd", None, [0.85]), _row("fl-dpsgd", 8.0, [0.84]),
                    _row("fl-dpsgd", 1.0, [0.70])]}
    return {"meta": {"time": "t", "python": "3", "machine": "m", "cpus": 2, "seconds": 1.0,
                     "seeds": 2, "delta": 1e-5, "val_fraction": 0.2},
            "tasks": {"PLAID": plaid, "vibration": vib}, "skipped": {"WATCH": "absent"},
            "flower": "not run"}


def test_findings_name_the_best_mode_and_its_margin() -> None:
    text = "\n".join(findings(_data()))
    assert "ε = 8: **fl-dpsgd** 0.450, +0.250 over sl-frozen" in text
    assert "target ε=8 ≥ 0.45: met (fl-dpsgd 0.450)" in text
    assert "target ε=1 ≥ 0.25: NOT met (fl-dpsgd 0.210)" in text
    assert "≥ 0.95 × centralized: met (0.98 ×)" in text
    assert "ε=8 within 2 points of non-private FedAvg: met (+1.0 points)" in text
    assert "ε=1 within 5 points of non-private FedAvg: NOT met (+15.0 points)" in text
    assert text.startswith("- **Recommendation: fl-dpsgd** is the most accurate private mode")


def test_render_puts_findings_first_and_lists_every_row() -> None:
    md = render(_data())
    assert md.index("## Findings") < md.index("## How this was measured") < md.index("## PLAID")
    assert md.count("| fl-dpsgd |") == 6
    assert "## WATCH: skipped" in md and "absent" in md
    assert "0.450 ± 0.014" in md
