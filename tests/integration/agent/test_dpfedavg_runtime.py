"""fl-dpsgd round on the real LiteRT full model (committed mlp_dp artifact, no TensorFlow)."""

from __future__ import annotations

import numpy as np

from agent.privacy.dpfedavg import DpFedAvgParams, dp_fedavg_round
from models.clip import clip_rows
from models.full_runtime import FullRuntime
from models.manifest import full_artifact_dir


def _data(rt: FullRuntime, n: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(1)
    x = rt.normalise(rng.standard_normal((n, *rt.manifest.input_shape)))
    return x, rng.integers(0, rt.manifest.num_classes, n).astype(np.int64)


def test_full_batch_noiseless_step_is_the_clipped_mean_of_litert_gradients() -> None:
    rt = FullRuntime.from_manifest(full_artifact_dir("mlp_dp"))
    n = rt.max_batch * 2 + 5  # three LiteRT calls
    x, y = _data(rt, n)
    start = rt.get_weights()
    per = [np.concatenate(parts) for parts in zip(
        *(rt.per_example_grads(x[i:i + rt.max_batch], y[i:i + rt.max_batch])
          for i in range(0, n, rt.max_batch)), strict=True)]
    flat = np.concatenate([g.reshape(n, -1).astype(np.float64) for g in per], axis=1)
    want = -0.1 * clip_rows(flat, clip_norm=0.5).mean(axis=0)
    p = DpFedAvgParams(sampling_prob=1.0, noise_multiplier=0.0, clip_norm=0.5, local_steps=1,
                       lr=0.1)
    res = dp_fedavg_round(rt, ids=list(range(n)), x=x, y=y, global_weights=start, params=p,
                          rng=np.random.default_rng(0), non_private=True)
    got = np.concatenate([u.reshape(-1) for u in res.update])
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-7)


def test_private_round_changes_weights_by_a_noise_sized_update() -> None:
    rt = FullRuntime.from_manifest(full_artifact_dir("mlp_dp"))
    x, y = _data(rt, 200)
    start = rt.get_weights()
    p = DpFedAvgParams(sampling_prob=0.1, noise_multiplier=1.0, clip_norm=1.0, local_steps=4,
                       lr=0.05)
    res = dp_fedavg_round(rt, ids=[f"r{i}" for i in range(200)], x=x, y=y,
                          global_weights=start, params=p, rng=np.random.default_rng(9))
    assert res.steps == 4 and len(res.events) == 1 and res.events[0].count == 4
    d = sum(int(np.prod(s)) for s in rt.weight_shapes)
    norm = float(np.sqrt(sum(float((u.astype(np.float64) ** 2).sum()) for u in res.update)))
    noise_only = 0.05 * np.sqrt(4 * d) * 1.0 / 20.0  # lr * sqrt(steps * d) * z C / (q n)
    assert 0.5 * noise_only < norm < 1.5 * noise_only + 0.05 * 4 * 1.0
    for w, s, u in zip(rt.get_weights(), start, res.update, strict=True):
        np.testing.assert_allclose(w - s, u, rtol=1e-5, atol=1e-6)
