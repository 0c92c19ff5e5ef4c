"""Adapters that run each side of the comparison as subprocesses and measure them.

* :func:`ensure_flower_venv`: ``flwr`` 1.42 would downgrade protobuf (7 -> 6),
  packaging and rich in the project venv (``pip install --dry-run flwr``),
  so Flower lives in its own ``.venv-flower`` (created here on first use,
  never by ``make test``) with the same tensorflow-cpu and numpy versions.
* :func:`run_flower`: one simulation run (:mod:`bench.peers.flower_app`),
  its Ray worker processes sampled by :class:`bench.peers.measure.ProcSampler`.
* :func:`run_ours`: ``splitfed demo ... --summary-json`` with every
  ``splitfed-agent`` of the run sampled the same way; if the installed
  ``splitfed`` has no ``demo`` command the result says so and is skipped.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path
from typing import Any

from bench.peers.job import FlowerJob
from bench.peers.measure import ProcSample, ProcSampler, config_value

log = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parents[2]
FLOWER_VENV = REPO / ".venv-flower"
FLWR_VERSION = "1.42.0"


def ensure_flower_venv(venv: Path = FLOWER_VENV) -> Path:
    """Python of the Flower venv; created (flwr[simulation] + the same TF/numpy) when missing."""
    python = venv / "bin" / "python"
    if python.exists():
        return python
    log.warning("creating %s (flwr %s, tensorflow-cpu, numpy); this takes a few minutes",
                venv, FLWR_VERSION)
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    (venv / ".gitignore").write_text("*\n")  # keeps git, ruff and pytest out of it
    pins = [f"flwr[simulation]=={FLWR_VERSION}",
            f"tensorflow-cpu=={metadata.version('tensorflow-cpu')}",
            f"numpy=={metadata.version('numpy')}"]
    subprocess.run([str(python), "-m", "pip", "install", "--quiet", *pins], check=True)
    return python


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO)
    env["TF_CPP_MIN_LOG_LEVEL"] = "2"
    env["RAY_DEDUP_LOGS"] = "0"
    return env


def _summary(samples: list[ProcSample], *, peer_port: int | None = None) -> dict[str, Any]:
    """Per-process CPU, peak RSS and socket bytes, plus their mean and max."""
    rows = []
    for s in samples:
        sent, recv = s.bytes_to(peer_port)
        rows.append({"pid": s.pid, "cpu_s": round(s.cpu_s, 3),
                     "peak_rss_mib": round(s.peak_rss_mib, 1),
                     "bytes_sent": sent, "bytes_received": recv})
    if not rows:
        return {"processes": []}
    n = len(rows)
    return {"processes": rows,
            "mean_cpu_s": sum(r["cpu_s"] for r in rows) / n,
            "max_peak_rss_mib": max(r["peak_rss_mib"] for r in rows),
            "mean_bytes_sent": sum(r["bytes_sent"] for r in rows) / n,
            "mean_bytes_received": sum(r["bytes_received"] for r in rows) / n}


def run_flower(job: FlowerJob, *, python: Path, workdir: Path,
               timeout: float = 1800.0) -> dict[str, Any]:
    """One Flower simulation; its JSON output plus the sampled Ray client workers."""
    workdir.mkdir(parents=True, exist_ok=True)
    job_path, out_path = workdir / f"{job.name}.job.json", workdir / f"{job.name}.out.json"
    job.write(job_path)
    log_path = workdir / f"{job.name}.log"
    t0 = time.monotonic()
    with ProcSampler(lambda cmd: any("ClientAppActor" in a for a in cmd),
                     sockets=False) as sampler, log_path.open("w") as logf:
        proc = subprocess.run([str(python), "-m", "bench.peers.flower_app", str(job_path),
                               str(out_path)], cwd=REPO, env=_env(), stdout=logf,
                              stderr=subprocess.STDOUT, timeout=timeout, check=False)
    if proc.returncode != 0 or not out_path.exists():
        return {"error": f"flower run {job.name} exited {proc.returncode}; log {log_path}"}
    out: dict[str, Any] = json.loads(out_path.read_text())
    out["process_wall_s"] = time.monotonic() - t0
    out["workers"] = _summary(list(sampler.samples.values()))
    return out


def demo_available() -> str | None:
    """None if ``splitfed demo`` exists, else why not."""
    exe = Path(sys.executable).parent / "splitfed"
    if not exe.exists():
        return f"{exe} not installed"
    res = subprocess.run([str(exe), "demo", "--help"], capture_output=True, text=True,
                         timeout=120, check=False, env=_env())
    if res.returncode != 0:
        return "splitfed demo not available: " + (res.stderr.strip().splitlines() or ["?"])[-1]
    return None


def run_ours(*, rounds: int, epsilon: float | None, orgs: int, devices_per_org: int,
             data_dir: Path, workdir: Path, extra: list[str] | None = None,
             timeout: float | None = None) -> dict[str, Any]:
    """One ``splitfed demo`` run; its summary plus the sampled agent processes.

    A run that has not finished after ``timeout`` (default 90 s + 10 s per
    round) is interrupted (SIGINT: the launcher stops every process and keeps
    the run directory) and reported as stalled with its last progress line.
    """
    if timeout is None:
        timeout = 90.0 + 10.0 * rounds
    why = demo_available()
    if why is not None:
        return {"skipped": why}
    workdir.mkdir(parents=True, exist_ok=True)
    name = "nonprivate" if epsilon is None else f"eps{epsilon:g}"
    run_dir = Path(tempfile.mkdtemp(prefix=f"ours-{name}-", dir=workdir))
    summary_path = workdir / f"ours-{name}.summary.json"
    argv = [str(Path(sys.executable).parent / "splitfed"), "demo", "--dataset", "PLAID",
            "--data-dir", str(data_dir), "--orgs", str(orgs),
            "--devices-per-org", str(devices_per_org), "--rounds", str(rounds),
            "--run-dir", str(run_dir), "--summary-json", str(summary_path),
            *(["--non-private"] if epsilon is None else ["--epsilon", str(epsilon)]),
            *(extra or [])]

    def is_agent(cmd: list[str]) -> bool:
        return (any(a.endswith("splitfed-agent") for a in cmd[:2]) and "run" in cmd
                and any(str(run_dir) in a for a in cmd))

    t0 = time.monotonic()
    log_path = workdir / f"ours-{name}.log"
    stalled = False
    with ProcSampler(is_agent) as sampler, log_path.open("w") as logf:
        proc = subprocess.Popen(argv, cwd=REPO, env=_env(), stdout=logf,
                                stderr=subprocess.STDOUT)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            stalled = True
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=90)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=30)
    if stalled or proc.returncode != 0 or not summary_path.exists():
        lines = [ln for ln in log_path.read_text().splitlines() if ln.startswith("round")]
        last = lines[-1] if lines else "no round finished"
        what = (f"stalled: not finished after {timeout:.0f} s, interrupted" if stalled
                else f"splitfed demo exited {proc.returncode}")
        return {"error": f"{what}; last progress: {' '.join(last.split())}; log {log_path}",
                "run_dir": str(run_dir), "rounds_done": len(lines)}
    summary: dict[str, Any] = json.loads(summary_path.read_text())
    samples = list(sampler.samples.values())
    port = None
    for s in samples:
        cfg = s.cmdline[s.cmdline.index("--config") + 1] if "--config" in s.cmdline else None
        got = config_value(cfg, "mqtt", "port") if cfg else None
        if isinstance(got, int):
            port = got
    return {"summary": summary, "process_wall_s": time.monotonic() - t0,
            "agents": _summary(samples, peer_port=port), "mqtt_port": port}
