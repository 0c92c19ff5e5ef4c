"""One Flower client as a device would run it: Flower's deployment engine on loopback.

Theory of operation: :func:`run_flower_device` writes a minimal Flower App
(``pyproject.toml`` + a module exposing :mod:`bench.peers.flower_app`'s
ServerApp and ClientApp) and a Flower CLI config (``FLWR_HOME``, one
insecure connection to 127.0.0.1), starts ``flower-superlink`` and ONE
``flower-supernode`` (both insecure, 127.0.0.1 only, runtime dependency
installation disabled), submits the run with ``flwr run --stream`` and
samples every process of the SuperNode side with
:class:`bench.peers.measure.ProcSampler`: the SuperNode, the SuperExec it
starts, and the ``flwr-clientapp`` process the SuperExec starts for every
message (Flower 1.42's default ``subprocess`` isolation: each round pays the
Python + TensorFlow start-up again). The job is one device's share of the
stack's split with the same rounds, steps and batch size: what one device
does per round does not depend on how many others take part.

Device CPU = SuperNode + SuperExec + ClientApp processes (sampled, or the
SuperExec's reaped-children counters, whichever is larger). Bytes = TCP
payload the SuperNode exchanged with the SuperLink (kernel counters; HTTP
requests, Flower 1.42's Fleet API) and the ArrayRecord bytes the ClientApp
received and returned.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import subprocess
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from bench.peers.job import FlowerJob
from bench.peers.measure import ProcSample, ProcSampler
from deploy.broker import free_port
from deploy.stack.procs import port_open

__all__ = ["run_flower_device"]

_PYPROJECT = """[build-system]
requires = ["hatchling"]
build-backend = "hatchling.build"

[project]
name = "splitfedpeers"
version = "1.0.0"
description = "iiot-splitfed benchmark: FedAvg on the zoo model (bench/peers)"
license = "Apache-2.0"
dependencies = ["flwr==1.42.0"]

[tool.hatch.build.targets.wheel]
packages = ["."]

[tool.flwr.app]
publisher = "iiotsplitfed"

[tool.flwr.app.components]
serverapp = "peers_fab:server"
clientapp = "peers_fab:client"
"""

_APP = '''"""Flower App entry points (written by bench/peers/flower_device.py)."""

from bench.peers import flower_app

client = flower_app.client_app()
server = flower_app.server_app({})
'''


def _wait_port(port: int, proc: subprocess.Popen[bytes], what: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not port_open("127.0.0.1", port):
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what} not listening on 127.0.0.1:{port} after {timeout:.0f} s")
        time.sleep(0.1)


def _stop(procs: list[subprocess.Popen[bytes]]) -> None:
    for p in reversed(procs):
        if p.poll() is None:
            p.terminate()
    for p in reversed(procs):
        try:
            p.wait(timeout=20)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(timeout=10)


def _become_subreaper() -> None:
    """Orphans of our children (the SuperExec outlives its SuperNode) re-parent to us."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER


def _reap_orphans(timeout: float = 20.0) -> None:
    """Wait for re-parented orphans so none is left behind (not even as a zombie)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            time.sleep(0.1)


def _device_cost(samples: list[ProcSample], *, node_port: int, link_port: int,
                 rounds: int) -> dict[str, Any]:
    node = [s for s in samples if any("flower-supernode" in a for a in s.cmdline[:2])]
    execs = [s for s in samples if any("flower-superexec" in a for a in s.cmdline[:2])]
    apps = [s for s in samples if any("flwr-clientapp" in a for a in s.cmdline[:2])]
    base = sum(s.cpu_s for s in node + execs)
    app_cpu = max(sum(s.cpu_s for s in apps), sum(s.children_cpu_s for s in execs))
    sent = sum(s.bytes_to(link_port)[0] for s in node)
    recv = sum(s.bytes_to(link_port)[1] for s in node)
    rss = {"supernode": max((s.peak_rss_mib for s in node), default=0.0),
           "superexec": max((s.peak_rss_mib for s in execs), default=0.0),
           "clientapp": max((s.peak_rss_mib for s in apps), default=0.0)}
    return {"cpu_s_total": base + app_cpu, "cpu_s_per_round": (base + app_cpu) / rounds,
            "cpu_s_supernode_and_superexec": base, "cpu_s_clientapps": app_cpu,
            "clientapp_processes": len(apps), "peak_rss_mib": rss,
            "peak_rss_mib_sum": sum(rss.values()),
            "tcp_bytes_sent_per_round": sent / rounds,
            "tcp_bytes_received_per_round": recv / rounds,
            "node_port": node_port}


def run_flower_device(job: FlowerJob, *, python: Path, workdir: Path, device: int = 0,
                      timeout: float = 1800.0) -> dict[str, Any]:
    """Run ``job`` restricted to ``device`` through one SuperNode; its cost and accuracy."""
    one = replace(job, name=f"{job.name}-device{device}", devices=(job.devices[device],),
                  partitions=(job.partitions[device],))
    root = workdir / one.name
    app, home = root / "app", root / "flwr-home"
    app.mkdir(parents=True, exist_ok=True)
    home.mkdir(exist_ok=True)
    (app / "pyproject.toml").write_text(_PYPROJECT)
    (app / "peers_fab.py").write_text(_APP)
    job_path, out_path = root / "job.json", root / "out.json"
    one.write(job_path)
    link_port, node_port = free_port(), free_port()
    (home / "config.toml").write_text(
        f'[superlink]\ndefault = "bench"\n\n[superlink.bench]\n'
        f'address = "127.0.0.1:{link_port}"\ninsecure = true\n')
    bin_dir = python.parent
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[2]),
               FLWR_HOME=str(home), FLWR_TELEMETRY_ENABLED="0", TF_CPP_MIN_LOG_LEVEL="2",
               SPLITFED_FLOWER_JOB=str(job_path), SPLITFED_FLOWER_OUT=str(out_path),
               PATH=f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}")

    def mine(cmd: list[str]) -> bool:
        if any("flower-supernode" in a for a in cmd[:2]):
            return str(node_port) in cmd
        return f"127.0.0.1:{node_port}" in cmd  # SuperExec and ClientApps of our SuperNode

    procs: list[subprocess.Popen[bytes]] = []
    _become_subreaper()
    t0 = time.monotonic()
    with (root / "processes.log").open("wb") as log, ProcSampler(mine) as sampler:
        try:
            link = subprocess.Popen(
                [str(bin_dir / "flower-superlink"), "--insecure",
                 "--disable-runtime-dependency-installation", "--host", "127.0.0.1",
                 "--port", str(link_port), "--database", str(root / "state.db")],
                env=env, cwd=root, stdout=log, stderr=subprocess.STDOUT)
            procs.append(link)
            _wait_port(link_port, link, "flower-superlink", 60)
            node = subprocess.Popen(
                [str(bin_dir / "flower-supernode"), "--insecure", "--superlink",
                 f"127.0.0.1:{link_port}", "--host", "127.0.0.1", "--port", str(node_port),
                 "--node-config", "partition-id=0 num-partitions=1"],
                env=env, cwd=root, stdout=log, stderr=subprocess.STDOUT)
            procs.append(node)
            _wait_port(node_port, node, "flower-supernode", 60)
            run = subprocess.run([str(bin_dir / "flwr"), "run", str(app), "bench", "--stream"],
                                 env=env, cwd=root, stdout=log, stderr=subprocess.STDOUT,
                                 timeout=timeout, check=False)
            deadline = time.monotonic() + 120
            while not out_path.exists() and time.monotonic() < deadline:
                time.sleep(0.2)
            sampler.sample_once()
        finally:
            _stop(procs)
            _reap_orphans()
    wall = time.monotonic() - t0
    if run.returncode != 0 or not out_path.exists():
        return {"error": f"flwr run exited {run.returncode}; log {root / 'processes.log'}"}
    out: dict[str, Any] = json.loads(out_path.read_text())
    out["process_wall_s"] = wall
    out["device"] = one.devices[0]
    out["cost"] = _device_cost(list(sampler.samples.values()), node_port=node_port,
                               link_port=link_port, rounds=one.rounds)
    return out
