"""Server benchmark: train steps/s and per-batch round trip with 4, 16 and 64 devices.

Theory of operation. One machine runs the real pieces as in a deployment:
a Mosquitto broker (``deploy.broker.MosquittoBroker``), a solo ledger node
(in this process: SQLite + HTTP API), one ``splitfed-gateway run`` process
per organisation (two orgs) and one ``splitfed-server run`` process. The
simulated devices live in this process, one thread + one MQTT client each:
real LiteRT client half (cnn1d/cut1, PLAID windows), rows clipped and
Gaussian-noised as the agent does, a real Ed25519 COSE envelope, then they
wait for the server-signed gradient, verify it and apply the backward pass
before the next batch (closed loop, as an agent trains). Path per step::

    device -> broker -> gateway -> broker -> server (train) -> broker
           -> gateway -> broker -> device (verify, backward)

Measured per N (first N of 64 registered devices, split over the two orgs):
train steps/s counted by the server itself (its Prometheus counter
``splitfed_server_batches_total`` before/after the window) and round-trip
latency p50/p99 (publish -> gradient verified, and -> backward applied).
Side by side, in the same run and with the same N and payload bytes, the
broker-only floor: the same four broker hops through bare relays that only
republish (no crypto, no journal, no training).
"""

from __future__ import annotations

import json
import logging
import os
import queue
import shutil
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nacl.signing
import numpy as np
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from bench.common import write_results
from deploy.broker import MosquittoBroker, free_port
from ledger_node.api import LedgerApi
from ledger_node.node import LedgerNode
from ledger_node.solo import SoloOrderer
from models.data import WindowConfig, default_data_dir, load_windows
from models.manifest import Manifest, list_artifacts
from models.runtime import ClientRuntime
from protocol import topics
from protocol.keys import public_key_hex, save_signing_key
from protocol.ledger.genesis import Genesis, OrgSpec
from protocol.ledger.registration import make_registration_request
from protocol.ledger.tx import make_tx
from protocol.messages import (
    ActivationBatch,
    DeviceState,
    DpParams,
    GradientBatch,
    open_sealed,
    seal,
)
from server.cli import main as server_main
from service.ledger_client import LedgerClient
from service.link import PahoLink
from service.mqtt import MqttSettings

ORGS = ("org1", "org2")
NS = tuple(int(n) for n in os.environ.get("BENCH_SERVER_NS", "4,16,64").split(","))
_W = os.environ.get("BENCH_SERVER_WINDOWS", "3,20,8")  # warm-up, system, floor seconds
WARMUP_S, SYSTEM_S, FLOOR_S = (float(v) for v in _W.split(","))
CLIP, NOISE, LR = 1.0, 1.0, 0.003
DATA_DIR = default_data_dir()
BIN = Path(sys.executable).parent


def _wait(pred: Any, what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return
        time.sleep(0.05)
    raise RuntimeError(f"timed out waiting for {what}")


def _pct(xs: list[float], q: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, int(q * len(s)))] if s else float("nan")


@dataclass
class Device:
    """One simulated node: real client half, real signatures, its own MQTT client."""

    org: str
    name: str
    key: nacl.signing.SigningKey
    rt: ClientRuntime
    x: np.ndarray
    y: np.ndarray
    link: PahoLink
    batch: int
    seq: int = 0
    rtt: list[tuple[float, float]] = field(default_factory=list)
    errors: int = 0

    def _activation_msg(self, rng: np.random.Generator) -> tuple[bytes, np.ndarray]:
        idx = rng.choice(len(self.x), size=self.batch, replace=False)
        raw = self.rt.forward(self.x[idx])
        rows = raw.reshape(self.batch, -1)
        norms = np.maximum(np.linalg.norm(rows, axis=1, keepdims=True) / CLIP, 1.0)
        noisy = rows / norms + rng.normal(0.0, NOISE * CLIP, rows.shape)
        self.seq += 1
        msg = ActivationBatch(
            session="s1", round=0, step=self.seq, device=self.name, seq=self.seq,
            model_hash=self.rt.manifest.client_sha256,
            dp=DpParams(
        mode="sl-frozen", clip_norm=CLIP, noise_multiplier=NOISE, label_mode="plain",
                        label_epsilon=None),
            activations=noisy.reshape(raw.shape).astype(np.float32),
            labels=self.y[idx].astype(np.int64), epsilon_spent=1e-3 * self.seq)
        return seal(msg, signing_key=self.key, kid=self.name), idx

    def loop(self, stop: threading.Event, floor: bool, server_vk: nacl.signing.VerifyKey,
             t_measure: float) -> None:
        rng = np.random.default_rng()
        down = _floor(self.org, self.name, "down") if floor else topics.down(self.org, self.name)
        up = _floor(self.org, self.name, "up") if floor else topics.up(self.org, self.name)
        payload, idx = self._activation_msg(rng)
        while not stop.is_set():
            if not floor:
                payload, idx = self._activation_msg(rng)
            t0 = time.perf_counter()
            self.link.publish(up, payload)
            try:
                item = self.link.inbox.get(timeout=30)
            except queue.Empty:  # a lost message counts as an error
                self.errors += 1
                continue
            self.link.ack(item)
            if item.topic != down:
                self.errors += 1
                continue
            if floor:
                t1 = t2 = time.perf_counter()
            else:
                g = open_sealed(item.payload, verify_key=server_vk)
                t1 = time.perf_counter()
                if not isinstance(g, GradientBatch) or g.seq != self.seq:
                    self.errors += 1
                    continue
                self.rt.backward(self.x[idx], g.grad, lr=LR)
                t2 = time.perf_counter()
            if t0 >= t_measure:
                self.rtt.append((t1 - t0, t2 - t0))


def _floor(org: str, device: str, kind: str) -> str:
    return f"benchfloor/{org}/{device}/{kind}"


class FloorRelays:
    """Bare republishers over the same broker: the four hops with no work in between."""

    def __init__(self, port: int) -> None:
        self.clients: list[mqtt.Client] = []
        for role in ("gw", "srv"):
            c = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2,
                            client_id=f"floor-{role}", protocol=mqtt.MQTTv5)
            c.on_message = self._on_message
            c.connect("127.0.0.1", port)
            subs = (["benchfloor/+/+/up", "benchfloor/central/+/+/down"] if role == "gw"
                    else ["benchfloor/central/+/+/up"])
            c.subscribe([(s, 1) for s in subs])
            c.loop_start()
            self.clients.append(c)

    def _on_message(self, client: mqtt.Client, userdata: object, msg: mqtt.MQTTMessage) -> None:
        p = msg.topic.split("/")
        if p[1] == "central" and p[4] == "up":  # the "server": echo back down
            client.publish(f"benchfloor/central/{p[2]}/{p[3]}/down", msg.payload, qos=1)
        elif p[1] == "central":  # the "gateway", downwards
            client.publish(_floor(p[2], p[3], "down"), msg.payload, qos=1)
        elif p[3] == "up":  # the "gateway", upwards
            client.publish(f"benchfloor/central/{p[1]}/{p[2]}/up", msg.payload, qos=1)

    def close(self) -> None:
        for c in self.clients:
            c.disconnect()
            c.loop_stop()


class _NoDelayBroker(MosquittoBroker):
    """The same generated broker config plus ``set_tcp_nodelay true``."""

    def write_config(self) -> Path:
        conf = super().write_config()
        conf.write_text(conf.read_text() + "set_tcp_nodelay true\n")
        return conf


def _echo_probe(tmp: Path, *, nodelay: bool, n: int = 4, seconds: float = 4.0) -> dict[str, float]:
    """Bare 2-relay echo (4 broker hops, 4800 B, QoS 1) on a fresh broker, n closed loops.

    With ``nodelay`` the broker sets ``set_tcp_nodelay`` and every client socket
    TCP_NODELAY; without, both keep the defaults the stack uses today (Nagle on).
    """
    broker = (_NoDelayBroker if nodelay else MosquittoBroker)(tmp / f"probe-{nodelay}")
    broker.start()
    clients: list[mqtt.Client] = []

    def client(cid: str, subs: list[str], on_message: Any) -> mqtt.Client:
        c = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2, client_id=cid,
                        protocol=mqtt.MQTTv5)
        c.on_message = on_message
        c.connect("127.0.0.1", broker.port)
        sock = c.socket()
        if nodelay and isinstance(sock, socket.socket):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        c.subscribe([(t, 1) for t in subs])
        c.loop_start()
        clients.append(c)
        return c

    def relay(c: mqtt.Client, userdata: object, msg: mqtt.MQTTMessage) -> None:
        hop, dev = msg.topic.split("/")
        c.publish(f"{'mid' if hop == 'up' else 'down'}/{dev}", msg.payload, qos=1)

    lats: list[float] = []
    try:
        client("relay-a", ["up/+"], relay)
        client("relay-b", ["mid/+"], relay)
        inboxes: list[queue.Queue[int]] = [queue.Queue() for _ in range(n)]
        devs = [client(f"d{i}", [f"down/{i}"], lambda c, u, m, q=inboxes[i]: q.put(1))
                for i in range(n)]
        time.sleep(0.5)  # subscriptions settle (SUBACK is not awaited here)
        end = time.monotonic() + seconds

        def loop(i: int) -> None:
            while time.monotonic() < end:
                t0 = time.perf_counter()
                devs[i].publish(f"up/{i}", bytes(4800), qos=1)
                try:
                    inboxes[i].get(timeout=5)
                except queue.Empty:
                    continue
                lats.append(time.perf_counter() - t0)

        threads = [threading.Thread(target=loop, args=(i,)) for i in range(n)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        for c in clients:
            c.disconnect()
            c.loop_stop()
        broker.stop()
    return {"p50_ms": 1e3 * _pct(lats, 0.5), "p99_ms": 1e3 * _pct(lats, 0.99),
            "per_s": len(lats) / seconds}


def _manifest() -> Manifest:
    arts = [m for m in list_artifacts() if m.model_id == "cnn1d" and m.cut == 1]
    if not arts:
        raise RuntimeError("model artifacts are not installed")
    return arts[0]


def _cpu_s(pid: int | None) -> float:
    """CPU seconds (user + system) used so far by ``pid`` (this process when None)."""
    if pid is None:
        t = os.times()
        return t.user + t.system
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _journal_commit_ms(tmp: Path, n: int = 200) -> float:
    """Median ms of one SQLite WAL ``synchronous=FULL`` insert+commit on this disk.

    The gateway journals every admitted envelope this way before forwarding it,
    so this is a per-step wait that uses no CPU.
    """
    db = sqlite3.connect(tmp / "probe.sqlite")
    try:
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=FULL")
        db.execute("CREATE TABLE t (b BLOB)")
        times = []
        for _ in range(n):
            t0 = time.perf_counter()
            db.execute("INSERT INTO t VALUES (?)", (os.urandom(64),))
            db.commit()
            times.append(time.perf_counter() - t0)
    finally:
        db.close()
    return 1e3 * statistics.median(times)


def _batches(metrics_url: str) -> float:
    with urllib.request.urlopen(metrics_url, timeout=5) as r:  # noqa: S310 - loopback URL
        text = r.read().decode()
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith("splitfed_server_batches_total"))


class Stack:
    """Broker, ledger, gateways and server on loopback; see the module docstring."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.keys = {f"{o}/{r}": nacl.signing.SigningKey.generate()
                     for o in ORGS for r in ("admin", "validator", "gateway")}
        self.keys["server"] = nacl.signing.SigningKey.generate()
        orgs = tuple(OrgSpec(id=o, admin=public_key_hex(self.keys[f"{o}/admin"]),
                             validator=public_key_hex(self.keys[f"{o}/validator"]),
                             gateway=public_key_hex(self.keys[f"{o}/gateway"])) for o in ORGS)
        self.genesis = Genesis(chain_id="bench-chain", time_ms=int(time.time() * 1000),
                               orgs=orgs, server=public_key_hex(self.keys["server"]),
                               ordering="solo", block_max_txs=100, block_max_ms=20)
        LedgerNode.init(tmp / "ledger", self.genesis)
        self.node = LedgerNode(tmp / "ledger", validator_keys={
            o: self.keys[f"{o}/validator"] for o in ORGS})
        self.orderer = SoloOrderer(self.node, proposer="org1")
        self.api = LedgerApi(self.node, self.orderer)
        self.broker = MosquittoBroker(tmp / "broker")
        self.procs: list[subprocess.Popen[bytes]] = []
        self.pids: dict[str, int | None] = {"bench process (devices, relays, ledger)": None}
        self.metrics_url = ""

    def start(self, m: Manifest, n_devices: int) -> dict[str, nacl.signing.SigningKey]:
        self.orderer.start()
        self.api.start()
        self.broker.start()
        client = LedgerClient(self.api.url, timeout=10)
        port, url, chain = self.broker.port, self.api.url, self.genesis.chain_id
        server_key = save_signing_key(self.keys["server"], self.tmp / "server.key")
        mport = free_port()
        self.metrics_url = f"http://127.0.0.1:{mport}/metrics"
        cfg = (f'[server]\nsession = "s1"\nsigning_key = "{server_key}"\n'
               f'data_dir = "{DATA_DIR}"\nlr = {LR}\npoll_interval_s = 0.5\n'
               "[round]\nmin_devices = 1\ndeadline_s = 3600\ncollect_deadline_s = 30\n"
               '[session]\nmodel_id = "cnn1d"\ncut = 1\nrounds = 1\nsfl_mode = "v1"\n'
               'groups = { org1 = ["org1"], org2 = ["org2"] }\nmin_noise_multiplier = 0.5\n'
               "clip = 1.0\nmax_epsilon = 1000.0\ndelta = 1e-5\nvote_quorum = 2\n"
               f'[ledger]\nurl = "{url}"\nchain_id = "{chain}"\n'
               f'[mqtt]\nport = {port}\nclient_id = "server"\n'
               f'[metrics]\nlisten = "127.0.0.1:{mport}"\n')
        (self.tmp / "server.toml").write_text(cfg)
        if server_main(["session", "create", "--config", str(self.tmp / "server.toml")]) != 0:
            raise RuntimeError("session create failed")
        dev_keys: dict[str, nacl.signing.SigningKey] = {}
        txids = []
        for i in range(n_devices):
            org, name = ORGS[i % 2], f"d{i:02d}"
            dev_keys[f"{org}/{name}"] = k = nacl.signing.SigningKey.generate()
            req = make_registration_request(signing_key=k, org=org, device=name)
            txids.append(client.submit(make_tx(
                "device_register", {"request": req}, signing_key=self.keys[f"{org}/admin"],
                submitter=f"{org}/admin", chain_id=chain, nonce=i + 1)))
        for t in txids:
            if not client.wait_for(t, timeout=30).valid:
                raise RuntimeError("device registration was refused")
        for org in ORGS:
            gw_key = save_signing_key(self.keys[f"{org}/gateway"], self.tmp / f"{org}-gw.key")
            (self.tmp / f"{org}.toml").write_text(
                f'[gateway]\norg = "{org}"\nsession = "s1"\nsigning_key = "{gw_key}"\n'
                f'state_dir = "{self.tmp / (org + "-state")}"\n'
                f'[ledger]\nurl = "{url}"\nchain_id = "{chain}"\npoll_interval_s = 0.5\n'
                f'[mqtt]\nport = {port}\nclient_id = "gw-{org}"\n')
        return dev_keys

    def spawn(self, argv: list[str], log_name: str) -> None:
        with (self.tmp / log_name).open("wb") as logf:
            p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=logf,
                                 stderr=subprocess.STDOUT)
        self.procs.append(p)
        self.pids[log_name.removesuffix(".log")] = p.pid

    def check_alive(self) -> bool:
        """True, or RuntimeError with the logs if a child process exited."""
        for p in self.procs:
            if p.poll() is not None:
                logs = "".join(f.read_text()[-2000:] for f in self.tmp.glob("*.log"))
                raise RuntimeError(f"{p.args!r} exited with {p.returncode}:\n{logs}")
        return True

    def close(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in self.procs:
            try:
                p.wait(timeout=15)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        self.broker.stop()
        self.api.stop()
        self.orderer.stop()
        self.node.close()


def _run_phase(devices: list[Device], *, floor: bool, seconds: float,
               server_vk: nacl.signing.VerifyKey, metrics_url: str,
               pids: dict[str, int | None]) -> dict[str, Any]:
    for d in devices:
        d.rtt.clear()
        d.errors = 0
    stop = threading.Event()
    t_measure = time.perf_counter() + WARMUP_S
    threads = [threading.Thread(target=d.loop, args=(stop, floor, server_vk, t_measure),
                                name=f"dev-{d.name}") for d in devices]
    for t in threads:
        t.start()
    time.sleep(WARMUP_S)
    b0 = 0.0 if floor else _batches(metrics_url)
    c0 = {k: _cpu_s(p) for k, p in pids.items()}
    t0 = time.perf_counter()
    time.sleep(seconds)
    b1 = 0.0 if floor else _batches(metrics_url)
    dt = time.perf_counter() - t0
    cores = {k: round((_cpu_s(p) - c0[k]) / dt, 3) for k, p in pids.items()}
    stop.set()
    for t in threads:
        t.join(timeout=60)
    got = [r for d in devices for r in d.rtt]
    recv = [r[0] for r in got]
    applied = [r[1] for r in got]
    return {"steps_per_s_server": (b1 - b0) / dt, "steps_per_s_devices": len(got) / dt,
            "rtt_recv_p50_ms": 1e3 * _pct(recv, 0.5), "rtt_recv_p99_ms": 1e3 * _pct(recv, 0.99),
            "rtt_applied_p50_ms": 1e3 * _pct(applied, 0.5),
            "rtt_applied_p99_ms": 1e3 * _pct(applied, 0.99),
            "rtt_applied_mean_ms": 1e3 * statistics.fmean(applied) if applied else float("nan"),
            "samples": float(len(got)), "errors": float(sum(d.errors for d in devices)),
            "cpu_cores_busy": cores, "loadavg_1m_after": os.getloadavg()[0]}


def _table(results: dict[str, Any]) -> list[tuple[str, str]]:
    """The markdown rows: per N the system and its broker-only floor, side by side."""
    table: list[tuple[str, str]] = []
    for n in NS:
        s, f = results[str(n)]["system"], results[str(n)]["broker_floor"]
        busy = ", ".join(f"{k} {v:.2f}" for k, v in s["cpu_cores_busy"].items())
        table += [
            (f"N={n} train steps/s (server counter)",
             f"{s['steps_per_s_server']:.1f} (broker-only echo {f['steps_per_s_devices']:.0f}/s)"),
            (f"N={n} round trip p50 / p99, publish -> backward applied (ms)",
             f"{s['rtt_applied_p50_ms']:.1f} / {s['rtt_applied_p99_ms']:.1f}"),
            (f"N={n} round trip p50 / p99, publish -> gradient verified (ms)",
             f"{s['rtt_recv_p50_ms']:.1f} / {s['rtt_recv_p99_ms']:.1f}"),
            (f"N={n} broker-only floor p50 / p99, same 4 hops (ms)",
             f"{f['rtt_recv_p50_ms']:.2f} / {f['rtt_recv_p99_ms']:.2f}"),
            (f"N={n} system / floor: p50 latency, throughput",
             f"{s['rtt_applied_p50_ms'] / f['rtt_recv_p50_ms']:.1f}x slower, "
             f"{f['steps_per_s_devices'] / max(s['steps_per_s_server'], 1e-9):.1f}x fewer/s"),
            (f"N={n} CPU cores busy during the window", busy),
            (f"N={n} machine load average (1 min) after system / floor window",
             f"{s['loadavg_1m_after']:.1f} / {f['loadavg_1m_after']:.1f} "
             f"on {os.cpu_count()} CPUs"),
        ]
    e = results["echo_probe_n4"]
    table.append(("bare echo, N=4, 4 hops: defaults (Nagle on) vs TCP_NODELAY on broker+clients",
                  f"p50 {e['defaults']['p50_ms']:.1f} ms, {e['defaults']['per_s']:.0f}/s vs "
                  f"p50 {e['tcp_nodelay']['p50_ms']:.1f} ms, {e['tcp_nodelay']['per_s']:.0f}/s"))
    table.append(("SQLite WAL synchronous=FULL commit, median (gateway journal, per step)",
                  f"{results['journal_commit_ms']:.2f} ms"))
    table.append(("set-up", f"2 orgs x gateway process, 1 server process, Mosquitto, solo ledger; "
                            f"devices = threads in the bench process; {os.cpu_count()} CPUs "
                            "shared with other benchmarks (contention not controlled)"))
    return table


def main() -> None:
    logging.getLogger("service.link").setLevel(logging.ERROR)  # 64 "disconnected" lines
    if shutil.which("mosquitto") is None:
        raise RuntimeError("mosquitto is not installed")
    m = _manifest()
    win = load_windows(WindowConfig(dataset=m.dataset, length=int(m.window["length"]),
                                    mode=m.window["mode"],
                                    per_window=bool(m.window["per_window"])), data_dir=DATA_DIR)
    n_max = max(NS)
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="bench-server-") as d:
        tmp = Path(d)
        stack = Stack(tmp)
        devices: list[Device] = []
        events: PahoLink | None = None
        relays: FloorRelays | None = None
        try:
            dev_keys = stack.start(m, n_max)
            port = stack.broker.port
            seen: set[tuple[str, str]] = set()
            events = PahoLink(MqttSettings(port=port, client_id="bench-events"),
                              subscriptions=[topics.events(o) for o in ORGS])
            events.connect()

            def saw(kind: str) -> bool:
                while not events.inbox.empty():
                    item = events.inbox.get()
                    events.ack(item)
                    e = json.loads(item.payload)
                    seen.add((e["org"], e["event"]))
                return all((o, kind) in seen for o in ORGS)

            shards = np.array_split(np.random.default_rng(1).permutation(len(win.x_train)), n_max)
            for i, (key, k) in enumerate(dev_keys.items()):
                org, name = key.split("/")
                rt = ClientRuntime.from_manifest(m, num_threads=1)
                link = PahoLink(MqttSettings(port=port, client_id=f"dev-{org}-{name}"),
                                subscriptions=[topics.down(org, name), _floor(org, name, "down")])
                sh = shards[i]
                dev = Device(org=org, name=name, key=k, rt=rt, x=rt.normalise(win.x_train[sh]),
                             y=win.y_train[sh], link=link, batch=min(m.max_batch, len(sh)))
                devices.append(dev)
                link.connect()
                birth = DeviceState(org=org, device=name, online=True, bd_seq=0)
                link.publish(topics.state(org, name), birth.to_json(), retain=True)
            for org in ORGS:
                stack.spawn([str(BIN / "splitfed-gateway"), "run", "--config",
                             str(tmp / f"{org}.toml"), "--log-level", "WARNING"], f"gw-{org}.log")
            _wait(lambda: stack.check_alive() and saw("device_birth"), "gateways up")
            stack.spawn([str(BIN / "splitfed-server"), "run", "--config", str(tmp / "server.toml"),
                         "--log-level", "WARNING"], "server.log")
            _wait(lambda: stack.check_alive() and saw("round_started"), "round 0 started")
            # drain the start_round commands the gateways relayed to every device
            for dev in devices:
                while not dev.link.inbox.empty():
                    dev.link.ack(dev.link.inbox.get())
            results["journal_commit_ms"] = _journal_commit_ms(tmp)
            results["echo_probe_n4"] = {"defaults": _echo_probe(tmp, nodelay=False),
                                        "tcp_nodelay": _echo_probe(tmp, nodelay=True)}
            relays = FloorRelays(port)
            pids = {**stack.pids, "mosquitto": stack.broker.pid}
            server_vk = stack.keys["server"].verify_key
            for n in NS:
                group = devices[:n]
                floor = _run_phase(group, floor=True, seconds=FLOOR_S, server_vk=server_vk,
                                   metrics_url=stack.metrics_url, pids=pids)
                system = _run_phase(group, floor=False, seconds=SYSTEM_S, server_vk=server_vk,
                                    metrics_url=stack.metrics_url, pids=pids)
                stack.check_alive()
                results[str(n)] = {"system": system, "broker_floor": floor}
                print(f"N={n}: system {system}\n      floor {floor}", flush=True)
        finally:
            if relays is not None:
                relays.close()
            for dev in devices:
                dev.link.close()
            if events is not None:
                events.close()
            stack.close()
    table = _table(results)
    write_results("server", {"model": f"{m.model_id}/cut{m.cut}", "batch": m.max_batch,
                             "warmup_s": WARMUP_S, "system_window_s": SYSTEM_S,
                             "floor_window_s": FLOOR_S, "cpus": os.cpu_count(),
                             "results": results}, table)


if __name__ == "__main__":
    main()
