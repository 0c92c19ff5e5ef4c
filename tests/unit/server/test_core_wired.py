"""Two gateways and the server wired together in memory (sans-I/O, h11 style)."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import nacl.signing
import numpy as np
import pytest

from gateway.core import Announce, GatewayCore, SubmitRecord
from gateway.policy import ModelSpec, SessionPolicy
from gateway.ratelimit import LogLimiter
from gateway.rounds import InMemoryJournal
from gateway.verify import AdmissionPipeline
from protocol import topics
from protocol.effects import Publish
from protocol.keys import public_key_hex
from protocol.messages import (
    ActivationBatch,
    ClientWeights,
    Command,
    DeviceState,
    DpParams,
    GradientBatch,
    ModelAnnouncement,
    Prediction,
    seal,
    unseal,
    weights_digest,
)
from protocol.replay import ReplayGuard
from server.core import MAX_EMPTY_EXTENSIONS, Phase, ServerCore, SessionPlan, SubmitTx
from server.proposals import ProposalStatus
from server.round_policy import RoundPolicy
from server.sfl import SflMode, SplitTrainer
from service.metrics import MetricsRegistry
from service.registry import CachedRegistry, DeviceInfo, StaticRegistry

from .test_server_logic import FakeHalf

ORGS = ("o1", "o2")
CLIENT = hashlib.sha256(b"c").hexdigest()
SERVER_SHA = hashlib.sha256(b"s").hexdigest()
W_SHAPES = ((4,),)
RNG = np.random.default_rng(0)
CENTERS = RNG.normal(size=(3, 4)).astype(np.float32) * 2


def _keys(n: str) -> nacl.signing.SigningKey:
    return nacl.signing.SigningKey(hashlib.sha256(n.encode()).digest())


def _sample(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    y = rng.integers(0, 3, n)
    return CENTERS[y] + rng.normal(size=(n, 4)).astype(np.float32), y


def _evaluator(client: Sequence[np.ndarray], server: Sequence[np.ndarray]) -> float:
    half = FakeHalf()
    half.set_weights(server)
    a, y = _sample(300, np.random.default_rng(99))
    return float(np.mean(np.argmax(half.predict(a + client[0]), 1) == y))


@pytest.mark.parametrize("mode", ["sl-dpsgd", "sl-frozen"])
def test_two_orgs_train_rounds_end_to_end_in_memory(mode: str) -> None:
    """sl-dpsgd: devices upload client halves, gateways average them. sl-frozen: nothing is
    uploaded (an upload is refused), a device's last batch finishes its round, and every
    proposal carries the unchanged client half."""
    frozen = mode == "sl-frozen"
    server_key = _keys("server")
    devices = {f"{o}-d{i}": o for o in ORGS for i in (1, 2)}
    dkeys = {d: _keys(d) for d in devices}
    reg = StaticRegistry(
        [
            DeviceInfo(org=o, device=d, pubkey_hex=public_key_hex(dkeys[d]))
            for d, o in devices.items()
        ]
    )
    policy = SessionPolicy(
        privacy_mode=mode,
        session="s",
        min_noise_multiplier=0.5,
        max_epsilon=50.0,
        models={
            CLIENT: ModelSpec(
                activation_shape=(4,), num_classes=3, max_batch=32, client_weight_shapes=W_SHAPES
            )
        },
    )
    gws: dict[str, GatewayCore] = {}
    for o in ORGS:
        gws[o] = GatewayCore(
            org=o,
            group=o,
            signing_key=_keys(f"{o}.gw"),
            server_key=server_key.verify_key,
            pipeline=AdmissionPipeline(org=o, registry=CachedRegistry(reg), replay=ReplayGuard()),
            journal=InMemoryJournal(),
            metrics=MetricsRegistry(),
            limiter=LogLimiter(clock=lambda: 0),
            hasher=weights_digest,
            prior_spend=lambda s, d: 0.0,
        )
        gws[o].set_policy(policy)
        for d, org in devices.items():
            if org == o:
                gws[o].on_device_state(
                    topics.state(o, d),
                    DeviceState(org=o, device=d, online=True, bd_seq=0).to_json(),
                )
    plan = SessionPlan(
        privacy_mode=mode,
        session="s",
        rounds=3,
        groups={o: o for o in ORGS},
        model_id="m",
        cut=1,
        client_sha256=CLIENT,
        server_sha256=SERVER_SHA,
        client_weight_shapes=W_SHAPES,
        lr=0.3,
        steps_per_round=6 if frozen else None,
    )
    server = ServerCore(
        plan=plan,
        signing_key=server_key,
        gateway_keys={o: _keys(f"{o}.gw").verify_key for o in ORGS},
        registry=CachedRegistry(reg),
        trainer=SplitTrainer(mode=SflMode.SFLV1, groups=ORGS, make_half=FakeHalf, lr=0.3),
        client_weights=(np.zeros(4, np.float32),),
        evaluator=_evaluator,
        round_policy=RoundPolicy(min_devices=4, deadline_s=100),
        metrics=MetricsRegistry(),
    )
    inbox: dict[str, list[bytes]] = {d: [] for d in devices}
    ledger: list[SubmitTx | SubmitRecord] = []
    retained: dict[str, bytes] = {}
    announced: list[ModelAnnouncement] = []
    seqs = dict.fromkeys(devices, 0)

    def route(actions: Sequence[object]) -> None:
        queue = list(actions)
        while queue:
            a = queue.pop(0)
            if isinstance(a, SubmitTx | SubmitRecord):
                ledger.append(a)
                continue
            if isinstance(a, Announce):
                announced.append(a.announcement)
                continue
            assert isinstance(a, Publish)
            t = topics.parse(a.topic)
            if t.kind == "central_up":
                queue += server.on_central_up(a.topic, a.payload)
            elif t.kind == "central_down":
                queue += gws[t.org].on_central_down(a.payload)
            elif t.kind in ("down", "predictions"):
                inbox[t.device].append(a.payload)  # type: ignore[index]
            elif t.kind == "model":
                retained[t.org] = a.payload

    def device_step(d: str, rnd: int, labels: bool = True) -> None:
        seqs[d] += 1
        x, y = _sample(16, np.random.default_rng(seqs[d] * 31 + sorted(devices).index(d)))
        msg = ActivationBatch(
            session="s",
            round=rnd,
            step=seqs[d],
            device=d,
            seq=seqs[d],
            model_hash=CLIENT,
            dp=DpParams(
                mode=mode,  # type: ignore[arg-type]
                clip_norm=1.0,
                noise_multiplier=1.0,
                label_mode="plain" if labels else "none",
                label_epsilon=None,
            ),
            activations=x,
            labels=y.astype(np.int64) if labels else None,
            epsilon_spent=0.1 * seqs[d],
        )
        o = devices[d]
        route(gws[o].on_device_up(topics.up(o, d), seal(msg, signing_key=dkeys[d], kid=d)))

    accs = []
    route(server.start_round(0, now=0.0))
    for rnd in range(3):
        assert server.phase is Phase.TRAINING and server.round == rnd
        for _ in range(6):
            for d in devices:
                device_step(d, rnd)
        for d in devices:  # every device got a server-signed gradient per batch
            grads = [unseal(b, verify_key=server_key.verify_key)[1] for b in inbox[d]]
            assert sum(isinstance(g, GradientBatch) for g in grads) >= 6
            inbox[d].clear()
            seqs[d] += 1
            cw = ClientWeights(
                session="s",
                round=rnd,
                device=d,
                seq=seqs[d],
                model_hash=CLIENT,
                num_samples=96,
                weights=(np.full(4, 0.01 * rnd, np.float32),),
                weights_dp="unprotected",
                epsilon_spent=0.1 * seqs[d],
            )
            o = devices[d]
            before = gws[o].metrics.value("rejected", {"reason": "dp_below_policy"})
            route(gws[o].on_device_up(topics.up(o, d), seal(cw, signing_key=dkeys[d], kid=d)))
            if frozen:  # the client half is never uploaded in sl-frozen: refused, counted
                after = gws[o].metrics.value("rejected", {"reason": "dp_below_policy"})
                assert after == before + 1
        route(server.tick(now=1.0))  # quorum of 4 finished -> stop_round -> gateways close
        records = [a for a in ledger if isinstance(a, SubmitRecord) and a.body["round"] == rnd]
        assert sorted(r.body["org"] for r in records) == ["o1", "o2"]
        assert all(r.body["envelope_count"] == 12 for r in records)
        route(server.tick(now=1.0))  # both aggregates in -> propose
        prop = [a for a in ledger if isinstance(a, SubmitTx) and a.kind == "model_propose"][-1]
        assert prop.body["version"] == rnd + 1 and prop.body["round"] == rnd
        if frozen:
            assert prop.body["weights_sha256"] == weights_digest((np.zeros(4, np.float32),))
        accs.append(prop.body["metrics"]["accuracy"])
        # the finalise tx is the app's proposal lifecycle's job (one submitter, one tx)
        assert server.on_proposal_status(ProposalStatus.FINALISABLE, now=1.0) == []
        route(server.on_proposal_status(ProposalStatus.FINALISED, now=2.0))
        assert server.version == rnd + 1
        # each gateway is handed the finalised client half to publish with its proof
        assert [a.version for a in announced[-2:]] == [rnd + 1, rnd + 1]
        assert announced[-1].weights_sha256 == prop.body["weights_sha256"]
        for d in devices:
            cmds = [unseal(b, verify_key=server_key.verify_key)[1] for b in inbox[d]]
            if rnd < 2:
                assert any(isinstance(c, Command) and c.kind == "start_round" for c in cmds)
            inbox[d].clear()
    assert server.phase is Phase.DONE
    assert accs[-1] > 0.6 and accs[-1] >= accs[0]
    # split inference: a window without labels gets probabilities on `predictions`
    device_step("o1-d1", 2, labels=False)
    pred = Prediction.from_json(inbox["o1-d1"][-1])
    assert pred.probabilities.shape == (16, 3)
    assert not retained or all(
        isinstance(unseal(v, verify_key=server_key.verify_key)[1], ModelAnnouncement)
        for v in retained.values()
    )


def test_rejected_proposal_keeps_previous_version() -> None:
    server_key = _keys("server")
    plan = SessionPlan(
        privacy_mode="sl-dpsgd",
        session="s",
        rounds=5,
        groups={"o1": "o1"},
        model_id="m",
        cut=1,
        client_sha256=CLIENT,
        server_sha256=SERVER_SHA,
        client_weight_shapes=W_SHAPES,
        collect_deadline_s=5,
    )
    trainer = SplitTrainer(mode=SflMode.SFLV2, groups=["o1"], make_half=FakeHalf, lr=0.3)
    server = ServerCore(
        plan=plan,
        signing_key=server_key,
        gateway_keys={"o1": _keys("g").verify_key},
        registry=CachedRegistry(StaticRegistry()),
        trainer=trainer,
        client_weights=(np.zeros(4, np.float32),),
        evaluator=lambda c, s: 0.5,
        round_policy=RoundPolicy(min_devices=1, deadline_s=10),
        metrics=MetricsRegistry(),
        version=3,
    )
    server.start_round(0, now=0.0)
    # no device finished: the deadline closes the round (after the empty-round extensions),
    # the collection deadline ends it
    t = 10.0
    while server.phase is Phase.TRAINING:
        assert server.tick(now=t)
        t += 10.0
    assert server.phase is Phase.COLLECTING
    out = server.tick(now=t + 6)  # nothing arrived: no aggregate -> next round, same version
    assert server.phase is Phase.TRAINING and server.round == 1 and server.version == 3
    assert not any(isinstance(a, SubmitTx) for a in out)


def test_quorum_rejection_reverts_to_the_finalised_halves() -> None:
    server_key = _keys("server")
    gw = _keys("o1.gw")
    plan = SessionPlan(
        privacy_mode="sl-dpsgd",
        session="s",
        rounds=5,
        groups={"o1": "o1"},
        model_id="m",
        cut=1,
        client_sha256=CLIENT,
        server_sha256=SERVER_SHA,
        client_weight_shapes=W_SHAPES,
    )
    trainer = SplitTrainer(mode=SflMode.SFLV1, groups=["o1"], make_half=FakeHalf, lr=0.3)
    start_client = (np.zeros(4, np.float32),)
    server = ServerCore(
        plan=plan,
        signing_key=server_key,
        gateway_keys={"o1": gw.verify_key},
        registry=CachedRegistry(StaticRegistry()),
        trainer=trainer,
        client_weights=start_client,
        evaluator=lambda c, s: 0.4,
        round_policy=RoundPolicy(min_devices=1, deadline_s=10),
        metrics=MetricsRegistry(),
        version=2,
    )
    server.start_round(0, now=0.0)
    a, y = _sample(16, np.random.default_rng(0))
    trainer.train("o1", a, y)  # straight into the trainer: the core counted no batch
    t = 10.0
    while server.phase is Phase.TRAINING:  # deadline (after empty-round extensions)
        server.tick(now=t)
        t += 10.0
    corrupted = ClientWeights(
        session="s",
        round=0,
        device="o1.gateway",
        seq=1,
        model_hash=CLIENT,
        num_samples=16,
        weights=(np.full(4, 1e6, np.float32),),
        weights_dp="unprotected",
        epsilon_spent=0.0,
    )
    assert (
        server.on_central_up(
            topics.central_up("o1"), seal(corrupted, signing_key=gw, kid="o1.gateway")
        )
        == []
    )
    out = server.tick(now=t + 1)
    prop = next(x for x in out if isinstance(x, SubmitTx) and x.kind == "model_propose")
    assert prop.body["version"] == 3
    assert server.on_proposal_status(ProposalStatus.PENDING, now=12.0) == []
    out = server.on_proposal_status(ProposalStatus.REJECTED, now=13.0)
    assert server.version == 2 and server.round == 1 and server.phase is Phase.TRAINING
    np.testing.assert_array_equal(server.client_weights[0], start_client[0])
    np.testing.assert_array_equal(trainer.weights()[0], FakeHalf().w)  # server half reverted
    assert not any(isinstance(x, SubmitTx) for x in out)  # nothing finalised
    # the next proposal gets a fresh version number, above the rejected one
    t = 30.0
    while server.phase is Phase.TRAINING:
        server.tick(now=t)
        t += 10.0
    server.on_central_up(
        topics.central_up("o1"),
        seal(
            ClientWeights(
                session="s",
                round=1,
                device="o1.gateway",
                seq=2,
                model_hash=CLIENT,
                num_samples=16,
                weights=(np.zeros(4, np.float32),),
                weights_dp="unprotected",
                epsilon_spent=0.0,
            ),
            signing_key=gw,
            kid="o1.gateway",
        ),
    )
    out = server.tick(now=t + 1)
    assert next(x for x in out if isinstance(x, SubmitTx)).body["version"] == 4


def _one_org_core(**kw: object) -> tuple[ServerCore, SplitTrainer]:
    plan = SessionPlan(
        privacy_mode="sl-dpsgd",
        session="s",
        rounds=5,
        groups={"o1": "o1"},
        model_id="m",
        cut=1,
        client_sha256=CLIENT,
        server_sha256=SERVER_SHA,
        client_weight_shapes=W_SHAPES,
        collect_deadline_s=5,
    )
    trainer = SplitTrainer(mode=SflMode.SFLV1, groups=["o1"], make_half=FakeHalf, lr=0.3)
    server = ServerCore(
        plan=plan,
        signing_key=_keys("server"),
        gateway_keys={"o1": _keys("o1.gw").verify_key},
        registry=CachedRegistry(StaticRegistry()),
        trainer=trainer,
        client_weights=(np.zeros(4, np.float32),),
        evaluator=lambda c, s: 0.5,
        round_policy=RoundPolicy(min_devices=1, deadline_s=10),
        metrics=MetricsRegistry(),
        **kw,  # type: ignore[arg-type]
    )
    return server, trainer


def _aggregate_round(server: ServerCore, rnd: int, seq: int) -> list[Publish | SubmitTx]:
    t = 100.0 * rnd + 10
    while server.phase is Phase.TRAINING:  # no batch: extended, then given up -> collecting
        server.tick(now=t)
        t += 10
    server.on_central_up(
        topics.central_up("o1"),
        seal(
            ClientWeights(
                session="s",
                round=rnd,
                device="o1.gateway",
                seq=seq,
                model_hash=CLIENT,
                num_samples=16,
                weights=(np.full(4, 0.5, np.float32),),
                weights_dp="unprotected",
                epsilon_spent=0.0,
            ),
            signing_key=_keys("o1.gw"),
            kid="o1.gateway",
        ),
    )
    return server.tick(now=t + 1)


def test_a_round_nobody_reached_is_extended_not_skipped() -> None:
    """Broker or ledger down for a whole round: the round number is not lost."""
    server, _ = _one_org_core()
    out = server.start_round(0, now=0.0)
    assert out  # start_round broadcast
    for k in range(MAX_EMPTY_EXTENSIONS):
        again = server.tick(now=10.0 * (k + 1))
        assert server.phase is Phase.TRAINING and server.round == 0
        cmds = [unseal(a.payload, verify_key=_keys("server").verify_key)[1] for a in again
                if isinstance(a, Publish)]
        assert any(isinstance(c, Command) and c.kind == "start_round" and c.round == 0
                   for c in cmds)
    server.tick(now=10.0 * (MAX_EMPTY_EXTENSIONS + 1))  # given up after the last extension
    assert server.phase is Phase.COLLECTING and server.round == 0


def test_versions_above_every_ledger_proposal() -> None:
    server, _ = _one_org_core(version=2, last_proposed=7)
    server.start_round(2, now=200.0)
    out = _aggregate_round(server, 2, 1)
    assert next(x for x in out if isinstance(x, SubmitTx)).body["version"] == 8
    server.note_proposed(11)  # another proposer's version seen on the ledger meanwhile
    server.on_proposal_status(ProposalStatus.EXPIRED, now=212.0)  # the deadline passed
    assert server.version == 2 and server.round == 3 and server.phase is Phase.TRAINING
    out = _aggregate_round(server, 3, 2)
    assert next(x for x in out if isinstance(x, SubmitTx)).body["version"] == 12


def test_restarted_server_adopts_its_open_proposal() -> None:
    from server.proposals import Proposal

    server, trainer = _one_org_core(version=1, last_proposed=2)
    client = (np.full(4, 0.25, np.float32),)
    half = tuple(np.full_like(w, 0.75) for w in FakeHalf().get_weights())
    p = Proposal(
        session_id="s",
        version=2,
        round=1,
        weights_sha256=weights_digest(client),
        client_sha256=CLIENT,
        server_sha256=SERVER_SHA,
        metrics={"accuracy": 0.5, "samples": 16.0},
    )
    out = server.adopt(p, client, half, now=0.0)
    assert server.phase is Phase.PROPOSED and server.round == 1 and server.proposal == p
    sent = [unseal(a.payload, verify_key=_keys("server").verify_key)[1] for a in out]
    assert [type(m).__name__ for m in sent] == ["ClientWeights", "ModelAnnouncement"]
    ann = sent[1]
    assert isinstance(ann, ModelAnnouncement) and ann.version == 2
    assert ann.weights_sha256 == weights_digest(client)
    assert not any(isinstance(a, SubmitTx) for a in out)  # on the ledger already: no propose
    server.on_proposal_status(ProposalStatus.FINALISED, now=1.0)
    assert server.version == 2 and server.round == 2 and server.phase is Phase.TRAINING
    v, fc, fs = server.finalised_halves()
    assert v == 2
    np.testing.assert_array_equal(fc[0], client[0])
    np.testing.assert_array_equal(fs[0], half[0])
    np.testing.assert_array_equal(trainer.weights()[0], half[0])
