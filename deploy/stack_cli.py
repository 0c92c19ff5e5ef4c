"""``splitfed demo`` and ``splitfed stack up``: run the one-machine stack.

Exit codes: 0 the run completed (see the summary); 1 a process failed or the
run was interrupted; 2 bad options.
"""

from __future__ import annotations

import json
import logging
import signal
import sys
import time
from pathlib import Path
from typing import Any

import click

from models.data import default_data_dir
from protocol.errors import ConfigError, SplitfedError

REPO = Path(__file__).resolve().parent.parent


def _fmt(v: Any, spec: str = ".3f") -> str:
    return "-" if v is None else format(v, spec)


def _progress_line(h: dict[str, Any]) -> str:
    state = "finalised" if h["finalised"] else "REJECTED"
    restarts = f"  restarts {h['restarts']}" if h.get("restarts") else ""
    return (f"round {h['round'] + 1:>3}  acc {_fmt(h['accuracy'])}  "
            f"eps max {_fmt(h['epsilon_max'], '.2f')} mean {_fmt(h['epsilon_mean'], '.2f')}  "
            f"msgs ok {int(h['accepted']):>5} rejected {int(h['rejected']):>3}  "
            f"height {h['ledger_height']:>4}  v{h['version']} {state} "
            f"(model v{h['finalised_version']})  {h['elapsed_s']:.0f}s{restarts}")


def _print_restarts(s: dict[str, Any]) -> None:
    restarts = s.get("restarts") or []
    if not restarts:
        click.echo("restarts                  none")
        return
    by: dict[str, list[str]] = {}
    for r in restarts:
        by.setdefault(r["service"], []).append(
            ("gave up" if r["gave_up"] else f"exit {r['exit_code']}") + f" at {r['at_s']:.0f}s")
    click.echo("restarts                  " + "; ".join(
        f"{svc} x{len(v)} ({', '.join(v)})" for svc, v in sorted(by.items())))


def _print_summary(s: dict[str, Any]) -> None:
    echo = click.echo
    echo("")
    echo("== summary ==")
    base = s.get("baseline_accuracy") or {}
    acc = s.get("final_accuracy")
    echo(f"final held-out accuracy   {_fmt(acc)} of model v{s['final_version']}   (majority "
         f"class {_fmt(s.get('majority_class_rate'))}; centralized non-private baseline, same "
         f"model: Keras {_fmt(base.get('keras'))}, LiteRT {_fmt(base.get('litert'))})")
    if not base:
        model, _, cut = str(s["model"]).partition("/cut")
        echo(f"                          (no baseline recorded for {s['dataset']} {s['model']}: "
             f"`splitfed-models baseline --dataset {s['dataset']} --model {model} --cut {cut}` "
             f"computes it, needs the [build] extra; this summary shows the results "
             f"`python -m bench models` writes to bench/results/models.json)")
    if s["rejected_proposals"]:
        echo(f"rejected by the validators: proposals {s['rejected_proposals']} (never loaded)")
    if s["epsilon_budget"] is None:
        echo("privacy                   NON-PRIVATE run: epsilon inf (mode none, declared in "
             "every message and on the ledger)")
    else:
        labels = "labels public" if s.get("labels_public") else "labels by randomized response"
        echo(f"privacy                   mode {s.get('privacy_mode')}: epsilon max "
             f"{_fmt(s['max_epsilon'], '.3f')} mean {_fmt(s['mean_epsilon'], '.3f')} of budget "
             f"{s['epsilon_budget']} per record (delta {s['delta']:g}; {labels}); within "
             f"budget: {s['within_budget']}")
    non_private = s["epsilon_budget"] is None
    for d in s["per_device"]:
        agent = "inf" if non_private else _fmt(d["epsilon_agent"], ".3f")
        ledger = "inf" if non_private else _fmt(d["epsilon_ledger"], ".3f")
        echo(f"  {d['device']:<14} eps agent {agent}  ledger {ledger}  {d['batches']} batches"
             f"  {d['records']} records  meter over {d['transport']}")
    rej = {k: v for org in s["rejected_by_reason"].values() for k, v in org.items() if v}
    echo(f"rejected messages         {rej or 'none'}")
    _print_restarts(s)
    ok = all(v["ok"] for v in s["ledger_verify"].values())
    echo(f"splitfed-ledger verify    {'OK' if ok else 'FAILED'} ({len(s['ledger_verify'])} node"
         f"{'s' if len(s['ledger_verify']) != 1 else ''}, height {s['ledger_height']})")
    echo(f"run directory             {s['run_dir']}  (logs/, summary.json, progress.png)")
    echo(f"wall time                 {s['wall_time_s']:.0f} s")


RUNS = REPO / "runs"


def _options(**kw: Any) -> Any:
    from deploy.stack.plan import StackOptions

    run_dir = kw.pop("run_dir") or RUNS / time.strftime("%Y%m%d-%H%M%S")
    if kw.pop("non_private"):
        kw["epsilon"] = None
    if kw.get("orgs") is None:
        kw["orgs"] = 3 if kw.get("ledger") == "etcd" else 2
    return StackOptions(run_dir=Path(run_dir).resolve(), **kw)


def _stack_options(f: Any) -> Any:
    opts = [
        click.option("--dataset", default="PLAID", show_default=True,
                     help="a dataset name in --data-dir, or a path to NAME_TRAIN.ts"),
        click.option("--data-dir", type=click.Path(file_okay=False, path_type=Path),
                     default=default_data_dir,
                     show_default="$SPLITFED_DATA_DIR or the checkout's data/"),
        click.option("--orgs", default=None, type=int,
                     help="organisations  [default: 2; 3 with --ledger etcd, the smallest "
                          "Raft quorum that survives one member down]"),
        click.option("--devices-per-org", default=2, show_default=True, type=int),
        click.option("--rounds", default=3, show_default=True, type=int),
        click.option("--epsilon", default=8.0, show_default=True, type=float,
                     help="privacy budget per record (window) per device"),
        click.option("--non-private", is_flag=True, help="no local DP (declared, for comparison)"),
        click.option("--sfl", type=click.Choice(["v1", "v2"]), default="v2", show_default=True),
        click.option("--ledger", type=click.Choice(["solo", "etcd"]), default="solo",
                     show_default=True),
        click.option("--privacy-mode", type=click.Choice(["sl-frozen", "sl-dpsgd"]),
                     default="sl-frozen", show_default=True,
                     help="sl-frozen: client half never trained, never uploaded; sl-dpsgd: "
                          "client half changed only by DP-SGD steps charged per batch"),
        click.option("--labels-public", is_flag=True,
                     help="declare labels public on the ledger (default: randomized response,"
                          " a quarter of the budget)"),
        click.option("--model", default="mlp_dp", show_default=True,
                     help="zoo model; mlp_dp has a narrow cut made for local DP"),
        click.option("--cut", default=2, show_default=True, type=int),
        click.option("--steps-per-round", default=4, show_default=True, type=int),
        click.option("--lr", default=0.01, show_default=True, type=float,
                     help="learning rate of both halves (sent with start_round)"),
        click.option("--batch-size", default=8, show_default=True, type=int),
        click.option("--server-replay-steps", default=0, show_default=True, type=int,
                     help="extra server-half steps per batch on rows already received "
                          "(post-processing: no privacy cost)"),
        click.option("--seed", default=0, show_default=True, type=int),
        click.option("--run-dir", type=click.Path(file_okay=False, path_type=Path),
                     default=None, help="default: runs/<timestamp> in the checkout"),
        click.option("--keep-runs", default=5, show_default=True, type=click.IntRange(min=0),
                     help="before a run in runs/, delete the oldest runs/<timestamp> "
                          "directories so that this many remain (0: keep all; an explicit "
                          "--run-dir is never pruned)"),
        click.option("--summary-json", type=click.Path(dir_okay=False, path_type=Path),
                     default=None, help="also write the summary here"),
    ]
    for o in reversed(opts):
        f = o(f)
    return f


def _check_data(dataset: str, data_dir: Path) -> None:
    """Fail before any process starts if the named dataset's files are missing or unreadable."""
    from models.data import check_dataset

    if dataset == "synthetic-vibration" or dataset.endswith(".ts"):
        return
    check_dataset(data_dir, dataset)


@click.command(name="demo")
@_stack_options
def demo_cmd(summary_json: Path | None, keep_runs: int, **kw: Any) -> None:
    """Run the whole system on this machine and show it training (Ctrl-C stops it).

    Every service runs supervised (restarted on failure with backoff, at most 5
    restarts in 300 s); a run that is interrupted or fails still writes
    summary.json (marked "interrupted" or "failed") and progress.png. Runs in
    runs/ are pruned to the last --keep-runs.
    """
    from deploy.stack.launcher import StackRun
    from deploy.stack.runs import prune_runs

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        options = _options(**kw)
        _check_data(options.dataset, options.data_dir)
    except ConfigError as exc:
        raise click.UsageError("; ".join(exc.problems)) from exc
    if options.run_dir.parent == RUNS.resolve() and keep_runs > 0:
        gone = prune_runs(RUNS, keep=keep_runs, new=options.run_dir.name)
        if gone:
            click.echo(f"pruned {len(gone)} old run(s) from {RUNS} (keeping the last "
                       f"{keep_runs}; --keep-runs)")
    run = StackRun(options, on_progress=lambda h: click.echo(_progress_line(h)),
                   echo=click.echo)

    def _interrupt(signum: int, _frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, _interrupt)
    try:
        summary = run.run()
    except KeyboardInterrupt:
        run.close()
        click.echo(f"interrupted; every process stopped; partial summary.json and progress.png "
                   f"in {options.run_dir}", err=True)
        sys.exit(1)
    except SplitfedError as exc:
        click.echo(f"splitfed demo: {exc}", err=True)
        click.echo(f"logs: {options.run_dir / 'logs'} (partial summary.json in "
                   f"{options.run_dir})", err=True)
        sys.exit(1)
    _print_summary(summary)
    if summary_json is not None:
        summary_json.write_text(json.dumps(summary, indent=2) + "\n")


@click.group(name="stack")
def stack_group() -> None:
    """The one-machine stack (the same as `splitfed demo`)."""


stack_group.add_command(demo_cmd, name="up")
