"""Fault injection into a running stack: detect a protocol phase, signal one service.

Theory of operation
-------------------
A :class:`StackRun` runs in a worker thread; the test's thread polls what an
operator can see, every :data:`POLL_S`: the services' log files and the
device's accountant file, never the processes' memory. The round under test
is :data:`TARGET_ROUND` (the second of three, model version 2), so one round
completes before the fault and one after it. Phases, each detected by the
first line that proves it (each line is logged right after the step, so the
fault lands right after the step and before the next one):

* ``mid_round``: the device released its first batch of the target round
  (``releases`` in ``privacy.json`` exceeds the steps of one round) and the
  server has not closed that round yet;
* ``after_propose``: the server logged the target round's ``model_propose
  submitted``;
* ``between_votes``: the first validator logged ``voted ... on version 2``;
  when the victim is a gateway it is the one that has not voted yet;
* ``after_finalise``: the server logged ``model_finalise submitted`` after
  the target round's proposal;
* ``announcement``: a gateway logged ``published finalised model version 2``
  (the devices are loading the model now).

Faults: ``kill`` is SIGKILL to the victim's process group (the supervisor
must restart it); ``stop`` is SIGSTOP, then SIGCONT :data:`STOP_S` seconds
later (a hung process: nothing restarts it, everything else must wait or
retry). :func:`phase_reached` is the pure part (text in, bool out).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from deploy.stack.launcher import StackRun

Service = Literal["gateway", "server", "ledger", "broker"]
Fault = Literal["kill", "stop"]
Phase = Literal["mid_round", "after_propose", "between_votes", "after_finalise",
                "announcement"]

SERVICES: tuple[Service, ...] = ("gateway", "server", "ledger", "broker")
FAULTS: tuple[Fault, ...] = ("kill", "stop")
PHASES: tuple[Phase, ...] = ("mid_round", "after_propose", "between_votes", "after_finalise",
                             "announcement")

TARGET_ROUND = 1      # zero-based: the second round, model version 2
POLL_S = 0.02
STOP_S = 20.0

_PROPOSE = re.compile(r"model_propose submitted")
_FINALISE = re.compile(r"model_finalise submitted")
_CLOSES = re.compile(r"round (\d+) closes")


def _voted(version: int) -> re.Pattern[str]:
    return re.compile(rf"voted (accept|reject) on version {version}\b")


def _published(version: int) -> re.Pattern[str]:
    return re.compile(rf"published finalised model version {version}\b")


@dataclass
class Logs:
    """What the detector reads, as text (so the rule is testable without a stack)."""

    server: str = ""
    gateways: dict[str, str] = field(default_factory=dict)   # org -> log text
    releases: int = 0                                         # the watched device's batches


def phase_reached(phase: Phase, logs: Logs, *, steps_per_round: int,
                  target_round: int = TARGET_ROUND) -> bool:
    """Has the run reached ``phase`` of ``target_round``? (see the module docstring)."""
    version = target_round + 1
    proposes = [m.start() for m in _PROPOSE.finditer(logs.server)]
    if phase == "mid_round":
        closed = {int(m.group(1)) for m in _CLOSES.finditer(logs.server)}
        return logs.releases > steps_per_round * target_round and target_round not in closed
    if phase == "after_propose":
        return len(proposes) > target_round
    if phase == "between_votes":
        return any(_voted(version).search(t) for t in logs.gateways.values())
    if phase == "after_finalise":
        if len(proposes) <= target_round:
            return False
        return _FINALISE.search(logs.server, proposes[target_round]) is not None
    if phase == "announcement":
        return any(_published(version).search(t) for t in logs.gateways.values())
    raise ValueError(f"unknown phase {phase!r}")


def read_logs(run: StackRun, orgs: tuple[str, ...], device: str) -> Logs:
    logs_dir = run.root / "logs"

    def text(name: str) -> str:
        try:
            return (logs_dir / f"{name}.log").read_text(errors="replace")
        except OSError:
            return ""

    releases = 0
    try:
        data = json.loads((run.root / "agents" / device / "state" / "privacy.json").read_text())
        releases = int(data.get("releases", 0))
    except (OSError, ValueError, TypeError):
        pass
    return Logs(server=text("server"), gateways={o: text(f"gateway-{o}") for o in orgs},
                releases=releases)


def victim(service: Service, phase: Phase, logs: Logs, orgs: tuple[str, ...]) -> str:
    """The process name to signal."""
    if service == "gateway":
        if phase == "between_votes":
            pending = [o for o in orgs
                       if not _voted(TARGET_ROUND + 1).search(logs.gateways.get(o, ""))]
            if pending:
                return f"gateway-{pending[0]}"
        return f"gateway-{orgs[0]}"
    return {"server": "server", "ledger": "ledger-solo", "broker": "broker"}[service]


@dataclass
class Injection:
    """What happened: when the phase was seen, whom we signalled, what the run returned."""

    service: Service
    fault: Fault
    phase: Phase
    victim: str | None = None
    fired_at_s: float | None = None
    resumed_at_s: float | None = None
    summary: dict[str, Any] | None = None
    error: BaseException | None = None
    echo: list[str] = field(default_factory=list)


def run_with_fault(run: StackRun, inj: Injection, *, deadline_s: float) -> Injection:
    """Run the stack in a worker thread; inject ``inj``'s fault at its phase; join."""
    o = run.o
    orgs = tuple(f"org{i + 1}" for i in range(o.orgs))
    device = f"{orgs[0]}-dev1"

    def work() -> None:
        try:
            inj.summary = run.run()
        except BaseException as exc:  # reported by the test, with the run's output
            inj.error = exc

    worker = threading.Thread(target=work, name="stack-run", daemon=True)
    worker.start()
    start = time.monotonic()
    stopped_pid: int | None = None
    try:
        while worker.is_alive():
            now = time.monotonic()
            if now - start > deadline_s:
                raise AssertionError(f"the run did not finish in {deadline_s:.0f} s")
            if inj.fired_at_s is None and (run.root / "logs" / "server.log").exists():
                logs = read_logs(run, orgs, device)
                if phase_reached(inj.phase, logs, steps_per_round=o.steps_per_round):
                    inj.victim = victim(inj.service, inj.phase, logs, orgs)
                    pid = _pid(run, inj.victim)
                    if pid is not None:
                        sig = signal.SIGKILL if inj.fault == "kill" else signal.SIGSTOP
                        _killpg(pid, sig)
                        inj.fired_at_s = now - run.started
                        run.echo(f"chaos: {sig.name} {inj.victim} (pid {pid}) at {inj.phase}")
                        if inj.fault == "stop":
                            stopped_pid = pid
            if (stopped_pid is not None and inj.fired_at_s is not None
                    and now - run.started >= inj.fired_at_s + STOP_S):
                _killpg(stopped_pid, signal.SIGCONT)
                inj.resumed_at_s = now - run.started
                run.echo(f"chaos: SIGCONT {inj.victim} (pid {stopped_pid})")
                stopped_pid = None
            worker.join(POLL_S)
    finally:
        if stopped_pid is not None:
            _killpg(stopped_pid, signal.SIGCONT)
        if worker.is_alive():
            run.close()  # the worker's run() then fails fast and returns
            worker.join(120)
    return inj


def _pid(run: StackRun, name: str) -> int | None:
    try:
        child = run.child(name)
    except KeyError:
        return None
    return child.proc.pid if child.alive() else None


def _killpg(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, sig)


def log_excerpt(run_dir: Path, name: str, lines: int = 10) -> str:
    """The last lines of one service's log that are not TensorFlow chatter."""
    try:
        text = (run_dir / "logs" / f"{name}.log").read_text(errors="replace")
    except OSError:
        return ""
    keep = [ln for ln in text.splitlines() if ln.strip() and not ln.startswith("INFO: Created")]
    return "\n".join(keep[-lines:])
