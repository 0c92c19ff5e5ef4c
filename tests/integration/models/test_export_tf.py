"""Export every model and cut with TensorFlow, then check the LiteRT halves against TF autodiff.

The reference is :mod:`models.reference`: stock Keras layers and
``tf.GradientTape``, sharing no code with the hand-written backward passes.
"""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

from models.export import convert_half, export_pair
from models.manifest import Manifest, artifact_dir, file_sha256, list_artifacts, load_manifest
from models.reference import keras_model, reference_gradients
from models.runtime import ClientRuntime, ServerRuntime
from models.spec import ZOO, ModelSpec, model_spec
from models.tflite_ops import check_builtin_only
from models.zoo import initial_weights
from protocol.errors import ModelError

pytestmark = pytest.mark.tf

INPUT = (2, 64)
CLASSES = 5
MAX_BATCH = 8
CASES = [(mid, cut) for mid in sorted(ZOO) for cut in (1, 2)]


def _spec(model_id: str) -> ModelSpec:
    return model_spec(model_id, input_shape=INPUT, num_classes=CLASSES)


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> dict[tuple[str, int], Manifest]:
    root = tmp_path_factory.mktemp("export")
    out = {}
    for mid, cut in CASES:
        out[(mid, cut)] = export_pair(
            _spec(mid), cut, out_dir=root / mid / f"cut{cut}", max_batch=MAX_BATCH, seed=7,
            norm_mean=(0.0, 0.0), norm_std=(1.0, 1.0), norm_per_window=False,
            dataset="random", window={"length": INPUT[1]})
    return out


def _data(b: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((b, *INPUT)).astype(np.float32),
            rng.integers(0, CLASSES, b).astype(np.int32))


@pytest.mark.parametrize(("model_id", "cut"), CASES)
def test_artifacts_builtin_only(exported: dict[tuple[str, int], Manifest], model_id: str,
                                cut: int) -> None:
    m = exported[(model_id, cut)]
    for name in (m.client_file, m.server_file):
        info = check_builtin_only((m.directory / name).read_bytes())
        assert not any("FLEX" in op.upper() for op in info.ops)


@pytest.mark.parametrize(("model_id", "cut"), CASES)
@pytest.mark.parametrize("batch", [MAX_BATCH, 3])
def test_litert_gradients_match_tf_autodiff(exported: dict[tuple[str, int], Manifest],
                                            model_id: str, cut: int, batch: int) -> None:
    m = exported[(model_id, cut)]
    spec = _spec(model_id)
    ws = initial_weights(spec, seed=7)
    x, y = _data(batch, seed=cut)
    ref_loss, ref_grads, ref_dact = reference_gradients(spec, ws, x, y, cut)
    client = ClientRuntime.from_manifest(m)
    server = ServerRuntime.from_manifest(m)
    act = client.forward(x)
    loss, dact = server.train(act, y, lr=0.0)
    assert loss == pytest.approx(ref_loss, rel=1e-5)
    np.testing.assert_allclose(dact, ref_dact, rtol=1e-4, atol=1e-7)
    per_sample = client.grads(x, dact)
    for j, p in enumerate(per_sample):
        assert p.shape == (batch, *ref_grads[j].shape)
        np.testing.assert_allclose(p.sum(axis=0), ref_grads[j], rtol=1e-4, atol=1e-7)
    # per-sample gradients are the gradients of each row's own term (batch of one, scaled)
    _, one_grads, _ = reference_gradients(spec, ws, x[:1], y[:1], cut)
    for j in range(len(per_sample)):
        np.testing.assert_allclose(per_sample[j][0] * batch, one_grads[j], rtol=1e-4, atol=1e-6)
    before = client.get_weights()
    client.backward(x, dact, lr=0.5)
    for j, (w0, w1) in enumerate(zip(before, client.get_weights(), strict=True)):
        np.testing.assert_allclose((w0 - w1) / 0.5, ref_grads[j], rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize(("model_id", "cut"), CASES)
def test_server_adam_matches_keras(exported: dict[tuple[str, int], Manifest], model_id: str,
                                   cut: int) -> None:
    m = exported[(model_id, cut)]
    spec = _spec(model_id)
    model = keras_model(spec, initial_weights(spec, seed=7))
    server_vars = model.trainable_variables[2 * cut:]
    adam = keras.optimizers.Adam(learning_rate=0.01, epsilon=1e-7)
    client = ClientRuntime.from_manifest(m)
    server = ServerRuntime.from_manifest(m)
    for step in range(3):
        x, y = _data(MAX_BATCH - step, seed=10 + step)
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(
                labels=y, logits=model(x)))
        adam.apply(tape.gradient(loss, server_vars), server_vars)
        lite_loss, _ = server.train(client.forward(x), y, lr=0.01)
        assert lite_loss == pytest.approx(float(loss), rel=1e-4)
    ref = [np.asarray(v).reshape(-1, v.shape[-1]) if len(v.shape) == 3 else np.asarray(v)
           for v in server_vars]
    for a, b in zip(server.get_weights(), ref, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


def test_flex_ops_are_detected_and_refused() -> None:
    """TF's own ReLU gradient (ReluGrad) is not a builtin: our export refuses it, and a
    model converted with Flex allowed is caught by the byte-level check."""

    class Autodiff(tf.Module):  # type: ignore[misc]
        def __init__(self) -> None:
            super().__init__()
            self.w = tf.Variable(np.ones((4, 3), np.float32))
            spec = tf.TensorSpec([2, 4], tf.float32, name="x")
            self.sig_fns = {"step": tf.function(self._step, input_signature=[spec])}

        def _step(self, x: tf.Tensor) -> dict[str, tf.Tensor]:
            with tf.GradientTape() as tape:
                loss = tf.reduce_sum(tf.nn.relu(tf.matmul(x, self.w)))
            self.w.assign_sub(0.1 * tape.gradient(loss, self.w))
            return {"loss": loss}

    with pytest.raises(ModelError, match="builtin"):
        convert_half(Autodiff())
    module = Autodiff()
    sigs = {"step": module.sig_fns["step"].get_concrete_function()}
    conv = tf.lite.TFLiteConverter.from_concrete_functions(list(sigs.values()), module)
    conv.experimental_enable_resource_variables = True
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS,
                                      tf.lite.OpsSet.SELECT_TF_OPS]
    data = conv.convert()
    with pytest.raises(ModelError, match="Flex"):
        check_builtin_only(data)


def test_build_is_reproducible(tmp_path: Path, data_dir: Path) -> None:
    """`splitfed-models build` regenerates the committed artifacts byte for byte."""
    from models.cli import main

    assert main(["build", "--model", "mlp", "--cut", "1", "--out", str(tmp_path),
                 "--data-dir", str(data_dir)]) == 0
    fresh = load_manifest(tmp_path / "mlp" / "cut1")
    committed = load_manifest(artifact_dir("mlp", 1))
    assert fresh.client_sha256 == committed.client_sha256
    assert fresh.server_sha256 == committed.server_sha256
    assert fresh.to_json() == committed.to_json()
    assert file_sha256(tmp_path / "mlp" / "cut1" / "client.tflite") == committed.client_sha256


@pytest.mark.parametrize("m", list_artifacts(), ids=lambda m: f"{m.model_id}-cut{m.cut}")
def test_committed_artifacts_match_tf_autodiff(m: Manifest) -> None:
    """The shipped bytes themselves (not only fresh exports) compute TF's gradients."""
    spec = model_spec(m.model_id, input_shape=m.input_shape, num_classes=m.num_classes)
    ws = initial_weights(spec, seed=m.seed)
    client = ClientRuntime.from_manifest(m)
    server = ServerRuntime.from_manifest(m)
    for got, want in zip((*client.get_weights(), *server.get_weights()), ws, strict=True):
        np.testing.assert_array_equal(got, want)
    rng = np.random.default_rng(5)
    x = rng.standard_normal((m.max_batch, *m.input_shape)).astype(np.float32)
    y = rng.integers(0, m.num_classes, m.max_batch).astype(np.int32)
    ref_loss, ref_grads, ref_dact = reference_gradients(spec, ws, x, y, m.cut)
    loss, dact = server.train(client.forward(x), y, lr=0.0)
    assert loss == pytest.approx(ref_loss, rel=1e-5)
    np.testing.assert_allclose(dact, ref_dact, rtol=1e-4, atol=1e-7)
    for j, p in enumerate(client.grads(x, dact)):
        np.testing.assert_allclose(p.sum(axis=0), ref_grads[j], rtol=1e-4, atol=1e-7)
