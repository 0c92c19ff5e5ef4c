"""Gateway process logic against a real Mosquitto broker and a real solo ledger node.

Fake devices sign real envelopes with keys registered on the ledger; a fake
server signs commands with the genesis server key. Honest batches are
forwarded byte for byte (endorsed); every attack kind is rejected and counted
on the Prometheus endpoint while training continues; the round record lands
on the ledger with the Merkle root of exactly the accepted envelopes.
"""

from __future__ import annotations

import threading
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cbor2
import nacl.signing
import numpy as np
import pytest

from deploy.broker import MosquittoBroker
from gateway.app import GatewayApp
from gateway.config import parse_config
from models.manifest import Manifest, list_artifacts
from protocol import envelope, topics
from protocol.endorse import open_endorsement
from protocol.keys import save_signing_key
from protocol.merkle import merkle_root
from protocol.messages import (
    ActivationBatch,
    ClientWeights,
    Command,
    DpParams,
    GradientBatch,
    decode_any,
    seal,
)
from service.ledger_client import LedgerClient
from service.link import PahoLink
from service.mqtt import MqttSettings
from tests.integration.helpers import wait_for
from tests.unit.ledger_node.conftest import Consortium, session_body

pytestmark = pytest.mark.integration
ORG = "org1"


def _manifest() -> Manifest:
    arts = [m for m in list_artifacts() if m.model_id == "cnn1d" and m.cut == 1]
    if not arts:
        pytest.fail("model artifacts are missing (models/artifacts is part of the package)")
    return arts[0]


def _wait(pred: Callable[[], bool], what: str, timeout: float = 20.0) -> None:
    wait_for(pred, timeout, what)


class Batches:
    def __init__(self, m: Manifest) -> None:
        self.m = m

    def act(
        self,
        device: str,
        seq: int,
        key: nacl.signing.SigningKey,
        *,
        kid: str | None = None,
        noise: float = 1.2,
        batch: int = 4,
        eps: float = 0.5,
        round_no: int = 0,
        shape: tuple[int, ...] | None = None,
    ) -> bytes:
        rng = np.random.default_rng(seq)
        msg = ActivationBatch(
            session="s1",
            round=round_no,
            step=seq,
            device=device,
            seq=seq,
            model_hash=self.m.client_sha256,
            dp=DpParams(
                mode="sl-dpsgd",
                clip_norm=1.0, noise_multiplier=noise, label_mode="plain", label_epsilon=None
            ),
            activations=rng.normal(size=(batch, *(shape or self.m.activation_shape))).astype(
                np.float32
            ),
            labels=rng.integers(0, self.m.num_classes, batch).astype(np.int64),
            epsilon_spent=eps,
        )
        return seal(msg, signing_key=key, kid=kid or device)

    def weights(
        self, device: str, seq: int, key: nacl.signing.SigningKey, value: float, eps: float
    ) -> bytes:
        ws = tuple(np.full(s, value, np.float32) for s in self.m.client_weight_shapes)
        msg = ClientWeights(
            session="s1",
            round=0,
            device=device,
            seq=seq,
            model_hash=self.m.client_sha256,
            num_samples=8,
            weights=ws,
            weights_dp="dp_sgd",
            epsilon_spent=eps,
        )
        return seal(msg, signing_key=key, kid=device)

    def nan(self, device: str, seq: int, key: nacl.signing.SigningKey) -> bytes:
        env = envelope.peek(self.act(device, seq, key))
        m = cbor2.loads(env.payload)
        arr = np.frombuffer(m["activations"]["data"], dtype=m["activations"]["dtype"]).copy()
        arr[0] = np.nan
        m["activations"]["data"] = arr.tobytes()
        return envelope.sign(
            cbor2.dumps(m, canonical=True),
            signing_key=key,
            kid=device,
            content_type=env.content_type,
        )


def _metrics(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        return str(r.read().decode())


def _counter(text: str, name: str, **labels: str) -> float:
    want = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    prefix = f"splitfed_gateway_{name}_total{{{want}}} " if want else \
        f"splitfed_gateway_{name}_total "
    for line in text.splitlines():
        if line.startswith(prefix):
            return float(line.split()[-1])
    return 0.0


def test_gateway_admits_honest_rejects_attacks_and_records_round(
    tmp_path: Path,
    ledger: tuple[LedgerClient, Consortium],
    mosquitto_factory: Callable[..., MosquittoBroker],
) -> None:
    client, c = ledger
    m = _manifest()
    b = Batches(m)
    assert client.submit_and_wait(
        c.tx(
            "server",
            "session_create",
            session_body(
                client_sha256=m.client_sha256, server_sha256=m.server_sha256, groups={ORG: [ORG]},
                extra={"privacy_mode": "sl-dpsgd", "labels_public": True},
            ),
        )
    ).valid
    for d in ("d1", "d2"):
        assert client.submit_and_wait(c.register(ORG, d)).valid
    dk = {d: c.devices[f"{ORG}/{d}"] for d in ("d1", "d2")}
    rogue = nacl.signing.SigningKey.generate()
    broker = mosquitto_factory()
    keyfile = save_signing_key(c.keys[f"{ORG}/gateway"], tmp_path / "keys" / "gw.key")
    cfg = parse_config(
        {
            "gateway": {
                "org": ORG,
                "session": "s1",
                "signing_key": str(keyfile),
                "state_dir": str(tmp_path / "gw-state"),
                "max_message_bytes": 65536,
            },
            "ledger": {
                "url": client.base_url,
                "chain_id": c.genesis.chain_id,
                "poll_interval_s": 0.1,
            },
            "mqtt": {"port": broker.port, "client_id": "gw-org1"},
            "metrics": {"listen": "127.0.0.1:0"},
        },
        env={},
    )
    app = GatewayApp(cfg)
    server = PahoLink(
        MqttSettings(port=broker.port, client_id="srv"), subscriptions=[topics.central_up(ORG)]
    )
    dev = PahoLink(MqttSettings(port=broker.port, client_id="devs"), subscriptions=[])
    thread = threading.Thread(target=app.run, name="gateway-app")
    try:
        app.start()
        thread.start()
        server.connect()
        dev.connect()
        assert app.metrics_server is not None
        port = app.metrics_server.port
        _wait(lambda: app.core.policy is not None, "session policy from the ledger")
        cmd = Command(session="s1", round=0, device=None, kind="start_round", seq=1)
        server.publish(
            topics.central_down(ORG), seal(cmd, signing_key=c.keys["server"], kid="server")
        )
        _wait(lambda: app.core.round is not None, "round 0 open")

        honest = [b.act("d1", 1, dk["d1"]), b.act("d2", 1, dk["d2"]), b.act("d1", 5000, dk["d1"])]
        attacks: list[tuple[str, bytes, str, str]] = [
            ("d9", b.act("d9", 1, rogue), "unregistered", "d9"),
            ("d1", b.act("d2", 2, dk["d2"]), "impersonation", "d2"),  # d2's key under d1's topic
            ("d1", b.act("d1", 1, dk["d1"]), "replay", "d1"),  # stale after seq 5000
            ("d1", b.nan("d1", 5001, dk["d1"]), "malformed", "d1"),
            ("d1", b.act("d1", 5002, dk["d1"], shape=(64, 9)), "wrong_shape", "d1"),
            ("d1", b.act("d1", 5003, dk["d1"], batch=32, shape=(64, 16)), "oversize", "d1"),
            ("d1", b.act("d1", 5004, dk["d1"], noise=0.2), "dp_below_policy", "d1"),
            ("d1", b.act("d1", 5005, dk["d1"], kid="d1", round_no=7), "wrong_round", "d1"),
        ]
        for data in honest:
            dev.publish(topics.up(ORG, envelope.peek(data).kid), data)
        dev.publish(topics.up(ORG, "d1"), honest[2])  # QoS1 redelivery look-alike
        for topic_dev, data, _, _ in attacks:
            dev.publish(topics.up(ORG, topic_dev), data)
        got: list[bytes] = []

        def forwarded() -> bool:
            while not server.inbox.empty():
                item = server.inbox.get()
                server.ack(item)
                got.append(
                    open_endorsement(
                        item.payload, gateway_key=c.keys[f"{ORG}/gateway"].verify_key, org=ORG
                    ).envelope
                )
            return len(got) >= len(honest)

        _wait(forwarded, "honest batches forwarded")
        _wait(
            lambda: all(
                _counter(_metrics(port), "rejected", reason=r) >= 1
                for _, _, r, _d in attacks
            ),
            "every attack counted",
        )
        # revoke d2 mid-session: rejected from the next block on, training goes on for d1
        assert client.submit_and_wait(c.tx(f"{ORG}/admin", "device_revoke", {"device": "d2"})).valid
        h = client.height()
        _wait(lambda: app.core.block_height >= h, "gateway saw the revocation block")
        dev.publish(topics.up(ORG, "d2"), b.act("d2", 2, dk["d2"]))
        d1_more = b.act("d1", 5010, dk["d1"], eps=0.9)
        dev.publish(topics.up(ORG, "d1"), d1_more)
        _wait(
            lambda: _counter(_metrics(port), "rejected", reason="revoked") == 1,
            "revoked device rejected",
        )
        _wait(lambda: forwarded() and len(got) == 4, "d1 still forwarded")
        text = _metrics(port)
        assert _counter(text, "duplicates") == 1
        assert _counter(text, "accepted", type="activations") == len(got)
        assert f'splitfed_device_epsilon_spent{{device="d1",org="{ORG}"}} 0.9\n' in text
        assert got == [*honest, d1_more]  # byte for byte, in order
        # the server trains d1's batches and answers with gradients: only now they count
        for env_bytes in got:
            inner = envelope.peek(env_bytes)
            act = decode_any(inner.payload, inner.content_type)
            if not isinstance(act, ActivationBatch) or act.device != "d1":
                continue
            g = GradientBatch(session="s1", round=0, step=act.step, device="d1", seq=act.seq,
                              grad=np.zeros_like(act.activations, np.float32), loss=1.0)
            server.publish(topics.central_down(ORG),
                           seal(g, signing_key=c.keys["server"], kid="server"))
        _wait(lambda: _counter(_metrics(port), "trained_samples", device="d1") == 12,
              "gradients relayed and counted")
        dev.publish(topics.up(ORG, "d1"), b.weights("d1", 5011, dk["d1"], 1.0, eps=1.0))
        _wait(
            lambda: _counter(_metrics(port), "accepted", type="weights") == 1,
            "weights accepted",
        )
        stop = Command(session="s1", round=0, device=None, kind="stop_round", seq=2)
        server.publish(
            topics.central_down(ORG), seal(stop, signing_key=c.keys["server"], kid="server")
        )

        def recorded() -> Any:
            return client.state(f"round/s1/0/{ORG}/{ORG}")

        _wait(lambda: recorded() is not None, "round record on the ledger")
        rec = recorded()
        assert rec["envelopes_root"] == merkle_root([*honest, d1_more]).hex()
        assert rec["devices"]["d1"] == {"samples": 12, "epsilon": 1.0, "epsilon_total": 1.0}
        assert "d2" not in rec["devices"]  # revoked since: listed apart, not added to spend
        assert client.device_spend("s1", f"{ORG}/d1") == pytest.approx(1.0)
    finally:
        app.stop()
        if thread.is_alive():
            thread.join(timeout=10)
        dev.close()
        server.close()
        app.close()


def test_gateway_restart_mid_round_counts_each_message_once(
    tmp_path: Path,
    ledger: tuple[LedgerClient, Consortium],
    mosquitto_factory: Callable[..., MosquittoBroker],
) -> None:
    client, c = ledger
    m = _manifest()
    b = Batches(m)
    assert client.submit_and_wait(
        c.tx(
            "server",
            "session_create",
            session_body(
                client_sha256=m.client_sha256, server_sha256=m.server_sha256, groups={ORG: [ORG]},
                extra={"privacy_mode": "sl-dpsgd", "labels_public": True},
            ),
        )
    ).valid
    for d in ("d1", "d2"):
        assert client.submit_and_wait(c.register(ORG, d)).valid
    dk = {d: c.devices[f"{ORG}/{d}"] for d in ("d1", "d2")}
    broker = mosquitto_factory()
    keyfile = save_signing_key(c.keys[f"{ORG}/gateway"], tmp_path / "keys" / "gw.key")
    raw = {
        "gateway": {
            "org": ORG,
            "session": "s1",
            "signing_key": str(keyfile),
            "state_dir": str(tmp_path / "gw-state"),
        },
        "ledger": {"url": client.base_url, "chain_id": c.genesis.chain_id, "poll_interval_s": 0.1},
        "mqtt": {"port": broker.port, "client_id": "gw-org1"},
    }
    server = PahoLink(
        MqttSettings(port=broker.port, client_id="srv"), subscriptions=[topics.central_up(ORG)]
    )
    dev = PahoLink(MqttSettings(port=broker.port, client_id="devs"), subscriptions=[])
    msgs = [
        b.act("d1", 1, dk["d1"]),
        b.act("d2", 1, dk["d2"], eps=0.4),
        b.act("d1", 2, dk["d1"], eps=0.7),
        b.act("d2", 2, dk["d2"], eps=0.8),
    ]
    forwarded: list[bytes] = []

    def drain() -> int:
        """Take the forwards; answer each batch with a gradient, as the server does."""
        while not server.inbox.empty():
            item = server.inbox.get()
            server.ack(item)
            forwarded.append(item.payload)
            inner = envelope.peek(
                open_endorsement(
                    item.payload, gateway_key=c.keys[f"{ORG}/gateway"].verify_key, org=ORG
                ).envelope
            )
            act = decode_any(inner.payload, inner.content_type)
            assert isinstance(act, ActivationBatch)
            g = GradientBatch(session="s1", round=0, step=act.step, device=act.device,
                              seq=act.seq, grad=np.zeros_like(act.activations, np.float32),
                              loss=1.0)
            server.publish(topics.central_down(ORG),
                           seal(g, signing_key=c.keys["server"], kid="server"))
        return len(forwarded)

    def run_gateway() -> tuple[GatewayApp, threading.Thread]:
        app = GatewayApp(parse_config(raw, env={}))
        app.start()
        t = threading.Thread(target=app.run, name="gateway-app")
        t.start()
        return app, t

    def stop(app: GatewayApp, t: threading.Thread) -> None:
        app.stop()
        t.join(timeout=10)
        app.close()

    app, thread = run_gateway()
    try:
        server.connect()
        dev.connect()
        _wait(lambda: app.core.policy is not None, "session policy")
        server.publish(
            topics.central_down(ORG),
            seal(
                Command(session="s1", round=0, device=None, kind="start_round", seq=1),
                signing_key=c.keys["server"],
                kid="server",
            ),
        )
        _wait(lambda: app.core.round is not None, "round open")
        for data in msgs[:2]:
            dev.publish(topics.up(ORG, envelope.peek(data).kid), data)
        _wait(lambda: drain() == 2, "first two forwarded")
        stop(app, thread)  # the gateway goes down mid-round
        # while it is down: two new batches and a redelivery of one it already counted
        dev.publish(topics.up(ORG, "d1"), msgs[2])
        dev.publish(topics.up(ORG, "d1"), msgs[0])
        dev.publish(topics.up(ORG, "d2"), msgs[3])
        app, thread = run_gateway()  # same state dir, same MQTT client id (persistent session)
        _wait(lambda: drain() == 4, "queued batches forwarded after the restart")
        _wait(lambda: app.metrics.value("duplicates") == 1, "duplicate seen")
        _wait(lambda: app.core.round is not None and app.core.round.samples("d2") == 8,
              "gradients of the batches forwarded after the restart relayed")
        server.publish(
            topics.central_down(ORG),
            seal(
                Command(session="s1", round=0, device=None, kind="stop_round", seq=2),
                signing_key=c.keys["server"],
                kid="server",
            ),
        )
        _wait(lambda: client.state(f"round/s1/0/{ORG}/{ORG}") is not None, "round record")
        rec = client.state(f"round/s1/0/{ORG}/{ORG}")
        assert rec["envelope_count"] == 4
        assert rec["envelopes_root"] == merkle_root(msgs).hex()
        assert rec["devices"]["d1"]["samples"] == 8 and rec["devices"]["d2"]["samples"] == 8
        assert client.device_spend("s1", f"{ORG}/d2") == pytest.approx(0.8)
        assert len(forwarded) == 4  # nothing forwarded twice
    finally:
        stop(app, thread)
        dev.close()
        server.close()
