"""The one-machine stack end to end: every process real, on loopback.

Runs what `splitfed demo` runs (Mosquitto with per-device credentials and
ACL, a solo ledger node, provisioning through the ledger, simulated Modbus
meters over TCP and RTU-on-pty, agents, gateways, the server) for a few
rounds and checks the summary a user reads.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import cast

import numpy as np
import pytest

from deploy.stack.launcher import StackRun
from deploy.stack.plan import StackOptions
from models.datasets.ucr import load_split

pytestmark = [pytest.mark.e2e, pytest.mark.integration]


def _majority_rate(data_dir: Path) -> float:
    _, test = load_split(data_dir, "PLAID")
    counts = np.bincount(test.labels)
    return float(counts.max() / counts.sum())


def test_private_stack_learns_within_budget_and_ledger_verifies(tmp_path: Path,
                                                                 data_dir: Path) -> None:
    # Every privacy mechanism runs (clipping, calibrated noise, accounting before release,
    # ledger spend), but with a loose budget (epsilon 200) so that 4 short rounds beat chance
    # by a margin that holds across seeds (measured 0.31-0.36 vs 0.262 needed); the accuracy
    # at tight budgets is measured in the benchmarks (docs/benchmarks.md), not asserted here.
    # sl-dpsgd: the client half trains through accounted DP-SGD steps and is averaged; the
    # frozen default is covered by test_frozen_stack_uploads_no_client_half below.
    options = StackOptions(run_dir=tmp_path / "run", data_dir=data_dir, orgs=2,
                           devices_per_org=2, rounds=4, epsilon=200.0, model="mlp", cut=2,
                           steps_per_round=6, batch_size=16, lr=0.05, seed=1,
                           privacy_mode="sl-dpsgd")
    rounds_seen: list[dict[str, object]] = []
    summary = StackRun(options, on_progress=rounds_seen.append, echo=lambda _: None).run()

    assert len(rounds_seen) == 4
    # validators may reject a noisy round's proposal; the model devices run is finalised
    assert summary["final_version"] >= 1
    last_final = [r for r in rounds_seen if r["finalised"]][-1]
    assert summary["final_accuracy"] == last_final["accuracy"]
    assert last_final["version"] == summary["final_version"]
    chance = _majority_rate(data_dir)
    # DP-SGD noise on the client half makes single rounds swing (one run: 0.235, 0.269,
    # 0.276, then 0.213, against a majority class of 0.162): the best finalised round must
    # clear chance clearly and the final model must stay above it; a pipeline that does not
    # learn sits at the majority rate and fails both
    accs = [cast(float, r["accuracy"]) for r in rounds_seen if r["finalised"]]
    assert max(accs) > chance + 0.08, (accs, chance)
    assert summary["final_accuracy"] > chance + 0.03, (summary["final_accuracy"], chance)
    # ledger: every node verifies from genesis
    assert summary["ledger_verify"] and all(v["ok"] for v in summary["ledger_verify"].values())
    # privacy: each device within budget, and the ledger's record equals the device's accountant
    for d in summary["per_device"]:
        assert d["epsilon_agent"] is not None and 0 < d["epsilon_agent"] <= 200.0
        assert d["epsilon_ledger"] == pytest.approx(d["epsilon_agent"], rel=1e-9)
        assert d["batches"] > 0
        # the last round's progress line reports the summary's figure (issue 15b)
        assert rounds_seen[-1]["epsilon_per_device"][d["device"]] == pytest.approx(  # type: ignore[index]
            d["epsilon_ledger"], rel=1e-9)
    assert summary["within_budget"] is True
    assert summary["privacy_mode"] == "sl-dpsgd" and summary["labels_public"] is False


def test_frozen_stack_uploads_no_client_half_and_accounts_every_row(tmp_path: Path,
                                                                    data_dir: Path) -> None:
    """The default mode through the real stack: rounds close without uploads, every
    finalised version carries the announced client half, labels go by randomized response,
    and each device's ledger epsilon equals its accountant's."""
    options = StackOptions(run_dir=tmp_path / "run", data_dir=data_dir, orgs=2,
                           devices_per_org=1, rounds=2, epsilon=8.0, steps_per_round=3,
                           batch_size=8, seed=2)
    rounds_seen: list[dict[str, object]] = []
    summary = StackRun(options, on_progress=rounds_seen.append, echo=lambda _: None).run()
    assert len(rounds_seen) == 2 and summary["final_version"] >= 1
    assert summary["privacy_mode"] == "sl-frozen" and summary["labels_public"] is False
    assert summary["ledger_verify"] and all(v["ok"] for v in summary["ledger_verify"].values())
    rejected = {k: v for org in summary["rejected_by_reason"].values() for k, v in org.items()
                if v}
    assert not rejected, rejected  # nothing a device sent was refused (no stray uploads)
    for d in summary["per_device"]:
        assert 0 < d["epsilon_agent"] <= 8.0
        assert d["epsilon_ledger"] == pytest.approx(d["epsilon_agent"], rel=1e-9)
    audit = summary["ledger_audit"]
    assert not audit.get("missing") and not audit.get("duplicated"), audit
    # honest devices: nothing rejected by any gateway
    assert all(not any(reasons.values()) for reasons in summary["rejected_by_reason"].values())
    # the meters really were read over both transports
    assert {d["transport"] for d in summary["per_device"]} == {"tcp", "rtu"}
    assert Path(summary["run_dir"], "summary.json").is_file()
    assert Path(summary["run_dir"], "progress.png").is_file()


def test_etcd_consortium_stack_runs_and_every_node_verifies(tmp_path: Path,
                                                            data_dir: Path) -> None:
    """`--ledger etcd`: an etcd member and a ledger node per organisation, as real processes."""
    options = StackOptions(run_dir=tmp_path / "run", data_dir=data_dir, orgs=3,
                           devices_per_org=1, rounds=2, epsilon=8.0, ledger="etcd", seed=2)
    summary = StackRun(options, echo=lambda _: None).run()
    assert summary["final_version"] >= 1
    assert set(summary["ledger_verify"]) == {"org1", "org2", "org3"}
    assert all(v["ok"] for v in summary["ledger_verify"].values())
    for d in summary["per_device"]:
        assert 0 < d["epsilon_agent"] <= 8.0
        assert d["epsilon_ledger"] == pytest.approx(d["epsilon_agent"], rel=1e-9)


class _Stop(KeyboardInterrupt):
    """What Ctrl-C raises in the launcher, raised from the progress callback instead."""


@pytest.mark.slow
def test_interrupted_run_keeps_a_partial_summary_and_plot(tmp_path: Path,
                                                          data_dir: Path) -> None:
    options = StackOptions(run_dir=tmp_path / "run", data_dir=data_dir, orgs=2,
                           devices_per_org=1, rounds=3, seed=4)

    def interrupt_after_first_round(_h: dict[str, object]) -> None:
        raise _Stop

    run = StackRun(options, on_progress=interrupt_after_first_round, echo=lambda _: None)
    with pytest.raises(KeyboardInterrupt):
        run.run()
    summary = json.loads((options.run_dir / "summary.json").read_text())
    assert summary["status"] == "interrupted"
    assert len(summary["per_round"]) == 1
    # read from the ledger after every other service stopped, before the ledger stopped
    assert summary["ledger_audit"]["round_records"]["org1"] == {"0": 1}
    assert all(v["ok"] for v in summary["ledger_verify"].values())
    assert (options.run_dir / "progress.png").is_file()
    assert run.procs.children == []
