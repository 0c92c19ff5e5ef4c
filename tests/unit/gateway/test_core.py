from __future__ import annotations

import json
from pathlib import Path

import nacl.signing
import numpy as np

from gateway.core import GatewayCore, Publish, SubmitRecord
from gateway.endorse import gateway_kid, open_endorsement
from gateway.journal import SqliteJournal
from gateway.metrics import MetricsRegistry
from gateway.ratelimit import LogLimiter
from gateway.registry import CachedRegistry, DeviceInfo, StaticRegistry
from gateway.rounds import InMemoryJournal, RoundJournal
from gateway.verify import AdmissionPipeline
from protocol import topics
from protocol.messages import (
    ClientWeights,
    Command,
    DeviceState,
    GradientBatch,
    seal,
    unseal,
    weights_digest,
)
from protocol.replay import ReplayGuard

from . import _fixtures as fx

DEV = {d: nacl.signing.SigningKey(bytes([i + 7]) * 32) for i, d in enumerate(["d1", "d2"])}
GW = nacl.signing.SigningKey(b"\x41" * 32)
SERVER = nacl.signing.SigningKey(b"\x42" * 32)


def _core(journal: RoundJournal, start_seq: int = 0) -> GatewayCore:
    reg = StaticRegistry(
        [DeviceInfo(org=fx.ORG, device=d, pubkey_hex=fx.pubhex(k)) for d, k in DEV.items()]
    )
    pipe = AdmissionPipeline(org=fx.ORG, registry=CachedRegistry(reg), replay=ReplayGuard())
    core = GatewayCore(
        org=fx.ORG,
        group=fx.ORG,
        signing_key=GW,
        server_key=SERVER.verify_key,
        pipeline=pipe,
        journal=journal,
        metrics=MetricsRegistry(prefix="splitfed_gateway_"),
        limiter=LogLimiter(clock=lambda: 0.0),
        hasher=weights_digest,
        prior_spend=lambda s, d: 0.0,
        start_seq=start_seq,
    )
    core.set_policy(fx.policy())
    for d in DEV:
        core.on_device_state(
            topics.state(fx.ORG, d),
            DeviceState(org=fx.ORG, device=d, online=True, bd_seq=1).to_json(),
        )
    return core


def _cmd(kind: str, seq: int, round_no: int = 0) -> bytes:
    cmd = Command(session=fx.SESSION, round=round_no, device=None, kind=kind, seq=seq)  # type: ignore[arg-type]
    return seal(cmd, signing_key=SERVER, kid="server")


def _pubs(actions: list[object], topic: str) -> list[Publish]:
    return [a for a in actions if isinstance(a, Publish) and a.topic == topic]


def test_round_trip_forward_relay_aggregate_record() -> None:
    core = _core(InMemoryJournal())
    acts = core.on_central_down(_cmd("start_round", 1))
    assert len(_pubs(acts, topics.down(fx.ORG, "d1"))) == 1
    assert json.loads(_pubs(acts, topics.events(fx.ORG))[0].payload)["event"] == "round_started"
    data = fx.activation("d1", 1, key=DEV["d1"])
    fwd = _pubs(core.on_device_up(fx.up("d1"), data), topics.central_up(fx.ORG))
    assert len(fwd) == 1
    endo = open_endorsement(fwd[0].payload, gateway_key=GW.verify_key, org=fx.ORG)
    assert endo.envelope == data  # byte for byte: the gateway cannot alter it
    assert core.on_device_up(fx.up("d1"), data) == []  # QoS1 redelivery
    assert core.metrics.value("duplicates") == 1
    # a gradient signed by the server is relayed unchanged
    g = GradientBatch(
        session=fx.SESSION,
        round=0,
        step=1,
        device="d1",
        seq=1,
        grad=np.zeros((8, *fx.ACT_SHAPE), np.float32),
        loss=1.0,
    )
    gb = seal(g, signing_key=SERVER, kid="server")
    assert _pubs(core.on_central_down(gb), topics.down(fx.ORG, "d1"))[0].payload == gb
    # a forged gradient (not the server's key) is dropped and counted
    forged = seal(g, signing_key=DEV["d2"], kid="server")
    assert core.on_central_down(forged) == []
    assert core.metrics.value("server_rejected", {"reason": "BadSignature"}) == 1
    core.on_device_up(fx.up("d2"), fx.activation("d2", 1, key=DEV["d2"], batch=4))
    core.on_device_up(fx.up("d1"), fx.weights("d1", 2, key=DEV["d1"], value=1.0, num_samples=8))
    core.on_device_up(fx.up("d2"), fx.weights("d2", 2, key=DEV["d2"], value=4.0, num_samples=4))
    out = core.on_central_down(_cmd("stop_round", 2))
    rec = next(a for a in out if isinstance(a, SubmitRecord)).body
    assert rec["envelope_count"] == 2 and rec["devices"]["d2"]["samples"] == 4
    up = _pubs(out, topics.central_up(fx.ORG))[0]
    _, agg = unseal(up.payload, verify_key=GW.verify_key, expected_kid=gateway_kid(fx.ORG))
    assert isinstance(agg, ClientWeights) and agg.num_samples == 12
    np.testing.assert_allclose(agg.weights[0], np.full((3, 4), 2.0))
    assert rec["aggregate_sha256"] == weights_digest(agg.weights)
    assert core.on_central_down(_cmd("stop_round", 3)) != []  # idempotent resubmission
    text = core.metrics.render()
    assert 'splitfed_gateway_accepted_total{type="activations"} 2' in text  # d1 and d2
    assert 'splitfed_device_epsilon_spent{device="d1",org=' in text


def test_restart_mid_round_does_not_double_count(tmp_path: Path) -> None:
    j = SqliteJournal(tmp_path / "rounds.db")
    core = _core(j, start_seq=100)
    core.on_central_down(_cmd("start_round", 1))
    msgs = [fx.activation("d1", s, key=DEV["d1"]) for s in (1, 2)]
    for m in msgs:
        core.on_device_up(fx.up("d1"), m)
    j.close()
    j2 = SqliteJournal(tmp_path / "rounds.db")
    core2 = _core(j2, start_seq=200)
    core2.on_central_down(_cmd("start_round", 1))  # the server re-sends the open round
    for m in msgs:  # the broker redelivers the unacknowledged ones
        assert core2.on_device_up(fx.up("d1"), m) == []
    core2.on_device_up(fx.up("d1"), fx.activation("d1", 3, key=DEV["d1"]))
    rec = next(
        a for a in core2.on_central_down(_cmd("stop_round", 2)) if isinstance(a, SubmitRecord)
    ).body
    assert rec["envelope_count"] == 3 and rec["devices"]["d1"]["samples"] == 24
    j2.close()


def test_rejections_counted_by_reason_and_device() -> None:
    core = _core(InMemoryJournal())
    core.on_central_down(_cmd("start_round", 1))
    rogue = nacl.signing.SigningKey(b"\x55" * 32)
    for s in range(3):
        core.on_device_up(fx.up("d1"), fx.activation("d1", s + 1, key=rogue))
    core.on_device_up(fx.up("d1"), fx.activation("d1", 9, key=DEV["d1"], noise=0.1))
    assert core.metrics.value("rejected", {"reason": "bad_signature"}) == 3
    assert core.metrics.value("rejected", {"reason": "dp_below_policy"}) == 1


def test_new_round_abandons_the_open_one() -> None:
    core = _core(InMemoryJournal())
    core.on_central_down(_cmd("start_round", 1, round_no=0))
    out = core.on_central_down(_cmd("start_round", 2, round_no=1))
    events = [json.loads(p.payload)["event"] for p in _pubs(out, topics.events(fx.ORG))]
    assert events == ["round_abandoned", "round_started"]
    assert core.metrics.value("rounds", {"outcome": "abandoned"}) == 1
