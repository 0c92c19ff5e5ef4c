"""Watching a stack run and summarising it.

The watcher polls what an operator or auditor would look at, never the
processes' memory: the ledger (height, proposals with the server's held-out
accuracy, finalised versions, each device's recorded spend), the gateways'
Prometheus endpoints (messages accepted and rejected) and each agent's
status file (its own accountant's epsilon). One line per decided round.
"""

from __future__ import annotations

import contextlib
import json
import math
import re
import subprocess
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from deploy.stack.configs import vote_quorum
from deploy.stack.plan import StackPlan
from deploy.stack.procs import Child, StackError
from deploy.stack.supervise import failed
from protocol.errors import LedgerError
from protocol.ledger.tx import decode_tx

if TYPE_CHECKING:
    from deploy.stack.launcher import StackRun
    from models.manifest import Manifest
    from protocol.ledger.genesis import Genesis

__all__ = ["Watcher", "finish", "summarise"]

SESSION = "s1"
# extra arguments of `splitfed-ledger verify` for every node's database; the hook for
# ("--require-certified",) once that flag exists in ledger_node/cli.py
VERIFY_ARGS: tuple[str, ...] = ("--require-certified",)  # an uncertified head fails
_METRIC = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+([0-9.eE+-]+|NaN)\s*$")


def scrape(port: int) -> dict[str, float]:
    """Sum a Prometheus endpoint's samples per metric name (labels folded)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as r:
            text = r.read().decode()
    except OSError:
        return {}
    out: dict[str, float] = {}
    for line in text.splitlines():
        m = _METRIC.match(line)
        if m and m.group(3) != "NaN":
            out[m.group(1)] = out.get(m.group(1), 0.0) + float(m.group(3))
    return out


def _by_label(port: int, name_part: str, label: str) -> dict[str, float]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as r:
            text = r.read().decode()
    except OSError:
        return {}
    out: dict[str, float] = {}
    for line in text.splitlines():
        m = _METRIC.match(line)
        if not m or name_part not in m.group(1) or not m.group(2):
            continue
        lab = re.search(label + r'="([^"]*)"', m.group(2))
        if lab:
            out[lab.group(1)] = out.get(lab.group(1), 0.0) + float(m.group(3))
    return out


class Watcher:
    def __init__(self, run: StackRun, plan: StackPlan, *, gateway_metrics: dict[str, int]) -> None:
        self.run, self.plan, self.ports = run, plan, gateway_metrics
        self.history: list[dict[str, Any]] = []
        self._scanned = 0                                  # ledger blocks read so far
        self._round_eps: dict[int, dict[str, float]] = {}  # round -> device -> epsilon

    def scan_ledger(self, client: Any) -> None:
        """Read new blocks: the epsilon each valid ``round_record`` charged each device."""
        height = client.height()
        while self._scanned < height:
            for t in client.block(self._scanned + 1).get("txs", []):
                if t.get("valid") and t.get("kind") == "round_record":
                    tx = decode_tx(bytes.fromhex(t["data"]))
                    org = tx.submitter.partition("/")[0]
                    by_dev = self._round_eps.setdefault(int(tx.body["round"]), {})
                    for dev, rec in dict(tx.body.get("devices", {})).items():
                        key = f"{org}/{dev}"
                        # null on the ledger: a non-private session, epsilon infinite
                        e = math.inf if rec.get("epsilon") is None else float(rec["epsilon"])
                        by_dev[key] = by_dev.get(key, 0.0) + e
            self._scanned += 1

    def ledger_epsilons(self, through_round: int) -> dict[str, float]:
        """Each device's epsilon as the ledger recorded it for rounds 0..``through_round``.

        The same figure as the summary's ``epsilon_ledger`` once every round is in, and
        exact at the end of each round: the agents' accountants already count the next
        round's first releases by the time a proposal is decided.
        """
        out = {f"{d.org}/{d.device}": 0.0 for d in self.plan.devices}
        for rnd, by_dev in self._round_eps.items():
            if rnd <= through_round:
                for dev, eps in by_dev.items():
                    out[dev] = out.get(dev, 0.0) + eps
        return out

    def agent_status(self) -> dict[str, dict[str, Any]]:
        out = {}
        for d in self.plan.devices:
            path = self.run.root / "agents" / d.name / "state" / "status.json"
            try:
                out[d.name] = json.loads(path.read_text())
            except (OSError, ValueError):
                continue
        return out

    def counts(self) -> tuple[float, float]:
        accepted = rejected = 0.0
        for port in self.ports.values():
            m = scrape(port)
            accepted += sum(v for k, v in m.items() if k.endswith("accepted_total")
                            or k.endswith("accepted"))
            rejected += sum(v for k, v in m.items() if k.endswith("rejected_total")
                            or k.endswith("rejected"))
        return accepted, rejected

    def epsilons(self) -> dict[str, float]:
        """Each device's epsilon from its accountant file (the summary's source)."""
        out = {}
        status = self.agent_status()
        for d in self.plan.devices:
            priv = (_accountant(self.run.root / "agents" / d.name / "state")
                    or status.get(d.name, {}).get("privacy", {}))
            if priv.get("epsilon") is not None:
                out[d.name] = float(priv["epsilon"])
        return out

    def snapshot(self, proposal: dict[str, Any]) -> dict[str, Any]:
        client = self.run.ledger_client()
        self.scan_ledger(client)
        rnd = len(self.history)
        eps = self.ledger_epsilons(rnd)
        accountant = self.epsilons()
        accepted, rejected = self.counts()
        finalised = [m.version for m in client.models(SESSION)]
        metrics = proposal.get("metrics", {})
        return {"round": rnd, "version": proposal.get("version"),
                "accuracy": metrics.get("accuracy"), "loss": metrics.get("loss"),
                "finalised": bool(proposal.get("finalised")),
                "finalised_version": max(finalised) if finalised else 0,
                # recorded on the ledger for rounds up to this one (see ledger_epsilons)
                "epsilon_max": max(eps.values()) if eps else 0.0,
                "epsilon_mean": sum(eps.values()) / len(eps) if eps else 0.0,
                "epsilon_per_device": eps,
                # the accountant files now (may include the next round's first batches)
                "epsilon_accountant_max": max(accountant.values()) if accountant else None,
                "accepted": accepted, "rejected": rejected, "ledger_height": client.height(),
                "restarts": len(self.run.restarts),
                "elapsed_s": round(time.monotonic() - self.run.started, 1)}

    def _decided(self, proposal: dict[str, Any]) -> bool:
        """Finalised, superseded by a later proposal, or every validator voted and the
        accepts cannot reach the quorum."""
        if proposal.get("finalised") or proposal.get("superseded_by") is not None:
            return True
        votes = proposal.get("votes") or {}
        accepts = sum(1 for v in votes.values() if v.get("accept"))
        return len(votes) >= len(self.plan.orgs) and accepts < vote_quorum(len(self.plan.orgs))

    def _waiting_for(self, proposals: list[dict[str, Any]], seen: int) -> str:
        """What the run is waiting for, in words (for the progress report)."""
        try:
            height = self.run.ledger_client().height()
        except LedgerError:
            height = -1
        open_ = [p for p in proposals if not self._decided(p)]
        if open_:
            p = open_[-1]
            votes = p.get("votes") or {}
            what = (f"proposal v{p.get('version')}: {len(votes)} of {len(self.plan.orgs)} "
                    f"votes, quorum {vote_quorum(len(self.plan.orgs))}")
        else:
            what = f"round {seen + 1} training (no proposal yet)"
        down = [c.name for c in self.run.procs.children if not c.alive()]
        return (f"{what}; ledger height {height}"
                + (f"; down: {', '.join(down)}" if down else ""))

    def watch(self, server: Child, *, on_progress: Callable[[dict[str, Any]], None] | None,
              round_budget_s: float | None = None, first_round_extra_s: float | None = None,
              report_every_s: float | None = None, exit_grace_s: float | None = None,
              poll_s: float = 0.5) -> list[dict[str, Any]]:
        """Report each decided round; supervise; give up when a round overruns its budget.

        The deadline restarts at every decided round: ``round_budget_s`` (plus
        ``first_round_extra_s`` for the first); after the last round the server has
        ``exit_grace_s`` to exit. Defaults come from :mod:`deploy.stack.launcher`.
        """
        from deploy.stack import launcher

        o = self.plan.options
        budget = launcher.round_budget_s(o) if round_budget_s is None else round_budget_s
        extra = launcher.FIRST_ROUND_EXTRA_S if first_round_extra_s is None else first_round_extra_s
        every = launcher.REPORT_EVERY_S if report_every_s is None else report_every_s
        grace = launcher.EXIT_GRACE_S if exit_grace_s is None else exit_grace_s
        rounds = o.rounds
        last = time.monotonic()
        deadline = last + budget + extra
        next_report = last + every
        seen = 0
        exit_seen = False  # the server had exited 0 before this pass read the proposals
        proposals: list[dict[str, Any]] = []
        while True:
            self.run.supervise()
            client = self.run.ledger_client()
            # the node may be busy cutting a block, or restarting: keep the last answer
            fresh = False
            with contextlib.suppress(LedgerError):
                proposals = sorted(client.proposals(SESSION), key=lambda p: p["version"])
                fresh = True
            decided = [p for p in proposals if self._decided(p)]
            while seen < len(decided):
                try:
                    snap = self.snapshot(decided[seen])
                except LedgerError:
                    break  # the node is restarting or stopped: report the round next pass
                self.history.append(snap)
                seen += 1
                last = time.monotonic()
                deadline = last + (budget if seen < rounds else grace)
                next_report = last + every
                if on_progress is not None:
                    on_progress(snap)
            if not server.alive() and not server.restarting:
                code = server.proc.returncode
                # a failure the supervisor has not seen yet is restarted on its next pass
                if server.gave_up or (failed(code) and server.restart is None):
                    raise StackError(f"server exited with {server.proc.returncode}"
                                     f"{' (restart limit reached)' if server.gave_up else ''}:"
                                     f"\n{server.log_tail()}")
                if not failed(code) and (seen >= rounds or not proposals):
                    return self.history
                if not failed(code) and seen == len(proposals) and exit_seen and fresh:
                    # finished (and the proposals were read after it exited): nothing is
                    # left to decide, yet rounds are missing
                    raise StackError(f"the server finished the session with {seen} of "
                                     f"{rounds} rounds decided:\n{server.log_tail()}")
                exit_seen = not failed(code)
            dead = self.run.procs.dead_critical()
            if dead:
                raise StackError(f"{dead[0].name} exited ({dead[0].proc.returncode})"
                                 f"{' and the restart limit is reached' if dead[0].gave_up else ''}"
                                 f":\n{dead[0].log_tail()}")
            now = time.monotonic()
            if now > deadline:
                raise StackError(
                    f"no progress: {seen} of {rounds} rounds decided; round {seen + 1} not "
                    f"decided within {deadline - last:.0f} s "
                    f"({self._waiting_for(proposals, seen)})")
            if now >= next_report:
                self.run.echo(f"  ... {now - last:.0f} s of {deadline - last:.0f} s: waiting "
                              f"for {self._waiting_for(proposals, seen)}")
                next_report = now + every
            time.sleep(poll_s)


def _plot(history: list[dict[str, Any]], path: Path, budget: float | None, *,
          majority: float | None = None, baseline: float | None = None) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    rounds = [h["round"] + 1 for h in history]
    fig, ax1 = plt.subplots(figsize=(7, 4))
    ax1.plot(rounds, [h["accuracy"] for h in history], "o-", color="tab:blue",
             label="held-out accuracy")
    if baseline is not None:
        ax1.axhline(baseline, color="tab:green", linestyle="--",
                    label=f"centralized non-private {baseline:.2f}")
    if majority is not None:
        ax1.axhline(majority, color="tab:gray", linestyle=":",
                    label=f"majority class {majority:.2f}")
    ax1.legend(loc="upper left", fontsize="small")
    ax1.set_xlabel("round")
    ax1.set_ylabel("accuracy", color="tab:blue")
    ax1.set_ylim(0, 1)
    ax1.set_xticks(rounds)
    if budget is not None:
        ax2 = ax1.twinx()
        ax2.plot(rounds, [h["epsilon_max"] for h in history], "s--", color="tab:red",
                 label="max epsilon per device")
        ax2.axhline(budget, color="tab:red", alpha=0.3, linestyle=":")
        ax2.set_ylim(0, budget * 1.1)
        ax2.set_ylabel("epsilon per record (max over devices)", color="tab:red")
        fig.suptitle(f"accuracy and privacy spend per round (budget epsilon {budget:g})")
    else:
        fig.suptitle("accuracy per round (non-private run)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def summarise(run: StackRun, plan: StackPlan, genesis: Genesis, manifest: Manifest,
              history: list[dict[str, Any]]) -> dict[str, Any]:
    """The end-of-run summary (also written to ``<run>/summary.json``)."""
    client = run.ledger_client()
    o = plan.options
    status = Watcher(run, plan, gateway_metrics={}).agent_status()
    devices = []
    for d in plan.devices:
        st = status.get(d.name, {})
        priv = _accountant(run.root / "agents" / d.name / "state") or st.get("privacy", {})
        devices.append({"device": f"{d.org}/{d.device}", "records": len(d.indices),
                        "transport": d.transport,
                        "epsilon_agent": priv.get("epsilon"),
                        "epsilon_ledger": client.device_spend(SESSION, f"{d.org}/{d.device}"),
                        "halted": priv.get("halted"),
                        "batches": st.get("counters", {}).get("batches_released", 0)})
    rejected = {org: _by_label(port, "rejected", "reason")
                for org, port in run.gateway_ports.items()}
    baseline = _baseline(manifest)
    # what devices run: the last version the validators finalised (a rejected proposal is
    # reported per round but never becomes the model)
    finalised = [h for h in history if h["finalised"]]
    final = finalised[-1]["accuracy"] if finalised else None
    eps_agent = [d["epsilon_agent"] for d in devices if d["epsilon_agent"] is not None]
    summary = {
        "run_dir": str(run.root), "dataset": o.dataset, "model": f"{o.model}/cut{o.cut}",
        "orgs": len(plan.orgs), "devices": len(plan.devices), "rounds": o.rounds,
        "sfl": o.sfl, "ledger": o.ledger,
        "privacy_mode": "none" if o.epsilon is None else o.privacy_mode,
        "labels_public": o.labels_public or o.epsilon is None,
        "epsilon_budget": o.epsilon, "delta": o.delta,
        "noise_multiplier": plan.noise_multiplier, "epochs_per_record": plan.epochs_per_record,
        "final_accuracy": final, "final_version": finalised[-1]["version"] if finalised else 0,
        "rejected_proposals": [h["version"] for h in history if not h["finalised"]],
        "baseline_accuracy": baseline,
        "majority_class_rate": plan.majority_rate,
        "max_epsilon": max(eps_agent) if eps_agent else None,
        "mean_epsilon": sum(eps_agent) / len(eps_agent) if eps_agent else None,
        "within_budget": (o.epsilon is None
                          or all(e <= o.epsilon + 1e-9 for e in eps_agent)),
        "per_round": history, "per_device": devices, "rejected_by_reason": rejected,
        "ledger_height": client.height(),
        "ledger_audit": ledger_audit(client, orgs=plan.orgs, rounds=o.rounds),
        "restarts": [e.as_dict() for e in run.restarts],
        "status": "completed",
    }
    return summary


def ledger_audit(client: Any, *, orgs: tuple[str, ...], rounds: int) -> dict[str, Any]:
    """Every block's txs: round records per (org, round), samples per device, invalid txs.

    A round record is valid at most once per (org, round, group) (the contract rejects a
    second one, which then shows among the invalid txs); ``missing`` lists the (org,
    round) pairs of the session's rounds with no valid record.
    """
    records: dict[str, dict[int, int]] = {org: {} for org in orgs}
    samples: dict[str, int] = {}
    invalid: dict[str, dict[str, int]] = {}
    invalid_rounds: dict[str, int] = {}
    total = 0
    for h in range(1, client.height() + 1):
        for t in client.block(h).get("txs", []):
            total += 1
            kind = str(t.get("kind"))
            if not t.get("valid"):
                reason = re.sub(r"[0-9a-f]{16,}", "<id>", str(t.get("reason")))
                invalid.setdefault(kind, {})
                invalid[kind][reason] = invalid[kind].get(reason, 0) + 1
                continue
            if kind != "round_record":
                continue
            tx = decode_tx(bytes.fromhex(t["data"]))
            org = tx.submitter.partition("/")[0]
            rnd = int(tx.body["round"])
            records.setdefault(org, {})
            records[org][rnd] = records[org].get(rnd, 0) + 1
            for dev, rec in dict(tx.body.get("devices", {})).items():
                samples[f"{org}/{dev}"] = samples.get(f"{org}/{dev}", 0) + int(rec["samples"])
    for kind, reasons in invalid.items():
        invalid_rounds[kind] = sum(reasons.values())
    return {
        "txs": total,
        "round_records": {org: {str(r): n for r, n in sorted(by.items())}
                          for org, by in records.items()},
        "missing": [[org, r] for org in orgs for r in range(rounds)
                    if records.get(org, {}).get(r, 0) == 0],
        "duplicated": [[org, r] for org, by in records.items() for r, n in by.items() if n > 1],
        "samples": samples,
        "invalid": invalid,
        "invalid_total": sum(invalid_rounds.values()),
    }


def _accountant(state_dir: Path) -> dict[str, Any] | None:
    """The device's accountant file: written (fsync) before each release, so never stale."""
    try:
        data = json.loads((state_dir / "privacy.json").read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def finish(run: StackRun, summary: dict[str, Any]) -> dict[str, Any]:
    """After every process stopped: verify the ledgers, plot, write ``summary.json``."""
    # the agents rewrote their status files when they stopped: take the final counts
    for d in summary.get("per_device", []):
        org, _, dev = d["device"].partition("/")
        try:
            st = json.loads((run.root / "agents" / f"{org}-{dev}" / "state" /
                             "status.json").read_text())
            d["batches"] = st.get("counters", {}).get("batches_released", d["batches"])
        except (OSError, ValueError):
            pass
    summary["ledger_verify"] = _verify(run)
    summary["wall_time_s"] = round(time.monotonic() - run.started, 1)
    summary.setdefault("restarts", [e.as_dict() for e in run.restarts])
    summary.setdefault("status", "completed")
    base = summary.get("baseline_accuracy") or {}
    if _plot(summary["per_round"], run.root / "progress.png", summary.get("epsilon_budget"),
             majority=summary.get("majority_class_rate"), baseline=base.get("litert")):
        summary["plot"] = str(run.root / "progress.png")
    (run.root / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def _verify(run: StackRun) -> dict[str, Any]:
    """``splitfed-ledger verify`` on every node's database (after the nodes stopped)."""
    from deploy.stack.launcher import _bin

    out: dict[str, Any] = {}
    root = run.root / "ledger"
    for db in sorted(root.iterdir()) if root.is_dir() else []:
        res = subprocess.run([_bin("splitfed-ledger"), "verify", "--data-dir", str(db),
                              *VERIFY_ARGS],
                             capture_output=True, text=True, timeout=300, check=False)
        out[db.name] = {"ok": res.returncode == 0,
                        "output": (res.stdout + res.stderr).strip()[-300:]}
    return out


def _baseline(manifest: Manifest) -> dict[str, float] | None:
    """Centralized non-private accuracy of the same model on the same windows.

    Read from ``bench/results/models.json`` (``splitfed-models baseline`` /
    ``make bench``): Keras, and the two LiteRT halves chained in one process.
    """
    path = Path(__file__).resolve().parents[2] / "bench" / "results" / "models.json"
    try:
        rows = json.loads(path.read_text()).get("accuracy", [])
    except (OSError, ValueError, AttributeError):
        return None
    for row in rows:
        lite = row.get("litert", {}) if isinstance(row, dict) else {}
        if (lite.get("dataset"), lite.get("model_id"), lite.get("cut")) == (
                manifest.dataset, manifest.model_id, manifest.cut):
            return {"keras": float(row["keras"]["accuracy"]),
                    "litert": float(lite["accuracy"])}
    return None
