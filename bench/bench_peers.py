"""This system vs Flower, side by side in one run (``python -m bench peers``).

Same data (PLAID, the stack's non-IID split of 2 organisations x 4 devices
from :func:`deploy.stack.plan.make_plan`), same model (zoo ``cnn1d``, cut 1:
our LiteRT halves vs the identical architecture in Keras for Flower), same
optimiser budget (rounds x local steps x batch size), same evaluation set
(the server's held-out half of the test split). Measured:

1. accuracy vs privacy: ours at epsilon 1, 4, 8 and non-private; Flower
   FedAvg with client-side fixed clipping at the same epsilons (different
   unit and trust model, see :mod:`bench.peers.job`) and without DP; the
   centralized non-private Keras baseline;
2. device cost per round: CPU seconds, peak RSS and bytes of one agent vs
   one Flower client;
3. time to 0.9 x the baseline accuracy with 2 x 4 devices.

Environment: ``PEERS_ROUNDS`` (default 20), ``PEERS_EPSILONS`` (default
"1,4,8"), ``PEERS_DEVICE_ROUNDS`` (default 5: rounds of the one-SuperNode
device-cost run), ``PEERS_SKIP_OURS=1`` to run only the Flower side,
``PEERS_RERENDER=1`` to rebuild the table from the committed JSON; ``PEERS_MODEL``,
``PEERS_CUT``, ``PEERS_STEPS``, ``PEERS_BATCH`` choose the model and the per-round budget
(both systems).
See docs/benchmarks.md.
"""

from __future__ import annotations

import logging
import os
import tempfile
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from bench.common import write_results
from bench.peers.flower_device import run_flower_device
from bench.peers.job import flower_epsilon, flower_job, rdp_epsilon
from bench.peers.report import (
    Curve,
    curve_from_flower,
    curve_from_ours,
    fmt,
    fmt_target,
    time_to_target,
)
from bench.peers.runners import ensure_flower_venv, run_flower, run_ours
from deploy.stack.plan import StackOptions, StackPlan, make_plan
from models.data import default_data_dir, default_window, load_windows

log = logging.getLogger(__name__)

ORGS, DEVICES_PER_ORG = 2, 4
SERVER_LR = 5e-3          # Adam on the layers above the cut (models.baseline.TrainConfig)
CLIPPING_NORM = 1.0       # Flower's per-client update clip (L2 over all weights)
TARGET_FRACTION = 0.9


def _plan(rounds: int, data_dir: Path) -> StackPlan:
    from models.datasets.ucr import load_split

    train, test = load_split(data_dir, "PLAID")
    opts = StackOptions(run_dir=Path(tempfile.gettempdir()), data_dir=data_dir, dataset="PLAID",
                        orgs=ORGS, devices_per_org=DEVICES_PER_ORG, rounds=rounds, epsilon=None,
                        model=os.environ.get("PEERS_MODEL", "cnn1d"),
                        cut=int(os.environ.get("PEERS_CUT", "1")),
                        steps_per_round=int(os.environ.get("PEERS_STEPS", "8")),
                        batch_size=int(os.environ.get("PEERS_BATCH", "16")))
    return make_plan(opts, train_labels=np.asarray(train.labels),
                     test_labels=np.asarray(test.labels), num_classes=len(train.class_names))


def centralized_baseline(plan: StackPlan, data_dir: Path) -> dict[str, Any]:
    """Keras, non-private, all training data in one place (models.baseline's recipe)."""
    from models.baseline import TrainConfig, batches, spec_for
    from models.reference import KerasTrainer
    from models.zoo import initial_weights

    windows = load_windows(default_window("PLAID"), data_dir=data_dir)
    cfg = TrainConfig()
    x_train, x_test = windows.normalised()
    spec = spec_for(plan.options.model, windows)
    trainer = KerasTrainer(spec, plan.options.cut, initial_weights(spec, seed=cfg.seed),
                           client_lr=cfg.client_lr, server_lr=cfg.server_lr)
    rng = np.random.default_rng(cfg.seed)
    for _ in range(cfg.epochs):
        for idx in batches(len(x_train), cfg.batch, rng):
            trainer.train_step(x_train[idx], windows.y_train[idx])
    pred = trainer.predict(x_test).argmax(axis=1)
    ev = np.asarray(plan.server_eval)
    return {"epochs": cfg.epochs, "batch": cfg.batch, "client_lr": cfg.client_lr,
            "server_lr": cfg.server_lr,
            "accuracy_eval_half": float(np.mean(pred[ev] == windows.y_test[ev])),
            "accuracy_full_test": float(np.mean(pred == windows.y_test))}


def _eps_name(eps: float | None) -> str:
    return "non-private" if eps is None else f"eps {eps:g}"


def rerender() -> None:
    """Rewrite ``results/peers.md`` from the committed ``peers.json`` (no new measurement)."""
    import json

    from bench.common import RESULTS

    data = json.loads((RESULTS / "peers.json").read_text())
    meta = data.pop("meta")
    rounds = data["setup"]["rounds"]
    settings: list[float | None] = [None if k == "non-private" else float(k.split()[1])
                                    for k in data["flower"]]
    lines = ["# peers", "", f"{meta['time']}, Python {meta['python']}, {meta['machine']}", "",
             "| measure | value |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in table(data, settings, rounds)]
    (RESULTS / "peers.md").write_text("\n".join(lines) + "\n")


def main() -> None:
    if os.environ.get("PEERS_RERENDER") == "1":
        rerender()
        return
    rounds = int(os.environ.get("PEERS_ROUNDS", "20"))
    epsilons = [float(e) for e in os.environ.get("PEERS_EPSILONS", "1,4,8").split(",") if e]
    settings: list[float | None] = [None, *epsilons]
    data_dir = default_data_dir()
    plan = _plan(rounds, data_dir)
    opts = plan.options
    work = Path(tempfile.mkdtemp(prefix="bench-peers-"))
    data: dict[str, Any] = {
        "setup": {"dataset": "PLAID", "orgs": ORGS, "devices_per_org": DEVICES_PER_ORG,
                  "rounds": rounds, "steps_per_round": opts.steps_per_round,
                  "batch_size": opts.batch_size, "client_lr": opts.lr, "server_lr": SERVER_LR,
                  "model": f"{opts.model}/cut{opts.cut}", "delta": opts.delta,
                  "device_records": [len(d.indices) for d in plan.devices],
                  "eval_records": len(plan.server_eval), "workdir": str(work)}}
    data["baseline"] = centralized_baseline(plan, data_dir)
    target = TARGET_FRACTION * data["baseline"]["accuracy_eval_half"]
    data["target_accuracy"] = target

    python = ensure_flower_venv()
    flower: dict[str, Any] = {}
    for eps in settings:
        job = flower_job(plan, name=f"flower-{_eps_name(eps).replace(' ', '')}",
                         data_dir=data_dir, server_lr=SERVER_LR, epsilon=eps,
                         clipping_norm=CLIPPING_NORM)
        out = run_flower(job, python=python, workdir=work)
        if job.noise_multiplier is not None:
            out["epsilon_exact"] = flower_epsilon(noise_multiplier=job.noise_multiplier,
                                                  delta=job.delta, rounds=rounds)
            out["epsilon_rdp"] = rdp_epsilon(noise_multiplier=job.noise_multiplier,
                                             delta=job.delta, rounds=rounds)
        flower[_eps_name(eps)] = out
    data["flower"] = flower
    device_rounds = min(rounds, int(os.environ.get("PEERS_DEVICE_ROUNDS", "5")))
    job = flower_job(plan, name="flower-deployment", data_dir=data_dir, server_lr=SERVER_LR,
                     epsilon=None, clipping_norm=CLIPPING_NORM)
    data["flower_device"] = run_flower_device(replace(job, rounds=device_rounds),
                                              python=python, workdir=work)

    ours: dict[str, Any] = {}
    if os.environ.get("PEERS_SKIP_OURS") != "1":
        for eps in settings:
            ours[_eps_name(eps)] = run_ours(
                rounds=rounds, epsilon=eps, orgs=ORGS, devices_per_org=DEVICES_PER_ORG,
                data_dir=data_dir, workdir=work,
                extra=["--model", opts.model, "--cut", str(opts.cut),
                       "--steps-per-round", str(opts.steps_per_round),
                       "--batch-size", str(opts.batch_size)])
    else:
        ours = {_eps_name(e): {"skipped": "PEERS_SKIP_OURS=1"} for e in settings}
    data["ours"] = ours
    write_results("peers", data, table(data, settings, rounds))


def _ours_curve(res: dict[str, Any]) -> Curve | None:
    return curve_from_ours(res["summary"]) if "summary" in res else None


def _flower_curve(res: dict[str, Any]) -> Curve | None:
    return curve_from_flower(res) if "rounds" in res else None


def _why(res: dict[str, Any]) -> str:
    return str(res.get("skipped") or res.get("error") or "n/a")


def table(data: dict[str, Any], settings: list[float | None],
          rounds: int) -> list[tuple[str, str]]:
    """The markdown rows (measure, value)."""
    rows: list[tuple[str, str]] = []
    b = data["baseline"]
    rows.append(("accuracy, centralized Keras, non-private (server eval half / full test)",
                 f"{b['accuracy_eval_half']:.3f} / {b['accuracy_full_test']:.3f}"))
    for eps in settings:
        name = _eps_name(eps)
        o, f = data["ours"][name], data["flower"][name]
        oc, fc = _ours_curve(o), _flower_curve(f)
        unit = ("" if eps is None else
                " (matched epsilon, different unit and trust model: ours = one record, local DP "
                "vs the server; Flower = one client's update per round, server adds the noise)")
        rows.append((f"accuracy after {rounds} rounds (best round), {name}{unit}",
                     f"ours {oc.summary() if oc else _why(o)}; "
                     f"Flower {fc.summary() if fc else _why(f)}"))
        if eps is not None and "noise_multiplier" in f and f["noise_multiplier"] is not None:
            ours_z = (o.get("summary") or {}).get("noise_multiplier")
            rows.append((f"noise multiplier, {name}",
                         f"ours {fmt(ours_z)} (per activation row, "
                         f"{(o.get('summary') or {}).get('epochs_per_record', '?')} releases per "
                         f"record); Flower {f['noise_multiplier']:.3f} (per round on the mean, "
                         f"{rounds} releases; exact eps {f['epsilon_exact']:.3f}, "
                         f"RDP eps {f['epsilon_rdp']:.3f})"))
    for name in ("non-private", "eps 8"):
        if name not in data["ours"]:
            continue
        o, f = data["ours"][name], data["flower"][name]
        oc, fc = _ours_curve(o), _flower_curve(f)
        t = data["target_accuracy"]
        rows.append((f"time to {t:.3f} (0.9 x baseline), {name}: first round reaching it, "
                     "seconds since launch",
                     f"ours {fmt_target(time_to_target(oc, t), rounds) if oc else _why(o)}; "
                     f"Flower {fmt_target(time_to_target(fc, t), rounds) if fc else _why(f)}"))
    rows += _cost_rows(data, rounds)
    return rows


def _cost_rows(data: dict[str, Any], rounds: int) -> list[tuple[str, str]]:
    rows = []
    dev = data.get("flower_device", {})
    if "cost" in dev:
        c = dev["cost"]
        rss = c["peak_rss_mib"]
        rows.append(("device cost per round, one Flower client (deployment engine, 1 SuperNode, "
                     "non-private)",
                     f"CPU {c['cpu_s_per_round']:.2f} s (SuperNode + SuperExec + one "
                     f"flwr-clientapp process per round, TF start-up included); peak RSS "
                     f"{rss['clientapp']:.0f} MiB ClientApp, {rss['supernode']:.0f} MiB SuperNode, "
                     f"{rss['superexec']:.0f} MiB SuperExec; TCP to SuperLink: sent "
                     f"{c['tcp_bytes_sent_per_round'] / 1024:.1f} KiB, received "
                     f"{c['tcp_bytes_received_per_round'] / 1024:.1f} KiB"))
    else:
        rows.append(("device cost per round, one Flower client", _why(dev)))
    f = data["flower"].get("non-private", {})
    per_client = list(f.get("clients", {}).values())
    if per_client:
        cpu = float(np.mean([m["cpu_s"] for m in per_client]))
        b_in = float(np.mean([m["bytes_in"] for m in per_client]))
        b_out = float(np.mean([m["bytes_out"] for m in per_client]))
        rows.append(("Flower client, simulation engine (warm Ray worker), non-private",
                     f"CPU {cpu:.3f} s per train call; model in {b_in / 1024:.1f} KiB, "
                     f"out {b_out / 1024:.1f} KiB (ArrayRecord bytes)"))
    o = data["ours"].get("non-private", {})
    agents = o.get("agents", {})
    if "mean_cpu_s" in agents:
        rows.append(("device cost per round, our agent (non-private)",
                     f"CPU {agents['mean_cpu_s'] / rounds:.3f} s (whole life / rounds, incl. "
                     f"start-up); peak RSS {agents['max_peak_rss_mib']:.0f} MiB; sent "
                     f"{agents['mean_bytes_sent'] / rounds / 1024:.1f} KiB, received "
                     f"{agents['mean_bytes_received'] / rounds / 1024:.1f} KiB (TCP payload "
                     f"to the broker, kernel counters)"))
    else:
        rows.append(("device cost per round, our agent", _why(o)))
    return rows
