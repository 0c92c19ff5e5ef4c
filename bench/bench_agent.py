"""The edge agent per window on this machine: each stage alone, end to end, the real process.

Run: ``.venv/bin/python -m bench agent`` (about 2 minutes; needs ``mosquitto``).

Everything runs in one session against the same local Mosquitto and the same
simulated PLAID meter (``splitfed-agent simulate``, a separate process serving
1 x 256 float32 captures over Modbus TCP loopback), so the ratios compare
like with like:

* stages alone, per window (batch of 1): sensor read (capture + ack),
  forward (LiteRT client half), DP (clip + Gaussian noise, Philox CSPRNG),
  account (``Accountant.spend``, fsync'd), sign (``seal``: CBOR + Ed25519),
  publish (spool put + MQTT QoS 1 until PUBACK, one message at a time);
* end to end in-process: the same objects chained for one window
  (read -> prepare -> Outbox.release -> PUBACK), next to the sum of the
  stages (the floor);
* the real ``splitfed-agent run`` process: time to READY=1, idle CPU over
  30 s with no round (sensor has no new capture), messages per second
  sustained to the broker while an instant stand-in server answers every
  batch with a zero gradient, and peak RSS (VmHWM) after those rounds.
"""

from __future__ import annotations

import os
import socket
import statistics
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from agent.config import PrivacySection
from agent.mqtt import MqttConfig, PahoPublisher
from agent.outbox import Outbox
from agent.privacy import Accountant, GaussianRelease, privatize_activations, secure_rng
from agent.records import Batch
from agent.sensors.app import open_sensors
from agent.sensors.config import parse_sensors_config
from agent.spool import Spool
from agent.trainer import ClientTrainer
from bench.common import time_per_call, write_results
from deploy.broker import MosquittoBroker, device_acl
from models.data import default_data_dir
from models.runtime import ClientRuntime
from protocol import keys, topics
from protocol.messages import ActivationBatch, seal
from tests.integration.agent._agent_harness import (
    AgentProcess,
    SimulatorProcess,
    StandInServer,
    pick_manifest,
    tcp_capture_sensor,
    wait_for,
    write_agent_files,
)
from tests.integration.conftest import MQTT_ORG, MQTT_USERS

DATA = default_data_dir()
NOISE, CLIP = 1.0, 5.0
IDLE_S = 30.0
STEPS = 1000
STALL_S = 300.0
ROUNDS = 7
CLK_TCK = os.sysconf("SC_CLK_TCK")


def _stages(tmp: Path, broker: MosquittoBroker, sim_port: int) -> dict[str, float]:
    manifest = pick_manifest()
    runtime = ClientRuntime.from_manifest(manifest)
    sensors, problems = parse_sensors_config({"devices": [{
        "name": "plug", "transport": "tcp", "host": "127.0.0.1", "port": sim_port,
        "mode": "capture", "window": {"length": manifest.input_shape[1]}}]})
    assert sensors is not None, problems
    sset = open_sensors(sensors)
    source = sset.windows["plug"]
    pw = tmp / "dev1.password"
    pw.write_text(MQTT_USERS["dev1"])
    spool = Spool(tmp / "spool.sqlite")
    acc = Accountant(epsilon_budget=1e12, delta=1e-5, state_path=tmp / "privacy.json")
    pub = PahoPublisher(MqttConfig(host=broker.host, port=broker.port, org=MQTT_ORG,
                                   device="dev1", username="dev1", password_file=pw), spool)
    outbox = Outbox(acc, spool, pub)
    trainer = ClientTrainer(runtime, PrivacySection(epsilon_budget=1e12, clip_norm=CLIP,
                                                    noise_multiplier=NOISE), rng=secure_rng())
    key = keys.generate_signing_key()
    rng = secure_rng()
    ids = iter(range(1, 10**9))
    pub.start()
    try:
        assert pub.wait_connected(15), "bench publisher could not connect"
        w = source.next_window(timeout=5)
        x = runtime.normalise(w.x[None]).astype(np.float32)
        a = runtime.forward(x)
        prepared = trainer.prepare(Batch(ids=(0,), x=w.x[None], labels=np.array([1])))

        def msg(seq: int) -> ActivationBatch:
            return ActivationBatch(session="bench", round=0, step=0, device="dev1", seq=seq,
                                   model_hash=runtime.sha256, dp=prepared.dp,
                                   activations=prepared.activations, labels=prepared.labels,
                                   epsilon_spent=1.0)

        sealed = seal(msg(0), signing_key=key, kid="dev1")
        up = topics.up(MQTT_ORG, "dev1")

        def wait_acked() -> None:
            target = spool.next_seq()
            while pub.stats.acked < target:
                time.sleep(0.0001)

        def publish() -> None:
            spool.put(up, sealed, seq=spool.next_seq())
            pub.kick()
            wait_acked()

        def end_to_end() -> None:
            win = source.next_window(timeout=5)
            rid = next(ids)
            p = trainer.prepare(Batch(ids=(rid,), x=win.x[None],
                                      labels=np.array([win.label or 0])))
            eps = acc.epsilon_after(p.events)

            def build(seq: int) -> tuple[str, bytes]:
                m = ActivationBatch(session="bench", round=0, step=0, device="dev1", seq=seq,
                                    model_hash=runtime.sha256, dp=p.dp,
                                    activations=p.activations, labels=p.labels,
                                    epsilon_spent=eps)
                return up, seal(m, signing_key=key, kid="dev1")

            outbox.release(build, p.events)
            wait_acked()

        calls = {
            "read_s": lambda: source.next_window(timeout=5),
            "forward_s": lambda: runtime.forward(x),
            "dp_s": lambda: privatize_activations(a, clip_norm=CLIP, noise_multiplier=NOISE,
                                                  rng=rng),
            "account_s": lambda: acc.spend(
                [GaussianRelease(noise_multiplier=NOISE, records=(next(ids),))]),
            "sign_s": lambda: seal(msg(1), signing_key=key, kid="dev1"),
            "publish_s": publish,
            "end_to_end_s": end_to_end,
        }
        # interleaved rounds: the disk (fsync) and CPU are shared with other work on this
        # machine, so each figure is the median of rounds taken side by side
        runs: dict[str, list[float]] = {k: [] for k in calls}
        for _ in range(ROUNDS):
            for k, fn in calls.items():
                runs[k].append(time_per_call(fn, min_time=0.3, repeat=1))
        out = {k: statistics.median(v) for k, v in runs.items() if k != "end_to_end_s"}
        out["floor_s"] = sum(out.values())
        out["end_to_end_s"] = statistics.median(runs["end_to_end_s"])
        out["account_spread_s"] = max(runs["account_s"]) - min(runs["account_s"])
        out["message_bytes"] = float(len(sealed))
        return out
    finally:
        pub.close()
        spool.close()
        acc.close()
        sset.close()


def _cpu_ticks(pid: int) -> int:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # utime + stime (fields 14, 15 of stat)


def _proc_kib(pid: int, key: str) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return float(line.split()[1])
    raise KeyError(key)


def _drain(sock: socket.socket, stop: threading.Event) -> None:
    sock.settimeout(0.2)
    while not stop.is_set():
        try:
            sock.recv(4096)
        except TimeoutError:
            continue


def _throughput(server: StandInServer, agent: AgentProcess, *, rnd: int, batch: int,
                steps: int) -> float:
    """Activation messages per second from the first to the last arrival of round ``rnd``."""
    times: list[float] = []
    with server.lock:
        start_n = len(server.activations)
    seen = start_n

    server.command(session="bench", round=rnd, kind="start_round",
                   args={"steps": steps, "batch_size": batch, "lr": 0.01})
    deadline = time.monotonic() + STALL_S
    while seen < start_n + steps:
        with server.lock:
            n = len(server.activations)
        if n > seen:
            times.append(time.perf_counter())
            seen = n
        if time.monotonic() > deadline:
            raise AssertionError(f"round {rnd}: only {seen - start_n} of {steps} batches; "
                                 + agent.log_tail())
        time.sleep(0.001)
    wait_for(lambda: len(server.weights) >= rnd + 1, 60, "round weights")
    return (steps - 1) / (times[-1] - times[0])


def _process(tmp: Path, broker: MosquittoBroker, sim_port: int) -> dict[str, Any]:
    manifest = pick_manifest()
    files = write_agent_files(
        tmp, broker, manifest=manifest,
        sensors=tcp_capture_sensor(sim_port, manifest.input_shape[1]),
        privacy=f"epsilon_budget = 1e12\nnoise_multiplier = {NOISE}\nclip_norm = {CLIP}",
        training="max_pending = 4")
    server = StandInServer(broker, files, train=False)
    notify = tmp / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(notify))
    sock.settimeout(120)
    t0 = time.perf_counter()
    stop_drain, drain = threading.Event(), None
    agent = AgentProcess(files, log_path=tmp / "agent.log", env={"NOTIFY_SOCKET": str(notify)})
    try:
        while b"READY=1" not in sock.recv(4096):
            pass
        ready_s = time.perf_counter() - t0
        # keep reading, as systemd does: a full datagram queue blocks the agent's sd_notify
        drain = threading.Thread(target=_drain, args=(sock, stop_drain), name="notify-drain")
        drain.start()
        wait_for(lambda: agent.status().get("records", {}).get("held", 0) >= 8, 60, "records")
        rss_idle = _proc_kib(agent.pid, "VmRSS")
        c0, w0 = _cpu_ticks(agent.pid), time.monotonic()
        time.sleep(IDLE_S)  # the measurement itself: CPU used while nothing happens
        idle_pct = 100.0 * (_cpu_ticks(agent.pid) - c0) / CLK_TCK / (time.monotonic() - w0)
        b1 = [_throughput(server, agent, rnd=r, batch=1, steps=STEPS) for r in (0, 1)]
        b8 = [_throughput(server, agent, rnd=r, batch=8, steps=STEPS) for r in (2, 3)]
        c1, w1 = _cpu_ticks(agent.pid), time.monotonic()
        b8.append(_throughput(server, agent, rnd=4, batch=8, steps=STEPS))
        busy_pct = 100.0 * (_cpu_ticks(agent.pid) - c1) / CLK_TCK / (time.monotonic() - w1)
        hwm = _proc_kib(agent.pid, "VmHWM")
        rc = agent.stop()
        assert rc == 0, agent.log_tail()
    finally:
        agent.stop()
        server.close()
        stop_drain.set()
        if drain is not None:
            drain.join(5)
        sock.close()
    return {"ready_s": ready_s, "idle_cpu_pct": idle_pct, "busy_cpu_pct": busy_pct,
            "rss_idle_mib": rss_idle / 1024, "peak_rss_mib": hwm / 1024,
            "msgs_per_s_batch1": statistics.median(b1), "msgs_per_s_batch8": statistics.median(b8),
            "runs_batch1": b1, "runs_batch8": b8}


def main() -> None:
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="bench-agent-") as d:
        tmp = Path(d)
        broker = MosquittoBroker(tmp / "mosquitto", users=MQTT_USERS,
                                 acl=device_acl(MQTT_ORG, readers=("gateway", "server")))
        broker.start()
        looping = SimulatorProcess(DATA / "PLAID_TRAIN.ts", indices=list(range(64)),
                                   workdir=tmp, once=False)
        (tmp / "p").mkdir()
        once = SimulatorProcess(DATA / "PLAID_TRAIN.ts", indices=list(range(8)),
                                workdir=tmp / "p", once=True)
        try:
            (tmp / "stages").mkdir()
            st = _stages(tmp / "stages", broker, looping.port)
            (tmp / "proc").mkdir()
            pr = _process(tmp / "proc", broker, once.port)
        finally:
            once.close()
            looping.close()
            broker.stop()

    load = {"before": load_before, "after": os.getloadavg()[0], "cpus": os.cpu_count()}

    def ms(v: float) -> str:
        return f"{v * 1e3:.3f} ms"

    parts = ("read", "forward", "dp", "account", "sign", "publish")
    table = [(f"stage alone: {p}", f"{ms(st[p + '_s'])} ({100 * st[p + '_s'] / st['floor_s']:.0f}%"
              " of floor)") for p in parts]
    table += [
        ("floor = sum of stages, per window", ms(st["floor_s"])),
        ("end to end in-process per window (read->PUBACK)",
         f"{ms(st['end_to_end_s'])} (x{st['end_to_end_s'] / st['floor_s']:.2f} the floor)"),
        ("sealed ActivationBatch, 1 window, float16", f"{st['message_bytes']:.0f} B"),
        ("real process: start to READY=1", f"{pr['ready_s']:.2f} s"),
        ("real process: idle CPU, 30 s, no round", f"{pr['idle_cpu_pct']:.2f} %"),
        ("real process: sustained msgs/s, batch 1 (instant server)",
         f"{pr['msgs_per_s_batch1']:.0f} msg/s = {1e3 / pr['msgs_per_s_batch1']:.2f} ms/window "
         f"(x{1 / pr['msgs_per_s_batch1'] / st['floor_s']:.2f} the floor)"),
        ("real process: sustained msgs/s, batch 8",
         f"{pr['msgs_per_s_batch8']:.0f} msg/s = {8 * pr['msgs_per_s_batch8']:.0f} windows/s"),
        ("real process: CPU while releasing (batch 8)", f"{pr['busy_cpu_pct']:.0f} %"),
        ("real process: RSS idle / peak (VmHWM)",
         f"{pr['rss_idle_mib']:.0f} / {pr['peak_rss_mib']:.0f} MiB"),
        ("machine load (1-min load average before / after, CPUs)",
         f"{load['before']:.1f} / {load['after']:.1f}, {load['cpus']} CPUs"),
    ]
    write_results("agent", {"stages": st, "process": pr, "load": load}, table)


if __name__ == "__main__":
    main()
