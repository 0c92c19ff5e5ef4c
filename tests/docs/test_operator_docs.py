"""The operator documents' shell blocks run as written, in a scratch root.

For each of docs/agent.md, docs/operations.md and docs/ledger.md every
```` ```sh ```` command is run with ``bash`` in order, after the path mapping
of :mod:`tests.docs.harness` (``/etc``, ``/var/lib`` under a temporary root,
``/opt/splitfed/venv`` = this interpreter's venv running the checkout), and
must exit 0; the lines the harness skips are listed with their reason in
the test's output. Captioned ``toml`` blocks (``ledger.toml``, the
agent's ``/etc/splitfed/agent.toml``) are written to the working directory
first, as the operator would. ``splitfed-<role> run`` lines start real
services that must send sd_notify ``READY=1`` and stop cleanly on SIGTERM.

What a document assumes exists before its first command, the test provides:
agent.md is run on a board whose org admin already holds a consortium
(``splitfed-ledger genesis`` for org ``acme``, chain ``plant``) with its
ledger node running, and hands over ``genesis.json``, ``ca.crt`` and
``mqtt.password``; its RS-485 meter on ``/dev/ttyUSB0`` is a
``splitfed-agent simulate --pty`` serving real PLAID captures at unit 3.
"""

from __future__ import annotations

import json
import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import pytest

from deploy.broker import free_port
from tests.conftest import DATA_DIR
from tests.docs.harness import Mapping, Step, config_files, plan

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
CMD_TIMEOUT_S = 120
READY_TIMEOUT_S = 60.0


class World:
    """The scratch root, working directory and environment one document runs in."""

    def __init__(self, tmp: Path) -> None:
        self.root = tmp / "root"
        self.work = tmp / "work"
        # what any systemd host has; the rest the documents create
        for d in (self.root / "etc" / "systemd" / "system", self.root / "var" / "lib",
                  self.work):
            d.mkdir(parents=True)
        (self.work / "deploy").symlink_to(REPO / "deploy")  # "from the checkout"
        self.notify_path = str(tmp / "notify.sock")
        self.env = {k: v for k, v in os.environ.items()
                    if not k.startswith("SPLITFED_") and k not in ("NOTIFY_SOCKET",
                                                                   "WATCHDOG_USEC")}
        self.env["PATH"] = f"{BIN}{os.pathsep}{self.env.get('PATH', '/usr/bin:/bin')}"
        self.env["PYTHONPATH"] = str(REPO)
        self.mapping = Mapping(root=str(self.root), venv_bin=str(BIN), checkout=str(REPO),
                               port=free_port())
        self.ran: list[Step] = []
        self.skipped: list[Step] = []

    def run(self, argv: list[str] | str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(argv, shell=isinstance(argv, str), executable="/bin/bash"
                              if isinstance(argv, str) else None, cwd=self.work, env=self.env,
                              capture_output=True, text=True, timeout=CMD_TIMEOUT_S,
                              check=False)


@contextmanager
def _process(argv: list[str] | str, world: World, *, notify: bool) -> Iterator[
        subprocess.Popen[str]]:
    """A background process; with ``notify`` it must send READY=1 first. SIGTERM at exit."""
    env = dict(world.env)
    with ExitStack() as stack:
        sock = None
        if notify:
            sock = stack.enter_context(socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM))
            Path(world.notify_path).unlink(missing_ok=True)
            sock.bind(world.notify_path)
            env["NOTIFY_SOCKET"] = world.notify_path
        proc = subprocess.Popen(argv, shell=isinstance(argv, str),
                                executable="/bin/bash" if isinstance(argv, str) else None,
                                cwd=world.work, env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        try:
            if sock is not None:
                _wait_ready(sock, proc)
            yield proc
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
            try:
                _, err = proc.communicate(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                _, err = proc.communicate(timeout=30)
        assert proc.returncode == 0, f"{argv} exited {proc.returncode}: {err[-2000:]}"


def _wait_ready(sock: socket.socket, proc: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        r, _, _ = select.select([sock], [], [], 0.2)
        if r and b"READY=1" in sock.recv(4096).split(b"\n"):
            return
        if proc.poll() is not None:
            _, err = proc.communicate(timeout=10)
            raise AssertionError(f"service exited {proc.returncode} before READY=1: {err}")
    raise AssertionError(f"no READY=1 within {READY_TIMEOUT_S} s")


def _json_line(proc: subprocess.Popen[str]) -> dict[str, object]:
    assert proc.stdout is not None
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        r, _, _ = select.select([proc.stdout], [], [], 0.2)
        if r and (line := proc.stdout.readline()).startswith("{"):
            return dict(json.loads(line))
        if proc.poll() is not None:
            break
    raise AssertionError("the simulated meter printed no ready line")


def _run_doc(doc: str, world: World, stack: ExitStack) -> None:
    text = (REPO / "docs" / doc).read_text()
    for name, content in config_files(text).items():
        (world.work / name).write_text(world.mapping.apply(content))
    for step in plan(text, world.mapping):
        if step.command is None:
            world.skipped.append(step)
            continue
        world.ran.append(step)
        if step.service:
            stack.enter_context(_process(step.command, world, notify=True))
            continue
        res = world.run(step.command)
        assert res.returncode == 0, (
            f"docs/{doc}:{step.doc_line}: `{step.written}`\n  ran: {step.command}\n"
            f"  exit {res.returncode}\n{res.stdout[-1500:]}\n{res.stderr[-1500:]}")


def _report(doc: str, world: World) -> None:
    print(f"\ndocs/{doc}: {len(world.ran)} commands ran, {len(world.skipped)} skipped")
    for s in world.skipped:
        print(f"  skipped line {s.doc_line}: {s.written}\n      because {s.skip_reason}")


def _acme_consortium(world: World, stack: ExitStack) -> None:
    """What the org admin of agent.md has: a consortium and a running ledger node."""
    cons = world.work / "consortium"
    for argv in (["splitfed-ledger", "genesis", "--out", str(cons), "--orgs", "acme",
                  "--chain-id", "plant"],
                 ["splitfed-ledger", "init", "--genesis", str(cons / "genesis.json"),
                  "--data-dir", str(world.root / "admin-ledger")]):
        res = world.run(argv)
        assert res.returncode == 0, res.stderr
    cfg = world.root / "admin-ledger.toml"
    cfg.write_text(f'data_dir = "{world.root / "admin-ledger"}"\n'
                   f'listen = "127.0.0.1:{world.mapping.port}"\nnode_id = "acme"\n'
                   f'validator_keys = {{ acme = "{cons / "keys" / "acme-validator.key"}" }}\n')
    stack.enter_context(_process(["splitfed-ledger", "run", "--config", str(cfg)], world,
                                 notify=True))
    # handed over to the board's operator
    shutil.copy(cons / "genesis.json", world.work / "genesis.json")
    (world.work / "ca.crt").write_text("-----BEGIN CERTIFICATE-----\n(the broker's CA)\n")
    (world.work / "mqtt.password").write_text("press-07-secret\n")


def _meter(world: World, stack: ExitStack) -> None:
    """The board's RS-485 meter: real PLAID captures over RTU on a pty, unit 3."""
    proc = stack.enter_context(_process(
        ["splitfed-agent", "simulate", "--dataset", str(DATA_DIR / "PLAID_TEST.ts"), "--pty",
         "--unit", "3", "--length", "256"], world, notify=False))
    serial = str(_json_line(proc)["serial"])
    world.mapping = Mapping(root=world.mapping.root, venv_bin=world.mapping.venv_bin,
                            checkout=world.mapping.checkout, port=world.mapping.port,
                            serial=serial)


def test_agent_md_provisions_a_board(tmp_path: Path) -> None:
    world = World(tmp_path)
    with ExitStack() as stack:
        _acme_consortium(world, stack)
        _meter(world, stack)
        _run_doc("agent.md", world, stack)
        state = world.root / "var" / "lib" / "splitfed-agent"
        assert (state / "device.key").is_file()
        assert (world.root / "etc" / "systemd" / "system" / "splitfed-agent.service").is_file()
        dev = world.run(["splitfed-ledger", "state", "device/acme/press-07", "--url",
                         f"http://127.0.0.1:{world.mapping.port}"])
        assert dev.returncode == 0 and json.loads(dev.stdout)["revoked"] is False
    _report("agent.md", world)
    assert len(world.ran) >= 12


def test_operations_md_install(tmp_path: Path) -> None:
    world = World(tmp_path)
    with ExitStack() as stack:
        _run_doc("operations.md", world, stack)
    assert (world.root / "etc" / "systemd" / "system" / "splitfed-agent.service").is_file()
    assert (world.root / "etc" / "splitfed").is_dir()
    _report("operations.md", world)
    assert len(world.ran) >= 2


def test_ledger_md_runs_a_node_registers_and_verifies(tmp_path: Path) -> None:
    world = World(tmp_path)
    with ExitStack() as stack:
        _run_doc("ledger.md", world, stack)
    # after the node stopped: the chain holds the registration and verifies from genesis
    res = world.run(["splitfed-ledger", "verify", "--data-dir",
                     str(world.root / "var" / "lib" / "splitfed" / "ledger")])
    assert res.returncode == 0 and res.stdout.startswith("OK:"), res.stderr
    assert (world.work / "server.pub").read_text().strip() == json.loads(
        (world.work / "consortium" / "genesis.json").read_text())["server"]
    _report("ledger.md", world)
    assert any(s.service for s in world.ran) and len(world.ran) >= 14
