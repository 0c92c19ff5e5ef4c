"""kill -9 of a publishing agent process, privacy budget halts, sd_notify from the process."""

from __future__ import annotations

import json
import math
import signal
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.privacy import analytic_gaussian_epsilon
from deploy.broker import MosquittoBroker
from tests.integration.agent.transport._helpers import Subscriber, finish, start_driver
from tests.integration.helpers import wait_for

pytestmark = pytest.mark.integration

NOISE = 4.0            # replace adjacency: mu = 2 / NOISE = 0.5 per release
DELTA = 1e-5


def eps_for(releases: int) -> float:
    return analytic_gaussian_epsilon(mu=(2.0 / NOISE) * math.sqrt(releases), delta=DELTA)


@pytest.fixture
def sub(mosquitto: MosquittoBroker) -> Iterator[Subscriber]:
    s = Subscriber(mosquitto)
    try:
        yield s
    finally:
        s.close()


def test_kill9_loses_nothing_and_never_undercounts(tmp_path: Path, mosquitto: MosquittoBroker,
                                                   sub: Subscriber) -> None:
    state = tmp_path / "agent"
    total = 120
    proc = start_driver(state, mosquitto, total=total, interval=0.01)
    try:
        wait_for(lambda: len(sub.unique_in_order()) >= 25, 30, "messages before the crash")
    finally:
        proc.send_signal(signal.SIGKILL)
        finish(proc)
    assert proc.returncode == -signal.SIGKILL
    received_before = len(sub.unique_in_order())
    on_disk = json.loads((state / "privacy.json").read_text())
    # nothing received may be missing from the spend on disk
    assert on_disk["releases"] >= received_before
    assert on_disk["epsilon"] >= eps_for(received_before) - 1e-12
    # the broker published our Last Will: a death with the session's bdSeq
    wait_for(lambda: any(not s["online"] for s in sub.states), 15, "LWT death")
    death = [s for s in sub.states if not s["online"]][-1]
    births = [s for s in sub.states if s["online"]]
    assert death["bd_seq"] == births[-1]["bd_seq"]

    proc2 = start_driver(state, mosquitto, total=total, interval=0.0)
    code, out, err = finish(proc2)
    assert code == 0, err
    assert "DRAINED" in out
    wait_for(lambda: len(sub.unique_in_order()) == total, 20, "every message after restart")
    assert sub.unique_in_order() == list(range(total))   # exactly once (by seq), in order
    final = json.loads((state / "privacy.json").read_text())
    assert final["releases"] >= total
    assert final["epsilon"] >= eps_for(total) - 1e-12
    assert final["epsilon"] == pytest.approx(eps_for(final["releases"]))
    # every message states the spend including itself; the file is never below any of them
    claimed = sub.epsilon_claimed
    assert all(claimed[s] >= eps_for(s + 1) - 1e-12 for s in range(total))
    assert max(claimed.values()) <= final["epsilon"]


def test_budget_halts_at_the_right_step_and_restart_keeps_spend(
        tmp_path: Path, mosquitto: MosquittoBroker, sub: Subscriber) -> None:
    budget = 4.0
    expected = max(k for k in range(1, 1000) if eps_for(k) <= budget)
    state = tmp_path / "agent"
    code, out, err = finish(start_driver(state, mosquitto, total=10_000, budget=budget,
                                         interval=0.0))
    assert code == 3, err
    assert f"HALTED {expected} " in out
    released = [ln for ln in out.splitlines() if ln.startswith("RELEASED")]
    assert len(released) == expected
    wait_for(lambda: len(sub.unique_in_order()) == expected, 20, "released messages")
    on_disk = json.loads((state / "privacy.json").read_text())
    assert on_disk["halted"] and "budget" in on_disk["halt_reason"]
    assert on_disk["epsilon"] <= budget
    # the retained birth certificate says so too
    wait_for(lambda: any(s["online"] and s["detail"].get("halted") == 1 for s in sub.states), 10,
             "retained state with halted=1")
    # a restarted process does not reset its spend and releases nothing
    code, out, _ = finish(start_driver(state, mosquitto, total=10_000, budget=budget))
    assert code == 3 and f"HALTED {expected} " in out and "RELEASED" not in out
    time.sleep(0.3)
    assert sub.unique_in_order() == list(range(expected))


def test_process_sends_ready_and_watchdog(tmp_path: Path, mosquitto: MosquittoBroker) -> None:
    path = tmp_path / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.settimeout(20)
    try:
        proc = start_driver(tmp_path / "agent", mosquitto, total=5,
                            env={"NOTIFY_SOCKET": str(path)})
        got: list[bytes] = []
        try:
            while b"STOPPING=1" not in got:
                got.append(sock.recv(4096))
        finally:
            code, _, err = finish(proc)
        assert code == 0, err
        assert got[0].startswith(b"READY=1")
        assert got.count(b"WATCHDOG=1") >= 5
    finally:
        sock.close()


def test_offline_start_spools_then_delivers(tmp_path: Path, mosquitto: MosquittoBroker) -> None:
    mosquitto.stop()
    state = tmp_path / "agent"
    code, out, _ = finish(start_driver(state, mosquitto, total=3, extra=["--drain-timeout", "0.5"]))
    assert code == 4 and out.count("RELEASED") == 3   # released offline, not drained
    mosquitto.start()
    s = Subscriber(mosquitto)
    try:
        code, out, err = finish(start_driver(state, mosquitto, total=3))
        assert code == 0 and "RELEASED" not in out, err
        wait_for(lambda: s.unique_in_order() == [0, 1, 2], 15, "spooled messages")
    finally:
        s.close()
