from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import nacl.signing
import numpy as np

from gateway.core import GatewayCore, SubmitRecord
from gateway.journal import SqliteJournal
from gateway.ratelimit import LogLimiter
from gateway.rounds import InMemoryJournal, RoundJournal
from gateway.verify import AdmissionPipeline
from protocol import topics
from protocol.effects import Publish
from protocol.endorse import gateway_kid, open_endorsement
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
from service.metrics import MetricsRegistry
from service.registry import CachedRegistry, DeviceInfo, StaticRegistry

from . import _fixtures as fx

DEV = {d: nacl.signing.SigningKey(bytes([i + 7]) * 32) for i, d in enumerate(["d1", "d2"])}
GW = nacl.signing.SigningKey(b"\x41" * 32)
SERVER = nacl.signing.SigningKey(b"\x42" * 32)


def _core(
    journal: RoundJournal, start_seq: int = 0, counter_store: SqliteJournal | None = None
) -> GatewayCore:
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
        counter_store=counter_store,
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


def _pubs(actions: Sequence[object], topic: str) -> list[Publish]:
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
    core.on_central_down(_grad("d2", 1, rows=4))  # counted once the server trained it
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


def _grad(device: str, seq: int, rows: int = 8) -> bytes:
    g = GradientBatch(
        session=fx.SESSION,
        round=0,
        step=seq,
        device=device,
        seq=seq,
        grad=np.zeros((rows, *fx.ACT_SHAPE), np.float32),
        loss=1.0,
    )
    return seal(g, signing_key=SERVER, kid="server")


def _forwarded_envelopes(actions: Sequence[object]) -> list[bytes]:
    return [
        open_endorsement(p.payload, gateway_key=GW.verify_key, org=fx.ORG).envelope
        for p in _pubs(actions, topics.central_up(fx.ORG))
    ]


def _ack_forwards(core: GatewayCore, actions: Sequence[object]) -> None:
    for p in _pubs(actions, topics.central_up(fx.ORG)):
        assert p.forward_of is not None
        core.on_forwarded(p.forward_of)


def test_restart_mid_round_does_not_double_count(tmp_path: Path) -> None:
    j = SqliteJournal(tmp_path / "rounds.db")
    core = _core(j, start_seq=100)
    core.on_central_down(_cmd("start_round", 1))
    msgs = [fx.activation("d1", s, key=DEV["d1"]) for s in (1, 2)]
    for m in msgs:
        _ack_forwards(core, core.on_device_up(fx.up("d1"), m))
    j.close()
    j2 = SqliteJournal(tmp_path / "rounds.db")
    core2 = _core(j2, start_seq=200)
    # the server re-sends the open round; both forwards were acknowledged: none again
    assert _forwarded_envelopes(core2.on_central_down(_cmd("start_round", 1))) == []
    for m in msgs:  # the broker redelivers the unacknowledged ones
        assert core2.on_device_up(fx.up("d1"), m) == []
    core2.on_device_up(fx.up("d1"), fx.activation("d1", 3, key=DEV["d1"]))
    for seq in (1, 2, 3):
        core2.on_central_down(_grad("d1", seq))
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


def test_killed_between_journal_and_forward_forwards_once_after_restart(tmp_path: Path) -> None:
    """Issue 11: a journaled batch whose forward never left the gateway was lost."""
    path = tmp_path / "rounds.db"
    j = SqliteJournal(path)
    core = _core(j, start_seq=100)
    core.on_central_down(_cmd("start_round", 1))
    msgs = [fx.activation("d1", s, key=DEV["d1"]) for s in (1, 2, 3, 4)]
    for seq, m in enumerate(msgs[:3], start=1):
        _ack_forwards(core, core.on_device_up(fx.up("d1"), m))
        core.on_central_down(_grad("d1", seq))
    lost = core.on_device_up(fx.up("d1"), msgs[3])  # journaled ...
    assert _forwarded_envelopes(lost) == [msgs[3]]  # ... the actions die with the process
    j.close()

    j2 = SqliteJournal(path)
    core2 = _core(j2, start_seq=200)
    resumed = core2.resume(fx.SESSION, 0)
    assert _forwarded_envelopes(resumed) == [msgs[3]]  # forwarded again, exactly once
    assert core2.on_device_up(fx.up("d1"), msgs[3]) == []  # the redelivery is a duplicate
    _ack_forwards(core2, resumed)
    assert core2.metrics.value("reforwarded") == 1
    j2.close()

    j3 = SqliteJournal(path)  # another restart: the acknowledged forward is not repeated
    core3 = _core(j3, start_seq=300)
    assert _forwarded_envelopes(core3.resume(fx.SESSION, 0)) == []
    assert _forwarded_envelopes(core3.on_central_down(_cmd("start_round", 1))) == []
    # the record counts what the server trained: 3 batches so far, not the 4 journaled
    assert core3.round is not None and core3.round.samples("d1") == 24
    for _ in range(2):  # the gradient for batch 4 arrives (a redelivery of it counts once)
        assert len(_pubs(core3.on_central_down(_grad("d1", 4)), topics.down(fx.ORG, "d1"))) == 1
    rec = next(
        a for a in core3.on_central_down(_cmd("stop_round", 2)) if isinstance(a, SubmitRecord)
    ).body
    assert rec["envelope_count"] == 4 and rec["devices"]["d1"]["samples"] == 32
    j3.close()


def test_untrained_batch_is_a_leaf_but_not_a_sample() -> None:
    core = _core(InMemoryJournal())
    core.on_central_down(_cmd("start_round", 1))
    for seq in (1, 2, 3, 4):
        core.on_device_up(fx.up("d1"), fx.activation("d1", seq, key=DEV["d1"]))
    for seq in (1, 2, 3):  # the server never answered batch 4 (the device timed it out)
        core.on_central_down(_grad("d1", seq))
    rec = next(
        a for a in core.on_central_down(_cmd("stop_round", 2)) if isinstance(a, SubmitRecord)
    ).body
    assert rec["envelope_count"] == 4 and rec["devices"]["d1"]["samples"] == 24


def test_rejection_counts_survive_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "rounds.db"
    j = SqliteJournal(path)
    core = _core(j, counter_store=j)
    core.on_central_down(_cmd("start_round", 1))
    bad = fx.activation("d1", 1, key=DEV["d2"])  # d2's key claiming d1: bad signature
    for _ in range(3):
        core.on_device_up(fx.up("d1"), bad)
    core.on_central_down(b"\x00" * 10)
    core.tick()  # persists
    labels = {"reason": "bad_signature"}  # no per-device label: attacker-chosen ids
    assert core.metrics.value("rejected", labels) == 3
    core.on_device_up(fx.up("d1"), bad)  # pending, flushed at close
    core.flush_counters()
    j.close()
    j2 = SqliteJournal(path)
    core2 = _core(j2, counter_store=j2)
    assert core2.metrics.value("rejected", labels) == 4
    assert core2.metrics.value("server_rejected", {"reason": "MalformedMessage"}) == 1
    core2.on_device_up(fx.up("d1"), bad)
    core2.flush_counters()
    j2.close()
    j3 = SqliteJournal(path)
    assert _core(j3, counter_store=j3).metrics.value("rejected", labels) == 5
    j3.close()
