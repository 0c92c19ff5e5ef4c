"""The whole-model (``fl-dpsgd``) artifact against TensorFlow autodiff, example by example.

The reference is :mod:`models.reference` (stock Keras layers, ``tf.GradientTape``
on ONE example's cross-entropy at a time): it shares no code with the
hand-written backward pass in :class:`models.zoo.FullModel`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from models.export import export_full
from models.full_runtime import FullRuntime
from models.manifest import (
    Manifest,
    file_sha256,
    full_artifact_dir,
    list_full_artifacts,
    load_manifest,
)
from models.reference import keras_model
from models.spec import ZOO, ModelSpec, model_spec
from models.tflite_ops import check_builtin_only
from models.zoo import initial_weights

pytestmark = pytest.mark.tf

INPUT = (2, 64)
CLASSES = 5
MAX_BATCH = 8


def _spec(model_id: str) -> ModelSpec:
    return model_spec(model_id, input_shape=INPUT, num_classes=CLASSES)


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Manifest]:
    root = tmp_path_factory.mktemp("full")
    return {mid: export_full(_spec(mid), out_dir=root / mid, max_batch=MAX_BATCH, seed=7,
                             norm_mean=(0.0, 0.0), norm_std=(1.0, 1.0), norm_per_window=False,
                             dataset="random", window={"length": INPUT[1]})
            for mid in sorted(ZOO)}


def _reference(spec: ModelSpec, ws: Sequence[np.ndarray], x: np.ndarray,
               y: np.ndarray) -> tuple[list[np.ndarray], np.ndarray]:
    """Per-example gradients (zoo layout, stacked on axis 0) and probabilities, by TF autodiff."""
    model = keras_model(spec, ws)
    per: list[list[np.ndarray]] = [[] for _ in ws]
    for i in range(len(y)):
        with tf.GradientTape() as tape:
            logits = model(tf.constant(x[i:i + 1], tf.float32))
            loss = tf.reduce_sum(tf.nn.sparse_softmax_cross_entropy_with_logits(
                labels=tf.constant(y[i:i + 1], tf.int32), logits=logits))
        for j, g in enumerate(tape.gradient(loss, model.trainable_variables)):
            arr = np.asarray(g)
            per[j].append(arr.reshape(-1, arr.shape[-1]) if arr.ndim == 3 else arr)
    probs = np.asarray(tf.nn.softmax(model(tf.constant(x, tf.float32))))
    return [np.stack(p) for p in per], probs


@pytest.mark.parametrize("model_id", sorted(ZOO))
def test_builtin_only(exported: dict[str, Manifest], model_id: str) -> None:
    m = exported[model_id]
    info = check_builtin_only((m.directory / m.client_file).read_bytes())
    assert not any("FLEX" in op.upper() for op in info.ops)
    assert {"predict", "per_example_grads", "apply", "get_weights",
            "set_weights"} <= set(info.signatures)


@pytest.mark.parametrize("model_id", sorted(ZOO))
@pytest.mark.parametrize("batch", [MAX_BATCH, 3])
def test_per_example_grads_match_tf_autodiff(exported: dict[str, Manifest], model_id: str,
                                             batch: int) -> None:
    spec = _spec(model_id)
    rng = np.random.default_rng(batch)
    ws = [w + rng.standard_normal(w.shape).astype(np.float32) * 0.05
          for w in initial_weights(spec, seed=7)]  # non-zero biases too
    x = rng.standard_normal((batch, *INPUT)).astype(np.float32)
    y = rng.integers(0, CLASSES, batch).astype(np.int32)
    ref, probs = _reference(spec, ws, x, y)
    rt = FullRuntime.from_manifest(exported[model_id])
    rt.set_weights(ws)
    np.testing.assert_allclose(rt.predict(x), probs, rtol=1e-4, atol=1e-6)
    got = rt.per_example_grads(x, y)
    assert len(got) == len(ref)
    for g, r in zip(got, ref, strict=True):
        assert g.shape == r.shape
        np.testing.assert_allclose(g, r, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("model_id", sorted(ZOO))
def test_apply_is_sgd_on_the_summed_gradient(exported: dict[str, Manifest],
                                             model_id: str) -> None:
    rt = FullRuntime.from_manifest(exported[model_id])
    before = rt.get_weights()
    rng = np.random.default_rng(3)
    x = rng.standard_normal((5, *INPUT)).astype(np.float32)
    y = rng.integers(0, CLASSES, 5).astype(np.int32)
    g = [p.sum(axis=0) for p in rt.per_example_grads(x, y)]
    rt.apply(g, lr=0.25)
    for w0, w1, gj in zip(before, rt.get_weights(), g, strict=True):
        np.testing.assert_allclose(w1, w0 - 0.25 * gj, rtol=1e-5, atol=1e-7)


def test_committed_full_artifacts_match_tf_autodiff() -> None:
    """The shipped bytes (not only fresh exports) hold the seed's weights and TF's gradients."""
    found = list_full_artifacts()
    assert {m.model_id for m in found} >= {"mlp_dp"}
    for m in found:
        spec = model_spec(m.model_id, input_shape=m.input_shape, num_classes=m.num_classes)
        ws = initial_weights(spec, seed=m.seed)
        rt = FullRuntime.from_manifest(m)
        for got, want in zip(rt.get_weights(), ws, strict=True):
            np.testing.assert_array_equal(got, want)
        rng = np.random.default_rng(5)
        x = rng.standard_normal((m.max_batch, *m.input_shape)).astype(np.float32)
        y = rng.integers(0, m.num_classes, m.max_batch).astype(np.int32)
        ref, _ = _reference(spec, ws, x, y)
        for g, r in zip(rt.per_example_grads(x, y), ref, strict=True):
            np.testing.assert_allclose(g, r, rtol=1e-4, atol=1e-6)


def test_full_build_is_reproducible(tmp_path: Path, data_dir: Path) -> None:
    """`splitfed-models build --full` regenerates the committed full artifact byte for byte."""
    from models.cli import main

    assert main(["build", "--full", "--model", "mlp_dp", "--out", str(tmp_path),
                 "--data-dir", str(data_dir)]) == 0
    fresh = load_manifest(tmp_path / "mlp_dp" / "full")
    committed = load_manifest(full_artifact_dir("mlp_dp"))
    assert fresh.to_json() == committed.to_json()
    assert file_sha256(tmp_path / "mlp_dp" / "full" / "model.tflite") == committed.client_sha256
