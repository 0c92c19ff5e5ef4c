"""Transcript tests: what a device sends about one record is charged to that record.

The device's own code path (``RecordStore`` batches, ``ClientTrainer`` on the
real LiteRT client half, ``Accountant`` with its audit log) runs twice on two
datasets that differ in ONE record, with every random choice fixed by a test
seed (batch order, Gaussian noise, randomized response). A deterministic
stand-in server answers each batch with the gradient of a fixed linear head,
so its answers are a function of what it received (post-processing).

What must hold, per privacy mode (docs/privacy.md has the proofs):

* ``sl-frozen``: every message that differs between the two runs is charged
  to the changed record; the client half never changes and is never sent.
* ``sl-dpsgd``: the first message that differs is charged to the changed
  record, the client half's weights first differ right after a DP-SGD step
  charged to it, and every later difference comes after such a step (it is
  post-processing of an accounted release).
* The old plain-SGD client half fails that rule (a weights change that no
  accounted release of the record explains): shown here so the test is
  known to catch it.

Then the device's reported epsilon is recomputed independently from the
audit log with Google's ``dp_accounting`` PLD accountant.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest

from agent.config import PrivacySection
from agent.privacy.accountant import Accountant
from agent.records import RecordStore
from agent.trainer import ClientTrainer
from models.manifest import list_artifacts
from models.runtime import ClientRuntime

CHANGED = 3  # the record id that differs between the two datasets
N_RECORDS, BATCH, STEPS = 12, 4, 9  # 3 epochs over 12 records, batches of 4


@dataclass
class Message:
    kind: str                      # "rows" or "weights"
    arrays: tuple[np.ndarray, ...]
    charged: frozenset[int]        # record ids its release was charged to (rows)


@dataclass
class Transcript:
    messages: list[Message] = field(default_factory=list)
    weights_after: list[tuple[np.ndarray, ...]] = field(default_factory=list)
    dpsgd_batches: list[frozenset[int] | None] = field(default_factory=list)
    epsilon: float = 0.0
    log: list[dict[str, object]] = field(default_factory=list)


def _runtime() -> ClientRuntime:
    m = next(m for m in list_artifacts() if m.model_id == "mlp_dp" and m.cut == 2)
    return ClientRuntime.from_manifest(m)


def _dataset(rt: ClientRuntime, *, changed: bool) -> list[tuple[np.ndarray, int]]:
    c, length = rt.manifest.input_shape
    rng = np.random.default_rng(1234)
    data = [(rng.normal(size=(c, length)).astype(np.float32),
             int(rng.integers(rt.manifest.num_classes))) for _ in range(N_RECORDS)]
    if changed:
        other = np.random.default_rng(99)
        data[CHANGED] = (other.normal(size=(c, length)).astype(np.float32) * 3.0,
                         (data[CHANGED][1] + 1) % rt.manifest.num_classes)
    return data


def _server_gradient(rt: ClientRuntime) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
    d = int(np.prod(rt.manifest.activation_shape))
    k = rt.manifest.num_classes
    w = np.random.default_rng(5).normal(size=(d, k)) * 0.5

    def grad(acts: np.ndarray, labels: np.ndarray) -> np.ndarray:
        a = acts.reshape(len(acts), -1).astype(np.float64)
        z = a @ w
        p = np.exp(z - z.max(axis=1, keepdims=True))
        p /= p.sum(axis=1, keepdims=True)
        p[np.arange(len(labels)), labels] -= 1.0
        return (p @ w.T / len(labels)).reshape(acts.shape).astype(np.float32)

    return grad


def _run(tmp: Path, privacy: PrivacySection, *, changed: bool,
         plain_sgd: bool = False) -> Transcript:
    rt = _runtime()
    trainer = ClientTrainer(rt, privacy, rng=np.random.default_rng(7), wire_dtype="float32")
    records = RecordStore(capacity=64, rng=np.random.default_rng(11))
    for rid, (x, y) in enumerate(_dataset(rt, changed=changed)):
        records.add(rid, x, y)
    tmp.mkdir(parents=True, exist_ok=True)
    acc = Accountant(epsilon_budget=1e6, delta=1e-5, state_path=tmp / "privacy.json",
                     adjacency=privacy.adjacency)
    server = _server_gradient(rt)
    t = Transcript()
    for _ in range(STEPS):
        batch = records.next_batch(BATCH)
        assert batch is not None
        prep = trainer.prepare(batch)
        acc.spend(prep.events)
        assert prep.labels is not None
        t.messages.append(Message(kind="rows", arrays=(prep.activations, prep.labels),
                                  charged=frozenset(prep.ids)))
        grad = server(prep.activations, prep.labels)
        steps: list[frozenset[int] | None] = []

        def charge(evs: Sequence[object], steps: list[frozenset[int] | None] = steps) -> None:
            acc.spend(evs)  # type: ignore[arg-type]
            steps.append(frozenset(int(r) for ev in evs for r in (ev.records or ())))  # type: ignore[attr-defined]

        if plain_sgd:  # what the removed "unprotected" mode did: nothing charged
            rt.backward(prep.x, grad, lr=0.5)
        else:
            trainer.apply_gradient(prep.x, grad, ids=prep.ids, lr=0.5, charge=charge)
        t.dpsgd_batches.append(steps[0] if steps else None)
        t.weights_after.append(tuple(w.copy() for w in rt.get_weights()))
    if trainer.uploads_weights or plain_sgd:
        t.messages.append(Message(kind="weights", arrays=tuple(rt.get_weights()),
                                  charged=frozenset()))
    t.epsilon = acc.epsilon
    t.log = [json.loads(line) for line in acc.events_path.read_text().splitlines()]
    acc.close()
    return t


def _differs(a: Message, b: Message) -> bool:
    return a.kind != b.kind or any(not np.array_equal(x, y)
                                   for x, y in zip(a.arrays, b.arrays, strict=True))


def _first_weight_divergence(a: Transcript, b: Transcript) -> int | None:
    for i, (wa, wb) in enumerate(zip(a.weights_after, b.weights_after, strict=True)):
        if any(not np.array_equal(x, y) for x, y in zip(wa, wb, strict=True)):
            return i
    return None


def _privacy(mode: str, **kw: object) -> PrivacySection:
    return PrivacySection(epsilon_budget=1e6, mode=mode, noise_multiplier=2.0,  # type: ignore[arg-type]
                          label_epsilon=1.0, dp_sgd_noise_multiplier=2.0, **kw)  # type: ignore[arg-type]


def test_sl_frozen_every_differing_message_is_charged_to_the_changed_record(
        tmp_path: Path) -> None:
    p = _privacy("sl-frozen")
    a, b = _run(tmp_path / "a", p, changed=False), _run(tmp_path / "b", p, changed=True)
    assert len(a.messages) == len(b.messages) == STEPS  # rows only: nothing uploaded
    differing = [i for i, (ma, mb) in enumerate(zip(a.messages, b.messages, strict=True))
                 if _differs(ma, mb)]
    assert differing, "the changed record must show somewhere (else the test proves nothing)"
    for i in differing:
        assert CHANGED in a.messages[i].charged, f"message {i} differs but is not charged"
    # and every message charged to it differs (it really is in them)
    assert {i for i, m in enumerate(a.messages) if CHANGED in m.charged} == set(differing)
    assert _first_weight_divergence(a, b) is None
    assert a.epsilon == b.epsilon  # charges do not depend on the data


def test_sl_dpsgd_divergence_starts_at_a_step_charged_to_the_changed_record(
        tmp_path: Path) -> None:
    p = _privacy("sl-dpsgd")
    a, b = _run(tmp_path / "a", p, changed=False), _run(tmp_path / "b", p, changed=True)
    assert a.messages[-1].kind == "weights"
    step = _first_weight_divergence(a, b)
    assert step is not None
    batch = a.dpsgd_batches[step]
    assert batch is not None and CHANGED in batch  # the step that diverged was charged to it
    for i, (ma, mb) in enumerate(zip(a.messages, b.messages, strict=True)):
        if not _differs(ma, mb):
            continue
        # before the weights diverged only messages charged to the record may differ;
        # afterwards everything is post-processing of an accounted DP-SGD release
        assert CHANGED in ma.charged or (ma.kind == "rows" and i > step) or ma.kind == "weights"
    first = next(i for i, (ma, mb) in enumerate(zip(a.messages, b.messages, strict=True))
                 if _differs(ma, mb))
    assert CHANGED in a.messages[first].charged


def test_plain_sgd_client_half_is_caught_by_the_same_rule(tmp_path: Path) -> None:
    """The removed "unprotected" mode: weights diverge at a step nothing charged."""
    p = _privacy("sl-frozen")
    a = _run(tmp_path / "a", p, changed=False, plain_sgd=True)
    b = _run(tmp_path / "b", p, changed=True, plain_sgd=True)
    step = _first_weight_divergence(a, b)
    assert step is not None
    assert a.dpsgd_batches[step] is None  # no accounted release explains the change


def _independent_epsilon(log: list[dict[str, object]], *, delta: float) -> float:
    """Recompute the per-record epsilon from the audit log with dp_accounting only."""
    from dp_accounting import dp_event
    from dp_accounting.pld import pld_privacy_accountant
    from dp_accounting.privacy_accountant import NeighboringRelation

    gaussians: dict[int, list[float]] = {}
    labels: dict[int, float] = {}
    for line in log:
        for ev in line["events"]:  # type: ignore[attr-defined]
            ids = [int(r) for r in ev["records"]]
            for r in ids:
                if ev["kind"] in ("gaussian", "dp_sgd"):
                    gaussians.setdefault(r, []).extend([ev["noise_multiplier"]] * ev["count"])
                elif ev["kind"] == "label":
                    labels[r] = labels.get(r, 0.0) + ev["epsilon"]
                else:
                    raise AssertionError(f"unexpected event kind {ev['kind']}")
    worst_g = 0.0
    for zs in gaussians.values():
        acc = pld_privacy_accountant.PLDAccountant(
            neighboring_relation=NeighboringRelation.REPLACE_ONE)
        acc.compose(dp_event.ComposedDpEvent([dp_event.GaussianDpEvent(z) for z in zs]))
        worst_g = max(worst_g, acc.get_epsilon(delta))
    return worst_g + max(labels.values(), default=0.0)


@pytest.mark.parametrize("mode", ["sl-frozen", "sl-dpsgd"])
def test_reported_epsilon_equals_an_independent_recomputation(tmp_path: Path,
                                                              mode: str) -> None:
    t = _run(tmp_path, _privacy(mode), changed=False)
    assert len(t.log) == STEPS * (2 if mode == "sl-dpsgd" else 1)
    ref = _independent_epsilon(t.log, delta=1e-5)
    # ours is the exact analytic Gaussian; PLD's pessimistic discretisation is a hair above
    assert t.epsilon == pytest.approx(ref, rel=2e-3)
    assert t.epsilon <= ref * (1 + 1e-9)
    assert [line["release"] for line in t.log] == list(range(1, len(t.log) + 1))
