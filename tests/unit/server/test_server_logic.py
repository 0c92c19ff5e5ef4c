from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pytest

from models.fedavg import AggregationError
from protocol.errors import ConfigError
from protocol.vote import vote_decision
from server.aggregate import GroupAggregate, aggregate_groups
from server.errors import UnknownGroupError
from server.proposals import (
    Proposal,
    ProposalStatus,
    next_version,
    proposal_status,
)
from server.round_policy import CloseReason, RoundPolicy, RoundTracker
from server.sfl import SflMode, SplitTrainer


class FakeHalf:
    """Linear softmax server half in numpy: enough to see replicas diverge and merge."""

    def __init__(self, dim: int = 4, classes: int = 3) -> None:
        self.w = np.zeros((dim, classes), np.float32)

    def train(
        self, activations: np.ndarray, labels: np.ndarray, *, lr: float
    ) -> tuple[float, np.ndarray]:
        z = activations @ self.w
        p = np.exp(z - z.max(1, keepdims=True))
        p /= p.sum(1, keepdims=True)
        y = np.eye(self.w.shape[1], dtype=np.float32)[labels]
        g = (p - y) / len(labels)
        grad_a = g @ self.w.T
        self.w -= lr * activations.T @ g
        return float(-np.mean(np.log(p[np.arange(len(labels)), labels] + 1e-9))), grad_a

    def predict(self, activations: np.ndarray) -> np.ndarray:
        z = activations @ self.w
        return np.exp(z) / np.exp(z).sum(1, keepdims=True)

    def get_weights(self) -> tuple[np.ndarray, ...]:
        return (self.w.copy(),)

    def set_weights(self, ws: Sequence[np.ndarray]) -> None:
        self.w = np.array(ws[0], np.float32)


def _batch(seed: int, n: int = 8) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, 4)).astype(np.float32), rng.integers(0, 3, n)


def test_sflv1_replicas_diverge_then_average_by_samples() -> None:
    t = SplitTrainer(mode=SflMode.SFLV1, groups=["g1", "g2"], make_half=FakeHalf, lr=0.5)
    a1, y1 = _batch(1, 8)
    a2, y2 = _batch(2, 24)
    t.train("g1", a1, y1)
    t.train("g2", a2, y2)
    w1 = t._halves["g1"].get_weights()[0]
    w2 = t._halves["g2"].get_weights()[0]
    assert not np.allclose(w1, w2)
    out = t.end_round()[0]
    np.testing.assert_allclose(out, (8 * w1 + 24 * w2) / 32, rtol=1e-5)
    np.testing.assert_allclose(t._halves["g1"].get_weights()[0], out)
    with pytest.raises(UnknownGroupError):
        t.train("g3", a1, y1)


def test_sflv2_one_half_in_arrival_order() -> None:
    t = SplitTrainer(mode=SflMode.SFLV2, groups=["g1", "g2"], make_half=FakeHalf, lr=0.5)
    ref = FakeHalf()
    for g, seed in [("g1", 1), ("g2", 2), ("g1", 3)]:
        a, y = _batch(seed)
        loss, grad = t.train(g, a, y)
        loss_ref, grad_ref = ref.train(a, y, lr=0.5)
        assert loss == pytest.approx(loss_ref)
        np.testing.assert_allclose(grad, grad_ref)
    np.testing.assert_allclose(t.end_round()[0], ref.w)


def test_sfl_training_reduces_loss() -> None:
    t = SplitTrainer(mode=SflMode.SFLV1, groups=["g1", "g2"], make_half=FakeHalf, lr=0.5)
    rng = np.random.default_rng(0)
    centers = rng.normal(size=(3, 4)).astype(np.float32) * 3
    losses = []
    for _ in range(5):
        for g in ("g1", "g2"):
            y = rng.integers(0, 3, 16)
            a = centers[y] + rng.normal(size=(16, 4)).astype(np.float32)
            t.train(g, a, y)
        losses.append(t.mean_loss())
        t.end_round()
    assert losses[-1] < losses[0] * 0.5  # type: ignore[operator]


def test_cross_group_aggregate_per_cut_refuses_bad_group() -> None:
    shapes = {1: [(2,)], 2: [(3,)]}
    aggs = [
        GroupAggregate(
            group="o1", cut=1, weights=(np.array([1.0, 1.0], np.float32),), num_samples=10
        ),
        GroupAggregate(
            group="o2", cut=1, weights=(np.array([3.0, 3.0], np.float32),), num_samples=30
        ),
        GroupAggregate(
            group="o3", cut=1, weights=(np.array([np.nan, 0], np.float32),), num_samples=5
        ),
        GroupAggregate(group="o4", cut=2, weights=(np.zeros(3, np.float32),), num_samples=5),
    ]
    out = aggregate_groups(aggs, shapes)
    np.testing.assert_allclose(out[1].weights[0], [2.5, 2.5])  # type: ignore[index]
    assert out[1].groups == ("o1", "o2") and "o3" in out[1].refused
    assert out[2].groups == ("o4",)
    with pytest.raises(AggregationError):
        aggregate_groups(
            [GroupAggregate(group="x", cut=9, weights=(np.zeros(1),), num_samples=1)], shapes
        )


def test_round_closes_on_quorum_with_late_joiner_and_dropout() -> None:
    pol = RoundPolicy(min_devices=2, min_fraction=0.6, deadline_s=60)
    t = RoundTracker(policy=pol, started_at=0.0, expected=["a", "b", "c"])
    t.finished("a")
    assert not t.decide(1.0).close
    t.joined("d")  # late joiner
    t.finished("d")
    assert not t.decide(2.0).close  # 2 of 4 < 60 %
    t.finished("b")
    d = t.decide(3.0)
    assert d.close and d.commit and d.reason is CloseReason.QUORUM
    assert t.late_joiners == {"d"}
    t.finished("c")  # after close: ignored
    assert t.finishers == {"a", "b", "d"}


def test_round_deadline_commits_or_abandons() -> None:
    pol = RoundPolicy(min_devices=3, deadline_s=10, min_devices_to_commit=2)
    t = RoundTracker(policy=pol, started_at=0.0, expected=["a", "b", "c", "d"])
    t.finished("a")
    assert not t.decide(9.9).close
    d = t.decide(10.0)
    assert d.close and not d.commit and d.reason is CloseReason.DEADLINE
    t2 = RoundTracker(policy=pol, started_at=0.0, expected=["a", "b"])
    t2.finished("a")
    t2.finished("b")
    d2 = t2.decide(11.0)
    assert d2.commit and d2.reason is CloseReason.DEADLINE
    t3 = RoundTracker(policy=RoundPolicy(min_devices=1), started_at=0.0, expected=["a"])
    t3.finished("a")
    assert t3.decide(0.1).reason is CloseReason.ALL_DONE
    with pytest.raises(ConfigError):
        RoundPolicy(min_fraction=0.0, deadline_s=-1)


def test_proposal_versioning_and_status() -> None:
    assert next_version(latest_finalised=None, last_proposed=None) == 1
    assert next_version(latest_finalised=3, last_proposed=5) == 6
    h = "ab" * 32
    p = Proposal(
        session_id="s",
        version=2,
        round=1,
        weights_sha256=h,
        client_sha256=h,
        server_sha256=h,
        metrics={"accuracy": 0.8},
    )
    assert p.body()["version"] == 2 and p.body()["metrics"] == {"accuracy": 0.8}
    with pytest.raises(ConfigError):
        Proposal(
            session_id="s", version=0, round=1, weights_sha256="x", client_sha256=h, server_sha256=h
        )
    rec: dict[str, object] = {"finalised": False, "votes": {}}
    assert proposal_status(None, vote_quorum=2, validators=3) is ProposalStatus.PENDING
    assert proposal_status(rec, vote_quorum=2, validators=3) is ProposalStatus.PENDING
    rec["votes"] = {"o1": {"accept": False}, "o2": {"accept": False}}
    assert proposal_status(rec, vote_quorum=2, validators=3) is ProposalStatus.REJECTED
    rec["votes"] = {"o1": {"accept": True}, "o2": {"accept": True}}
    assert proposal_status(rec, vote_quorum=2, validators=3) is ProposalStatus.FINALISABLE
    rec["finalised"] = True
    assert proposal_status(rec, vote_quorum=2, validators=3) is ProposalStatus.FINALISED


def test_vote_rejects_corrupted_or_worse_models() -> None:
    assert vote_decision(candidate_accuracy=0.7, baseline_accuracy=None)
    assert vote_decision(candidate_accuracy=0.7, baseline_accuracy=0.72, max_drop=0.05)
    assert not vote_decision(candidate_accuracy=0.2, baseline_accuracy=0.72, max_drop=0.05)
    assert not vote_decision(candidate_accuracy=float("nan"), baseline_accuracy=None)
