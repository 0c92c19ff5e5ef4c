"""What leaves the device: clipped+noised activations and the events they cost (real LiteRT)."""

from __future__ import annotations

import numpy as np
import pytest

from agent.config import PrivacySection
from agent.privacy.events import DpSgdStep, GaussianRelease, LabelRelease
from agent.records import Batch
from agent.trainer import ClientTrainer
from models.clip import clip_rows
from models.manifest import list_artifacts
from models.runtime import ClientRuntime
from protocol.errors import BudgetExceeded


@pytest.fixture(scope="module")
def runtime() -> ClientRuntime:
    return ClientRuntime.from_manifest(list_artifacts()[0])


def _batch(rt: ClientRuntime, n: int = 8) -> Batch:
    c, length = rt.manifest.input_shape
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, c, length)).astype(np.float32)
    return Batch(ids=tuple(range(100, 100 + n)), x=x,
                 labels=np.arange(n, dtype=np.int64) % rt.manifest.num_classes)


def test_private_release_is_noised_and_charged_to_exactly_its_records(
        runtime: ClientRuntime) -> None:
    p = PrivacySection(epsilon_budget=8.0, clip_norm=1.0, noise_multiplier=2.0,
                       labels="public")
    tr = ClientTrainer(runtime, p, rng=np.random.default_rng(1), wire_dtype="float32")
    b = _batch(runtime)
    out = tr.prepare(b)
    rows = runtime.forward(out.x).reshape(len(b.ids), -1).astype(np.float64)
    clipped = clip_rows(rows, clip_norm=1.0)
    assert np.all(np.linalg.norm(clipped, axis=1) <= 1.0 + 1e-9)
    noise = out.activations.reshape(len(b.ids), -1) - clipped
    # N(0, (z*C)^2) = N(0, 4): over hundreds of coordinates the sample std is within 15%
    assert noise.size >= 200
    assert abs(noise.std() - 2.0) < 0.3 and abs(noise.mean()) < 0.3
    assert out.events == (GaussianRelease(noise_multiplier=2.0, records=b.ids),)
    assert out.dp.mechanism == "gaussian" and out.dp.noise_multiplier == 2.0
    assert np.array_equal(out.labels, b.labels)  # labels declared public
    assert out.dp.label_mode == "plain" and out.dp.mode == "sl-frozen"


def test_randomized_response_labels_are_charged(runtime: ClientRuntime) -> None:
    p = PrivacySection(epsilon_budget=8.0, labels="randomized_response", label_epsilon=0.1)
    tr = ClientTrainer(runtime, p, rng=np.random.default_rng(2))
    out = tr.prepare(_batch(runtime, 64)) if runtime.manifest.max_batch >= 64 else \
        tr.prepare(_batch(runtime, runtime.manifest.max_batch))
    assert LabelRelease(epsilon=0.1, records=out.ids) in out.events
    assert out.dp.label_mode == "randomized_response"
    assert out.activations.dtype == np.float16  # the default wire dtype


def test_non_private_mode_is_declared_not_silent(runtime: ClientRuntime) -> None:
    p = PrivacySection(epsilon_budget=1.0, mode="none", labels="public")
    tr = ClientTrainer(runtime, p, rng=np.random.default_rng(3), wire_dtype="float32")
    out = tr.prepare(_batch(runtime))
    assert out.events == ()
    assert out.dp.mechanism == "none" and out.dp.noise_multiplier == 0.0
    assert out.dp.mode == "none"
    np.testing.assert_allclose(out.activations, runtime.forward(out.x), rtol=1e-6)


def _grad(rt: ClientRuntime, n: int) -> np.ndarray:
    return np.random.default_rng(7).normal(
        size=(n, *rt.manifest.activation_shape)).astype(np.float32)


def _fresh_runtime() -> ClientRuntime:
    return ClientRuntime.from_manifest(list_artifacts()[0])


def test_sl_frozen_never_changes_the_client_half_nor_uploads_it() -> None:
    rt = _fresh_runtime()
    before = [w.copy() for w in rt.get_weights()]
    tr = ClientTrainer(rt, PrivacySection(epsilon_budget=8.0, label_epsilon=1.0),
                       rng=np.random.default_rng(4))
    b = _batch(rt)
    out = tr.prepare(b)
    charged: list[object] = []
    tr.apply_gradient(out.x, _grad(rt, len(b.ids)), ids=b.ids, lr=0.5, charge=charged.append)
    assert charged == []
    for w0, w1 in zip(before, rt.get_weights(), strict=True):
        np.testing.assert_array_equal(w0, w1)
    assert not tr.uploads_weights and tr.samples_trained == len(b.ids)


def test_sl_dpsgd_step_is_charged_to_the_batch_before_it_is_applied() -> None:
    rt = _fresh_runtime()
    before = [w.copy() for w in rt.get_weights()]
    p = PrivacySection(epsilon_budget=8.0, mode="sl-dpsgd", label_epsilon=1.0,
                       dp_sgd_noise_multiplier=3.0)
    tr = ClientTrainer(rt, p, rng=np.random.default_rng(5))
    b = _batch(rt)
    out = tr.prepare(b)
    charged: list[object] = []

    def refuse(evs: object) -> None:
        charged.append(evs)
        raise BudgetExceeded("no")

    with pytest.raises(BudgetExceeded):
        tr.apply_gradient(out.x, _grad(rt, len(b.ids)), ids=b.ids, lr=0.5, charge=refuse)
    assert charged == [(DpSgdStep(noise_multiplier=3.0, records=b.ids),)]
    for w0, w1 in zip(before, rt.get_weights(), strict=True):
        np.testing.assert_array_equal(w0, w1)  # a refused step changes nothing
    tr.apply_gradient(out.x, _grad(rt, len(b.ids)), ids=b.ids, lr=0.5, charge=charged.append)
    assert any(not np.array_equal(w0, w1) for w0, w1 in zip(before, rt.get_weights(),
                                                            strict=True))
    assert tr.uploads_weights and tr.weight_steps == 1
