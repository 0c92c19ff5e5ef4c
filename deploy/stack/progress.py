"""Watching a stack run and summarising it.

The watcher polls what an operator or auditor would look at, never the
processes' memory: the ledger (height, proposals with the server's held-out
accuracy, finalised versions, each device's recorded spend), the gateways'
Prometheus endpoints (messages accepted and rejected) and each agent's
status file (its own accountant's epsilon). One line per decided round.
"""

from __future__ import annotations

import json
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

if TYPE_CHECKING:
    from deploy.stack.launcher import StackRun
    from models.manifest import Manifest
    from protocol.ledger.genesis import Genesis

__all__ = ["Watcher", "finish", "summarise"]

SESSION = "s1"
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

    def snapshot(self, proposal: dict[str, Any]) -> dict[str, Any]:
        client = self.run.ledger_client()
        status = self.agent_status()
        eps = {n: float(s.get("privacy", {}).get("epsilon", 0.0)) for n, s in status.items()}
        accepted, rejected = self.counts()
        finalised = [m.version for m in client.models(SESSION)]
        metrics = proposal.get("metrics", {})
        return {"round": len(self.history), "version": proposal.get("version"),
                "accuracy": metrics.get("accuracy"), "loss": metrics.get("loss"),
                "finalised": bool(proposal.get("finalised")),
                "finalised_version": max(finalised) if finalised else 0,
                "epsilon_max": max(eps.values()) if eps else 0.0,
                "epsilon_mean": sum(eps.values()) / len(eps) if eps else 0.0,
                "accepted": accepted, "rejected": rejected, "ledger_height": client.height(),
                "elapsed_s": round(time.monotonic() - self.run.started, 1)}

    def _decided(self, proposal: dict[str, Any]) -> bool:
        """Finalised, or every validator voted and the accepts cannot reach the quorum."""
        if proposal.get("finalised"):
            return True
        votes = proposal.get("votes") or {}
        accepts = sum(1 for v in votes.values() if v.get("accept"))
        return len(votes) >= len(self.plan.orgs) and accepts < vote_quorum(len(self.plan.orgs))

    def watch(self, server: Child, *, on_progress: Callable[[dict[str, Any]], None] | None,
              timeout_per_round: float = 900.0) -> list[dict[str, Any]]:
        rounds = self.plan.options.rounds
        deadline = time.monotonic() + timeout_per_round * (rounds + 1)
        seen = 0
        while True:
            client = self.run.ledger_client()
            try:
                proposals = sorted(client.proposals(SESSION), key=lambda p: p["version"])
            except Exception:  # the node may be busy cutting a block; try again
                proposals = []
            decided = [p for p in proposals if self._decided(p)]
            while seen < len(decided):
                snap = self.snapshot(decided[seen])
                self.history.append(snap)
                seen += 1
                if on_progress is not None:
                    on_progress(snap)
            if not server.alive():
                if server.proc.returncode not in (0, None):
                    raise StackError(f"server exited with {server.proc.returncode}:\n"
                                     f"{server.log_tail()}")
                if seen >= rounds or not proposals:
                    return self.history
            dead = [c for c in self.run.procs.dead_critical()]
            if dead:
                raise StackError(f"{dead[0].name} exited ({dead[0].proc.returncode}):\n"
                                 f"{dead[0].log_tail()}")
            if time.monotonic() > deadline:
                raise StackError(f"no progress: {seen} of {rounds} rounds decided in time")
            time.sleep(0.5)


def _plot(history: list[dict[str, Any]], path: Path, budget: float | None) -> bool:
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
        "max_epsilon": max(eps_agent) if eps_agent else None,
        "mean_epsilon": sum(eps_agent) / len(eps_agent) if eps_agent else None,
        "within_budget": (o.epsilon is None
                          or all(e <= o.epsilon + 1e-9 for e in eps_agent)),
        "per_round": history, "per_device": devices, "rejected_by_reason": rejected,
        "ledger_height": client.height(),
    }
    return summary


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
    for d in summary["per_device"]:
        org, _, dev = d["device"].partition("/")
        try:
            st = json.loads((run.root / "agents" / f"{org}-{dev}" / "state" /
                             "status.json").read_text())
            d["batches"] = st.get("counters", {}).get("batches_released", d["batches"])
        except (OSError, ValueError):
            pass
    summary["ledger_verify"] = _verify(run)
    summary["wall_time_s"] = round(time.monotonic() - run.started, 1)
    if _plot(summary["per_round"], run.root / "progress.png", summary["epsilon_budget"]):
        summary["plot"] = str(run.root / "progress.png")
    (run.root / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def _verify(run: StackRun) -> dict[str, Any]:
    """``splitfed-ledger verify`` on every node's database (after the nodes stopped)."""
    from deploy.stack.launcher import _bin

    out = {}
    for db in sorted((run.root / "ledger").iterdir()):
        res = subprocess.run([_bin("splitfed-ledger"), "verify", "--data-dir", str(db)],
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
