"""Chaos: kill (-9) or stop (SIGSTOP 20 s, SIGCONT) one service at one protocol phase.

One case = one (service, fault, phase) on a real stack (solo ledger, 2
organisations x 1 device, 3 rounds, batches of 8, 4 steps per round, the
server's round deadline 20 s, collection deadline 10 s, the launcher's
decision allowance 30 s: a round that does not recover fails the case
after 20 + 10 + 30 + 23 = 83 s), with the fault in
the second round (see :mod:`tests.chaos.faults` for how each phase is
detected). After the run, whatever happened in between:

* the session completed all its rounds (every round decided, the server
  exited 0, the summary says ``completed``);
* the ledger holds exactly one valid ``round_record`` per (org, round);
* every device's epsilon on the ledger equals its own accountant's;
* every batch the server trained is counted once: the samples the ledger
  recorded for a device equal the batches whose gradient reached it x the batch
  size (each device holds more records than 3 rounds use, so every batch is
  full), and never more than it released (a batch that arrived after its round
  closed is charged to the device's epsilon but trained and counted by nobody);
* at most :data:`MAX_INVALID_PER_ROUND` txs per round were marked invalid.

Marked ``slow`` (about a minute per case; ``make bench`` runs the suite as the
``chaos`` soak and writes ``bench/results/chaos.md``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from deploy.stack.launcher import StackRun
from deploy.stack.plan import StackOptions
from tests.chaos.faults import FAULTS, PHASES, SERVICES, Injection, log_excerpt, run_with_fault

pytestmark = [pytest.mark.slow, pytest.mark.e2e, pytest.mark.integration]

ROUNDS = 3
BATCH = 8
STEPS = 4
MAX_INVALID_PER_ROUND = 3
CASE_DEADLINE_S = 900.0   # the launcher's own deadlines fire first (83 s per round)

# phase-major, so that a partial run (or -x) has already covered every service
CASES = [(s, f, p) for p in PHASES for f in FAULTS for s in SERVICES]


def _options(run_dir: Path, data_dir: Path) -> StackOptions:
    return StackOptions(run_dir=run_dir, data_dir=data_dir, orgs=2, devices_per_org=1,
                        rounds=ROUNDS, steps_per_round=STEPS, batch_size=BATCH, seed=3,
                        round_deadline_s=20.0, collect_deadline_s=10.0, decide_s=30.0)


def _status(run_dir: Path, device: str) -> dict[str, Any]:
    org, _, dev = device.partition("/")
    path = run_dir / "agents" / f"{org}-{dev}" / "state" / "status.json"
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _context(run_dir: Path, inj: Injection) -> str:
    names = ["server", "gateway-org1", "gateway-org2", "ledger-solo", "broker"]
    parts = [f"--- {n} ---\n{log_excerpt(run_dir, n)}" for n in names]
    return ("\n".join(inj.echo[-25:]) + "\n" + "\n".join(parts))[-6000:]


@pytest.mark.parametrize(("service", "fault", "phase"), CASES,
                         ids=[f"{s}-{f}-{p}" for s, f, p in CASES])
def test_stack_survives(tmp_path: Path, data_dir: Path, service: Any, fault: Any,
                        phase: Any) -> None:
    inj = Injection(service=service, fault=fault, phase=phase)
    run = StackRun(_options(tmp_path / "run", data_dir), echo=inj.echo.append)
    run_with_fault(run, inj, deadline_s=CASE_DEADLINE_S)
    ctx = _context(run.root, inj)

    assert inj.fired_at_s is not None, f"phase {phase} never observed\n{ctx}"
    assert inj.error is None, f"run failed: {inj.error}\n{ctx}"
    s = inj.summary
    assert s is not None and s["status"] == "completed", ctx
    if fault == "kill":
        assert any(r["service"] == inj.victim and not r["gave_up"] for r in s["restarts"]), (
            f"no restart of {inj.victim} recorded: {s['restarts']}\n{ctx}")
    # the session completed all its rounds
    assert len(s["per_round"]) == ROUNDS, (s["per_round"], ctx)
    # one valid round record per (org, round): none missing, none duplicated
    audit = s["ledger_audit"]
    assert audit["missing"] == [] and audit["duplicated"] == [], (audit, ctx)
    for d in s["per_device"]:
        # the ledger's record of each device's spend equals its accountant's
        assert d["epsilon_agent"] is not None, (d, ctx)
        assert d["epsilon_ledger"] == pytest.approx(d["epsilon_agent"], rel=1e-9), (d, ctx)
        # every trained batch counted once, nothing counted that was not released
        counters = _status(run.root, d["device"]).get("counters", {})
        released = int(counters.get("batches_released", d["batches"]))
        trained = int(counters.get("gradients_applied", 0))
        assert trained <= released, (d, counters, ctx)
        assert audit["samples"].get(d["device"], 0) == trained * BATCH, (
            f"{d['device']}: ledger samples {audit['samples'].get(d['device'])} vs "
            f"{trained} trained batches x {BATCH} ({released} released)\n{ctx}")
    assert audit["invalid_total"] <= MAX_INVALID_PER_ROUND * ROUNDS, (audit["invalid"], ctx)
