"""Two organisations x two devices train on PLAID through real processes' logic.

Real Mosquitto, a real solo ledger node (in-process API), the real gateway
and server apps (each on its own thread, as in their processes), validator
votes, and four simulated devices that run the real LiteRT client half:
forward, sign, wait for the server-signed gradient, backward, upload their
client half at round end, and load each finalised version only after
checking its ledger proof (certified header + inclusion + weights hash).
"""

from __future__ import annotations

import dataclasses
import json
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from deploy.broker import MosquittoBroker
from gateway.app import GatewayApp
from gateway.config import parse_config as gateway_config
from models.clip import clip_rows
from models.data import WindowConfig, load_windows
from models.manifest import Manifest, list_artifacts
from models.runtime import ClientRuntime
from protocol import topics
from protocol.keys import save_signing_key
from protocol.ledger.lightclient import verify_model_finalisation
from protocol.messages import (
    ActivationBatch,
    ClientWeights,
    Command,
    DeviceState,
    DpParams,
    GradientBatch,
    ModelAnnouncement,
    open_sealed,
    seal,
    unseal,
)
from server.app import ServerApp
from server.cli import main as server_main
from server.config import parse_config as server_config
from server.core import Phase
from service.ledger_client import LedgerClient
from service.link import PahoLink
from service.mqtt import MqttSettings
from tests.integration.helpers import wait_for
from tests.unit.ledger_node.conftest import Consortium

pytestmark = pytest.mark.integration
ORGS = ("org1", "org2")
ROUNDS = 3
STEPS = 4


def _manifest() -> Manifest:
    arts = [m for m in list_artifacts() if m.model_id == "cnn1d" and m.cut == 1]
    if not arts:
        pytest.fail("model artifacts are missing (models/artifacts is part of the package)")
    return arts[0]


def _wait(pred: Callable[[], bool], what: str, timeout: float = 60.0) -> None:
    wait_for(pred, timeout, what)


class Device:
    """A simulated node: real client half, real signatures, real MQTT."""

    def __init__(
        self,
        org: str,
        name: str,
        key: object,
        m: Manifest,
        x: np.ndarray,
        y: np.ndarray,
        port: int,
        server_vk: object,
        validators: dict[str, str],
    ) -> None:
        self.org, self.name, self.key, self.m = org, name, key, m
        self.rt = ClientRuntime.from_manifest(m)
        self.x, self.y = self.rt.normalise(x), y
        self.server_vk, self.validators = server_vk, validators
        self.link = PahoLink(
            MqttSettings(port=port, client_id=f"dev-{org}-{name}"),
            subscriptions=[topics.down(org, name), topics.model(org)],
        )
        self.seq, self.eps, self.version, self.step = 0, 0.0, 0, 0
        self.rng = np.random.default_rng([ord(ch) for ch in f"{org}/{name}"])
        self.pending: list[object] = []

    def _drain(self) -> None:
        while not self.link.inbox.empty():
            item = self.link.inbox.get()
            self.link.ack(item)
            if item.topic == topics.model(self.org):
                ann = unseal(item.payload, verify_key=_gw_key(self.org))[1]
                assert isinstance(ann, ModelAnnouncement) and ann.proof is not None
                p = ann.proof
                fm = verify_model_finalisation(  # light client: header cert + inclusion + hash
                    chain_id=p.chain_id,
                    height=p.height,
                    header=p.header,
                    certificate=p.certificate,
                    tx=p.tx,
                    leaf_index=p.leaf_index,
                    tree_size=p.tree_size,
                    audit_path=p.audit_path,
                    validators=self.validators,
                    expected_weights_sha256=ann.weights_sha256,
                )
                if fm.version > self.version and ann.weights is not None:
                    self.rt.set_weights(ann.weights)
                    self.version = fm.version
            else:
                self.pending.append(open_sealed(item.payload, verify_key=self.server_vk))

    def take(self, kind: type, pred: Callable[[object], bool], timeout: float = 30.0) -> object:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self._drain()
            for msg in self.pending:
                if isinstance(msg, kind) and pred(msg):
                    self.pending.remove(msg)
                    return msg
            time.sleep(0.01)
        raise AssertionError(f"{self.org}/{self.name}: no {kind.__name__}")

    def train_step(self, rnd: int, lr: float) -> None:
        idx = self.rng.choice(len(self.x), size=self.m.max_batch, replace=False)
        # devices clip each row to the session's clip norm as real agents do (evaluators
        # clip too); the Gaussian noise itself is left out here so three short rounds learn:
        # this test is about the SFL flow and the ledger bookkeeping, not utility under DP
        raw = self.rt.forward(self.x[idx])
        a = clip_rows(raw.reshape(len(idx), -1), clip_norm=1.0).reshape(raw.shape)
        a = a.astype(np.float32)
        self.seq += 1
        self.step += 1
        self.eps += 0.05
        msg = ActivationBatch(
            session="s1",
            round=rnd,
            step=self.step,
            device=self.name,
            seq=self.seq,
            model_hash=self.m.client_sha256,
            dp=DpParams(
                mode="sl-dpsgd",
                clip_norm=1.0, noise_multiplier=1.0, label_mode="plain", label_epsilon=None
            ),
            activations=a,
            labels=self.y[idx].astype(np.int64),
            epsilon_spent=self.eps,
        )
        self.link.publish(
            topics.up(self.org, self.name),
            seal(
                msg,
                signing_key=self.key,  # type: ignore[arg-type]
                kid=self.name,
            ),
        )
        seq = self.seq
        g = self.take(GradientBatch, lambda m: m.seq == seq)  # type: ignore[attr-defined]
        assert isinstance(g, GradientBatch)
        self.rt.backward(self.x[idx], g.grad, lr=lr)

    def upload(self, rnd: int) -> None:
        self.seq += 1
        cw = ClientWeights(
            session="s1",
            round=rnd,
            device=self.name,
            seq=self.seq,
            model_hash=self.m.client_sha256,
            num_samples=STEPS * self.m.max_batch,
            weights=self.rt.get_weights(),
            weights_dp="dp_sgd",
            epsilon_spent=self.eps,
        )
        self.link.publish(
            topics.up(self.org, self.name),
            seal(
                cw,
                signing_key=self.key,  # type: ignore[arg-type]
                kid=self.name,
            ),
        )


_GW_KEYS: dict[str, object] = {}


def _gw_key(org: str) -> object:
    return _GW_KEYS[org]


@pytest.mark.parametrize("corrupt", [None, 1], ids=["honest", "corrupted-aggregate-round-1"])
def test_two_orgs_two_devices_train_rounds(
    corrupt: int | None,
    tmp_path: Path,
    data_dir: Path,
    ledger: tuple[LedgerClient, Consortium],
    mosquitto_factory: Callable[..., MosquittoBroker],
) -> None:
    m = _manifest()
    client, c = ledger
    broker = mosquitto_factory()
    keys = tmp_path / "keys"
    server_key = save_signing_key(c.keys["server"], keys / "server.key")
    cfg_text = (
        f'[server]\nsession = "s1"\nsigning_key = "{server_key}"\ndata_dir = "{data_dir}"\n'
        f"lr = 0.003\npoll_interval_s = 0.05\n"
        f"[round]\nmin_devices = 4\ndeadline_s = 60\ncollect_deadline_s = 30\n"
        f'[session]\nmodel_id = "cnn1d"\ncut = 1\nrounds = {ROUNDS}\nsfl_mode = "v1"\n'
        'groups = { org1 = ["org1"], org2 = ["org2"] }\nmin_noise_multiplier = 0.5\n'
        "clip = 1.0\nmax_epsilon = 50.0\ndelta = 1e-5\nvote_quorum = 2\n"
            # simulated devices upload DP-SGD client halves and send labels in clear
            "privacy_mode = \"sl-dpsgd\"\nlabels_public = true\n"
        f'[ledger]\nurl = "{client.base_url}"\nchain_id = "{c.genesis.chain_id}"\n'
        f'[mqtt]\nport = {broker.port}\nclient_id = "server"\n'
    )
    cfg_path = tmp_path / "server.toml"
    cfg_path.write_text(cfg_text)
    assert server_main(["session", "create", "--config", str(cfg_path)]) == 0
    for org in ORGS:
        for d in ("d1", "d2"):
            assert client.submit_and_wait(c.register(org, d)).valid
        _GW_KEYS[org] = c.keys[f"{org}/gateway"].verify_key
    win = load_windows(
        WindowConfig(
            dataset=m.dataset,
            length=int(m.window["length"]),
            mode=m.window["mode"],
            per_window=bool(m.window["per_window"]),
        ),
        data_dir=data_dir,
    )
    shards = np.array_split(np.random.default_rng(1).permutation(len(win.x_train)), 4)
    gateways = []
    for org in ORGS:
        gw_key = save_signing_key(c.keys[f"{org}/gateway"], keys / f"{org}-gw.key")
        val_key = save_signing_key(c.keys[f"{org}/validator"], keys / f"{org}-val.key")
        gateways.append(
            GatewayApp(
                gateway_config(
                    {
                        "gateway": {
                            "org": org,
                            "session": "s1",
                            "signing_key": str(gw_key),
                            "state_dir": str(tmp_path / f"{org}-state"),
                        },
                        "ledger": {
                            "url": client.base_url,
                            "chain_id": c.genesis.chain_id,
                            "poll_interval_s": 0.05,
                        },
                        "mqtt": {"port": broker.port, "client_id": f"gw-{org}"},
                        "validator": {
                            "signing_key": str(val_key),
                            "data_dir": str(data_dir),
                            "max_drop": 0.1,
                            "max_windows": 300,
                        },
                    },
                    env={},
                )
            )
        )
    server = ServerApp(server_config(__import__("tomllib").loads(cfg_text), env={}))
    validators = client.validators()
    devices = [
        Device(
            org,
            d,
            c.devices[f"{org}/{d}"],
            m,
            win.x_train[shards[i]],
            win.y_train[shards[i]],
            broker.port,
            c.keys["server"].verify_key,
            validators,
        )
        for i, (org, d) in enumerate((o, d) for o in ORGS for d in ("d1", "d2"))
    ]
    events = PahoLink(
        MqttSettings(port=broker.port, client_id="integrator"),
        subscriptions=[topics.events(o) for o in ORGS],
    )
    apps: list[GatewayApp | ServerApp] = [*gateways, server]
    threads = [threading.Thread(target=a.run, name=f"app-{i}") for i, a in enumerate(apps)]
    try:
        events.connect()
        for gw in gateways:
            gw.start()
        for dev in devices:  # connect and publish the retained birth, as agents do
            dev.link.connect()
            birth = DeviceState(org=dev.org, device=dev.name, online=True, bd_seq=0)
            dev.link.publish(topics.state(dev.org, dev.name), birth.to_json(), retain=True)
        for t in threads[:-1]:
            t.start()
        _wait(
            lambda: all(g.core.policy is not None for g in gateways), "gateways loaded the session"
        )
        if corrupt is not None:  # a corrupted aggregate in round `corrupt` (finite garbage)
            honest_aggregates = server.core._group_aggregates
            noise = np.random.default_rng(7)

            def corrupted() -> list[Any]:
                aggs = honest_aggregates()
                if server.core.round != corrupt:
                    return aggs
                return [
                    dataclasses.replace(
                        a,
                        weights=tuple(
                            noise.normal(0, 30, w.shape).astype(np.float32) for w in a.weights
                        ),
                    )
                    for a in aggs
                ]

            server.core._group_aggregates = corrupted  # type: ignore[method-assign]
        server.start()
        threads[-1].start()
        # versions after each round: a quorum-rejected proposal is not finalised, the next
        # proposal is numbered above it, devices keep the previous version meanwhile
        expected = [1, 2, 3] if corrupt is None else [1, 1, 3]
        for rnd in range(ROUNDS):
            for dev in devices:
                dev.take(Command, lambda m, r=rnd: m.kind == "start_round" and m.round == r)  # type: ignore[attr-defined,misc]
            for _ in range(STEPS):
                for dev in devices:
                    dev.train_step(rnd, lr=0.003)
            for dev in devices:
                dev.upload(rnd)
            want = expected[rnd]
            _wait(
                lambda r=rnd: server.core.round > r or server.core.phase is Phase.DONE,
                f"round {rnd} decided",
            )  # type: ignore[misc]
            assert server.core.version == want
            _wait(
                lambda w=want: all(d.version >= w or (d._drain() and False) for d in devices),  # type: ignore[func-returns-value,misc]
                f"devices loaded version {want} after checking its proof",
            )
            assert all(d.version == want for d in devices)  # a rejected version is never loaded
        _wait(lambda: server.core.phase is Phase.DONE, "session done")
        accs = [h["accuracy"] for h in server.core.history]
        print("held-out accuracy per round:", [round(a, 3) for a in accs])
        assert len(accs) == ROUNDS and accs[-1] > accs[0], accs
        # the ledger agrees with the devices: one record per org per round, spend = accountants
        for rnd in range(ROUNDS):
            for org in ORGS:
                rec = client.state(f"round/s1/{rnd}/{org}/{org}")
                assert rec is not None and rec["envelope_count"] == 2 * STEPS
        for dev in devices:
            assert client.device_spend("s1", f"{dev.org}/{dev.name}") == pytest.approx(dev.eps)
        assert [mr.version for mr in client.models("s1")] == sorted(set(expected))
        # a healthy run (and one with a rejected version) submits no tx the contract refuses
        invalid = [
            (h, t["kind"], t["reason"])
            for h in range(1, client.height() + 1)
            for t in client.block(h)["txs"]
            if not t["valid"]
        ]
        assert invalid == [] and server.invalid_txs == 0
        if corrupt is not None:
            bad = next(p for p in client.proposals("s1") if p["version"] == 2)
            assert not bad["finalised"]
            assert {o: v["accept"] for o, v in bad["votes"].items()} == {o: False for o in ORGS}
        # integrators see rounds, votes (own held-out accuracy), published versions, epsilon
        seen: list[dict[str, object]] = []

        def got_all() -> bool:
            while not events.inbox.empty():
                item = events.inbox.get()
                events.ack(item)
                seen.append(json.loads(item.payload))
            kinds = {(e["org"], e["event"]) for e in seen}
            finished = [e for e in seen if e["event"] == "round_finished"]
            return len(finished) == ROUNDS * len(ORGS) and all(
                (o, k) in kinds
                for o in ORGS
                for k in (
                    "round_started",
                    "round_finished",
                    "model_vote",
                    "model_published",
                    "device_birth",
                )
            )

        _wait(got_all, "events for integrators")
        fin = [e for e in seen if e["event"] == "round_finished" and e["org"] == "org1"]
        assert fin[-1]["epsilon"] == {
            "d1": pytest.approx(devices[0].eps),
            "d2": pytest.approx(devices[1].eps),
        }
        assert all(isinstance(e["accuracy"], float) for e in seen if e["event"] == "model_vote")
    finally:
        for a in apps:
            a.stop()
        for t in threads:
            if t.is_alive():
                t.join(timeout=15)
        for dev in devices:
            dev.link.close()
        events.close()
        for a in apps:
            a.close()
