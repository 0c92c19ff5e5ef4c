"""The REAL ``splitfed-agent run`` process under faults.

Every test runs the console script as a child process against a real
Mosquitto (password auth + per-device ACL) and a stand-in gateway/server
(:class:`StandInServer`: real LiteRT ``server.tflite``, signed gradients).
Sensors: a separate ``splitfed-agent simulate --once`` process serving 8 PLAID
records over Modbus TCP (so the agent holds exactly 8 records and a batch of
8 touches every one of them: the spend each received message implies is
exact), or the agent's in-process ``simulated`` meter.

1. kill -9 mid-round, restart on the same state dir: every seq committed to
   the spool before the kill arrives, one message per seq; the accountant on
   disk never claims less than the messages that left.
2. budget: calibrated so exactly N batches fit; the agent stops at N,
   ``status`` exits 3, the retained birth says halted, a restart stays halted.
3. systemd: READY=1, WATCHDOG=1, STOPPING=1 over ``$NOTIFY_SOCKET``.
4. broker outage mid-round: everything released arrives once, in order, and
   the round completes with gradients answered after the reconnect.
"""

from __future__ import annotations

import json
import math
import os
import random
import signal
import socket
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from agent.privacy.calibrate import epsilon_for, noise_multiplier_for_budget
from deploy.broker import MosquittoBroker
from protocol import topics
from tests.integration.agent._agent_harness import (
    AgentFiles,
    AgentProcess,
    SimulatorProcess,
    StandInServer,
    cli_status,
    pick_manifest,
    simulated_sensor,
    spool_snapshot,
    tcp_capture_sensor,
    write_agent_files,
)
from tests.integration.conftest import MQTT_ORG, MQTT_USERS
from tests.integration.helpers import wait_for

pytestmark = pytest.mark.integration

DELTA = 1e-5
RECORDS = 8          # PLAID records the simulator serves once each


class Rig:
    """Broker + simulator + stand-in server + files; agents started by the test."""

    def __init__(self, tmp: Path, broker: MosquittoBroker, data_dir: Path, *,
                 privacy: str, training: str = "", in_process_sensor: bool = False,
                 loop: bool = False,
                 live_meter: bool = False) -> None:
        self.tmp, self.broker = tmp, broker
        self.manifest = pick_manifest()
        length = self.manifest.input_shape[1]
        self.sim: SimulatorProcess | None = None
        if in_process_sensor:
            sensors = simulated_sensor(data_dir / "PLAID_TRAIN.ts", list(range(16)), length,
                                       loop=loop)
        else:
            # live_meter: the meter keeps producing captures (as a live sensor does), so a
            # restarted agent has new windows; otherwise each record is served once
            self.sim = SimulatorProcess(data_dir / "PLAID_TRAIN.ts",
                                        indices=list(range(RECORDS)), workdir=tmp,
                                        once=not live_meter)
            sensors = tcp_capture_sensor(self.sim.port, length)
        self.files: AgentFiles = write_agent_files(tmp, broker, sensors=sensors, privacy=privacy,
                                                   training=training, manifest=self.manifest)
        self.server = StandInServer(broker, self.files)
        self.agents: list[AgentProcess] = []

    def start_agent(self, env: dict[str, str] | None = None) -> AgentProcess:
        a = AgentProcess(self.files, log_path=self.tmp / f"agent-{len(self.agents)}.log", env=env)
        self.agents.append(a)
        return a

    def close(self) -> None:
        for a in self.agents:
            a.stop()
        self.server.close()
        if self.sim is not None:
            self.sim.close()


@pytest.fixture
def rig_factory(tmp_path: Path, mosquitto: MosquittoBroker,
                data_dir: Path) -> Iterator[Any]:
    rigs: list[Rig] = []

    def make(**kw: Any) -> Rig:
        r = Rig(tmp_path, mosquitto, data_dir, **kw)
        rigs.append(r)
        return r

    try:
        yield make
    finally:
        for r in rigs:
            r.close()


def held(agent: AgentProcess) -> int:
    return int(agent.status().get("records", {}).get("held", 0))


def retained_state(broker: MosquittoBroker) -> dict[str, Any]:
    """The retained birth/death on the device's ``state`` topic, as a fresh reader sees it."""
    got: list[dict[str, Any]] = []
    done = threading.Event()
    c = paho.Client(CallbackAPIVersion.VERSION2, client_id="retained-reader",
                    protocol=paho.MQTTv5)
    c.username_pw_set("gateway", MQTT_USERS["gateway"])

    def on_message(_c: paho.Client, _u: Any, m: paho.MQTTMessage) -> None:
        if m.retain:
            got.append(json.loads(m.payload))
            done.set()

    c.on_message = on_message
    c.on_connect = lambda cl, *a: cl.subscribe(topics.state(MQTT_ORG, "dev1"), qos=1)
    c.connect(broker.host, broker.port, keepalive=5)
    c.loop_start()
    try:
        wait_for(done.is_set, 10, "retained state")
    finally:
        c.disconnect()
        c.loop_stop()
        c._reset_sockets()
    return got[0]


def assert_one_message_per_seq(server: StandInServer) -> None:
    with server.lock:
        clashes = {s: len(p) for s, p in server.payloads.items() if len(p) != 1}
    assert not clashes, f"different messages under one seq: {clashes}"


def test_kill9_mid_round_loses_no_spooled_message_and_never_undercounts(
        rig_factory: Any, mosquitto: MosquittoBroker) -> None:
    z = 4.0
    # a live meter: after the restart the agent needs new windows; the capture the dead agent
    # already took is NOT taken again (that would split one window's spend over two ids)
    rig: Rig = rig_factory(privacy=f"epsilon_budget = 1e4\nnoise_multiplier = {z}\n"
                                   "clip_norm = 5.0",
                           training="max_pending = 8\ngradient_timeout_s = 2.0",
                           live_meter=True)
    server = rig.server
    agent = rig.start_agent()
    wait_for(lambda: held(agent) >= RECORDS, 60, "8 PLAID records read over Modbus TCP")
    server.command(session="s1", round=0, kind="start_round",
                   args={"steps": 100_000, "batch_size": RECORDS, "lr": 0.01})
    wait_for(lambda: len(server.unique_in_order()) >= 20, 60, "batches flowing")
    # freeze the broker so PUBACKs stop: as unanswered batches expire (2 s) the agent
    # releases more, and they wait in its spool
    broker_pid = mosquitto.pid
    assert broker_pid is not None
    os.kill(broker_pid, signal.SIGSTOP)
    try:
        wait_for(lambda: _spool_depth(rig.files.state_dir) >= 2, 30, "messages waiting in spool")
        agent.kill9()
    finally:
        os.kill(broker_pid, signal.SIGCONT)
    assert agent.proc.returncode == -signal.SIGKILL
    next_seq, spooled = spool_snapshot(rig.files.state_dir)
    assert spooled, "nothing was waiting in the spool at the kill: the test proved nothing"
    on_disk = json.loads((rig.files.state_dir / "privacy.json").read_text())

    agent2 = rig.start_agent()
    wait_for(lambda: set(range(next_seq)) <= set(server.unique_in_order()), 60,
             f"all {next_seq} committed messages after the restart")
    # no message lost, none invented, one message per seq (QoS 1 duplicates are byte-equal)
    assert set(server.unique_in_order()) == set(range(next_seq))
    assert_one_message_per_seq(server)
    with server.lock:
        acts = list(server.activations.values())
    assert len(acts) == next_seq  # all activation batches: the round never ended
    # the spend on disk covers everything that left the device
    claimed = max(a.epsilon_spent for a in acts)
    assert on_disk["epsilon"] >= claimed
    assert on_disk["releases"] >= len(acts)
    # pigeonhole: touches spread over at most `ids` records -> some record saw >= k releases
    ids = _record_ids(agent2)
    touches = sum(a.activations.shape[0] for a in acts)
    k = math.ceil(touches / ids)
    implied = epsilon_for(noise_multiplier=z, releases_per_record=k, delta=DELTA)
    assert on_disk["epsilon"] >= implied * (1 - 1e-12)

    # the restarted agent continues the same spend and sequence
    wait_for(lambda: held(agent2) >= 1, 60, "a window after restart")
    server.command(session="s1", round=1, kind="start_round",
                   args={"steps": 2, "batch_size": RECORDS, "lr": 0.01})
    wait_for(lambda: len(server.weights) == 1, 60, "round 1 weights after restart")
    new = sorted(s for s in server.unique_in_order() if s >= next_seq)
    assert new == list(range(next_seq, next_seq + 3))  # 2 batches + weights, no seq reused
    with server.lock:
        later = [server.activations[s].epsilon_spent for s in new[:2]]
    assert min(later) > on_disk["epsilon"] - 1e-12
    assert agent2.stop() == 0


def _spool_depth(state_dir: Path) -> int:
    db = sqlite3.connect(f"file:{state_dir / 'spool.sqlite'}?mode=ro", uri=True, timeout=5)
    try:
        return int(db.execute("SELECT count(*) FROM messages").fetchone()[0])
    finally:
        db.close()


def _record_ids(agent: AgentProcess) -> int:
    """How many record ids the device ever allocated (persisted in its spool)."""
    wait_for(lambda: bool(agent.status()), 30, "status file")
    db = sqlite3.connect(f"file:{agent.files.state_dir / 'spool.sqlite'}?mode=ro", uri=True,
                         timeout=5)
    try:
        row = db.execute("SELECT value FROM meta WHERE key = 'record_next_id'").fetchone()
    finally:
        db.close()
    return max(RECORDS, int(row[0]) if row else 0)


def test_budget_halts_at_the_calibrated_step_and_survives_restart(
        rig_factory: Any, mosquitto: MosquittoBroker) -> None:
    fit = 5
    eps = 6.0
    z = noise_multiplier_for_budget(epsilon=eps, delta=DELTA, releases_per_record=fit)
    rig: Rig = rig_factory(privacy=f"epsilon_budget = {eps!r}\nnoise_multiplier = {z!r}\n"
                                   f"delta = {DELTA!r}\nclip_norm = 5.0\n"
                                   # DP-SGD steps made negligible: the calibration covers rows
                                   "dp_sgd_noise_multiplier = 1e6")
    server = rig.server
    agent = rig.start_agent()
    wait_for(lambda: held(agent) >= RECORDS, 60, "8 PLAID records")
    server.command(session="s1", round=0, kind="start_round",
                   args={"steps": fit + 5, "batch_size": RECORDS, "lr": 0.01})
    # halted mid-round: the round closes with its (DP-SGD) weights and no more releases
    wait_for(lambda: len(server.weights) == 1, 60, "round closed after the halt")
    with server.lock:
        acts = sorted(server.activations.values(), key=lambda a: a.seq)
    assert len(acts) == fit
    assert all(a.activations.shape[0] == RECORDS for a in acts)
    assert acts[-1].epsilon_spent <= eps
    assert acts[-1].epsilon_spent == pytest.approx(eps, rel=1e-5)

    wait_for(lambda: bool(agent.status().get("privacy", {}).get("halted")), 30,
             "status file says halted")
    rc, out = cli_status(rig.files.state_dir)
    assert rc == 3
    st = json.loads(out)
    assert st["privacy"]["halted"] is True
    assert "budget" in st["privacy"]["halt_reason"]
    assert st["round"]["halted"]
    birth = retained_state(mosquitto)
    assert birth["online"] is True and birth["detail"]["halted"] == 1
    spent = st["privacy"]["epsilon"]
    # every spend: the fit row releases plus the DP-SGD steps applied before the halt
    releases = st["privacy"]["releases"]
    assert fit <= releases <= 2 * fit
    assert agent.stop() == 0

    restarted = time.time()
    agent2 = rig.start_agent()
    wait_for(lambda: agent2.status().get("time", 0) > restarted
             and agent2.status().get("connected") is True, 60, "restarted agent connected")
    server.command(session="s1", round=1, kind="start_round",
                   args={"steps": 3, "batch_size": RECORDS, "lr": 0.01})
    wait_for(lambda: agent2.status().get("round", {}).get("last_completed") == 1, 60,
             "restarted agent closed round 1 without releasing")
    rc, out = cli_status(rig.files.state_dir)
    assert rc == 3
    st = json.loads(out)
    assert st["privacy"]["epsilon"] == spent          # spend not reset
    assert st["privacy"]["releases"] == releases     # nothing more charged
    assert st["counters"].get("batches_released", 0) == 0
    assert len(server.activations) == fit             # nothing more released
    assert retained_state(mosquitto)["detail"]["halted"] == 1
    assert agent2.stop() == 0


def test_systemd_ready_and_watchdog_over_notify_socket(rig_factory: Any, tmp_path: Path) -> None:
    rig: Rig = rig_factory(privacy="epsilon_budget = 100.0\nnoise_multiplier = 2.0",
                           in_process_sensor=True)
    path = tmp_path / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    try:
        sock.bind(str(path))
        sock.settimeout(60)
        agent = rig.start_agent(env={"NOTIFY_SOCKET": str(path), "WATCHDOG_USEC": "10000000"})
        seen: list[str] = []
        while not ({"READY=1", "WATCHDOG=1"} <= set(seen)):
            seen.extend(sock.recv(4096).decode().splitlines())
        assert seen.index("READY=1") < seen.index("WATCHDOG=1")
        assert any(s.startswith("STATUS=") for s in seen)
        assert agent.stop() == 0
        sock.settimeout(5)
        rest: list[str] = []
        try:
            while "STOPPING=1" not in rest:
                rest.extend(sock.recv(4096).decode().splitlines())
        except TimeoutError:
            pass
        assert "STOPPING=1" in rest
    finally:
        sock.close()


def test_broker_outage_mid_round_every_batch_once_in_order_round_completes(
        rig_factory: Any, mosquitto: MosquittoBroker) -> None:
    steps = 150
    rig: Rig = rig_factory(privacy="epsilon_budget = 1e6\nnoise_multiplier = 4.0\n"
                                   "clip_norm = 5.0",
                           training="max_pending = 4\ngradient_timeout_s = 2.0",
                           in_process_sensor=True, loop=True)
    server = rig.server
    agent = rig.start_agent()
    wait_for(lambda: held(agent) >= 8, 60, "windows from the simulated meter")
    server.command(session="s1", round=0, kind="start_round",
                   args={"steps": steps, "batch_size": 4, "lr": 0.01})
    wait_for(lambda: len(server.unique_in_order()) >= 30, 60, "batches flowing")
    mosquitto.stop()
    before = agent.status()
    try:
        # the agent keeps sampling, and releases again as unanswered batches expire
        def seen(status: dict[str, Any]) -> int:
            c = status.get("counters", {})
            return int(c.get("windows", 0)) + int(c.get("duplicate_captures", 0))

        # a looping meter serves the same 16 windows again: seen, mapped to their old ids
        wait_for(lambda: seen(agent.status()) > seen(before)
                 and agent.status().get("counters", {}).get("gradients_expired", 0) >= 1,
                 30, "sampling and expiry during the outage")
        wait_for(lambda: _spool_depth(rig.files.state_dir) >= 1, 30, "spooled during outage")
        during = agent.status()
    finally:
        mosquitto.start()
    wait_for(lambda: len(server.weights) == 1, 120, "round completed after the reconnect")
    order = server.unique_in_order()
    assert order == sorted(order) == list(range(len(order)))  # no gap, in order
    assert_one_message_per_seq(server)
    with server.lock:
        assert len(server.activations) == steps
        last = server.weights[-1]
    assert last.seq == order[-1]
    final = _status_after(agent, lambda s: s.get("round", {}).get("last_completed") == 0)
    c = final["counters"]
    assert c["batches_released"] == steps
    assert c["gradients_applied"] > during["counters"].get("gradients_applied", 0)
    assert c["gradients_applied"] + c.get("gradients_expired", 0) == steps
    assert final["privacy"]["spool_depth"] == 0 and final["connected"] is True
    assert agent.stop() == 0


def _status_after(agent: AgentProcess, pred: Any) -> dict[str, Any]:
    wait_for(lambda: pred(agent.status()), 30, "status file update")
    return agent.status()


@pytest.mark.slow
def test_soak_repeated_kill9_during_rounds(rig_factory: Any) -> None:
    """Five kill -9 at random moments of five rounds: nothing lost, nothing under-counted."""
    rng = random.Random(4)
    z = 4.0
    rig: Rig = rig_factory(privacy=f"epsilon_budget = 1e6\nnoise_multiplier = {z}\n"
                                   "clip_norm = 5.0",
                           training="max_pending = 8\ngradient_timeout_s = 60.0")
    server = rig.server
    for cycle in range(5):
        agent = rig.start_agent()
        wait_for(lambda a=agent: held(a) >= 1, 60, "a record")  # type: ignore[misc]
        server.command(session="s1", round=cycle, kind="start_round",
                       args={"steps": 100_000, "batch_size": RECORDS, "lr": 0.01})
        got = len(server.unique_in_order())
        wait_for(lambda g=got: len(server.unique_in_order()) >= g + 10, 60,  # type: ignore[misc]
                 "batches flowing")
        time.sleep(rng.uniform(0.0, 0.3))  # a random moment of the release loop
        agent.kill9()
        assert agent.proc.returncode == -signal.SIGKILL
    next_seq, _ = spool_snapshot(rig.files.state_dir)
    on_disk = json.loads((rig.files.state_dir / "privacy.json").read_text())
    final = rig.start_agent()
    wait_for(lambda: set(range(next_seq)) <= set(server.unique_in_order()), 60,
             "every committed message after the last restart")
    assert set(server.unique_in_order()) == set(range(next_seq))
    assert_one_message_per_seq(server)
    with server.lock:
        acts = list(server.activations.values())
    assert on_disk["epsilon"] >= max(a.epsilon_spent for a in acts)
    assert on_disk["releases"] >= len(acts)
    assert final.stop() == 0


def test_restarted_agent_does_not_take_the_same_capture_twice(
        rig_factory: Any, mosquitto: MosquittoBroker) -> None:
    """A meter still showing the capture a killed agent took must not become a second record.

    Otherwise one window's releases would be split over two record ids and the per-record
    epsilon would under-count it. The restarted agent holds it again under its old id.
    """
    rig: Rig = rig_factory(privacy="epsilon_budget = 1e4\nnoise_multiplier = 4.0")
    agent = rig.start_agent()
    wait_for(lambda: held(agent) >= RECORDS, 60, "every record of the once-only meter read")
    ids_before = _record_ids(agent)
    agent.kill9()
    agent2 = rig.start_agent()
    wait_for(lambda: agent2.status().get("counters", {}).get("records_seen_again", 0) >= 1, 60,
             "the restarted agent to see the meter's last capture again")
    assert held(agent2) == 1  # the same record, back in memory under its old id
    assert _record_ids(agent2) == ids_before  # no new record id for the repeated capture
