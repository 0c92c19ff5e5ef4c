"""The LiteRT runtime on the committed artifacts (real LiteRT, no TensorFlow)."""

from __future__ import annotations

import shutil
import threading
from pathlib import Path

import numpy as np
import pytest

from models.manifest import Manifest, artifact_dir, list_artifacts, load_manifest, weights_sha256
from models.runtime import ClientRuntime, ServerRuntime
from protocol.errors import ArtifactIntegrityError, ModelError

ARTIFACTS = list_artifacts()
IDS = [f"{m.model_id}-cut{m.cut}" for m in ARTIFACTS]


def _batch(m: Manifest, b: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((b, *m.input_shape)).astype(np.float32)
    y = rng.integers(0, m.num_classes, b)
    return x, y


@pytest.mark.parametrize("m", ARTIFACTS, ids=IDS)
def test_padding_is_invisible(m: Manifest) -> None:
    """A batch of B rows gives the same activations, loss and gradients as those B rows
    inside a full batch; padded rows never influence anything."""
    client = ClientRuntime.from_manifest(m)
    server = ServerRuntime.from_manifest(m)
    x, y = _batch(m, m.max_batch)
    full = client.forward(x)
    for b in (1, 3, m.max_batch - 1):
        np.testing.assert_allclose(client.forward(x[:b]), full[:b], rtol=1e-5, atol=1e-6)
    # server loss on 3 rows equals the cross-entropy of predict() on those rows
    probs = server.predict(full[:3])
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(server.predict(full[:1]), probs[:1], rtol=1e-5, atol=1e-7)
    expected = -np.mean(np.log(probs[np.arange(3), y[:3]]))
    loss, grad = server.train(full[:3], y[:3], lr=0.0)
    assert grad.shape == (3, *m.activation_shape)
    assert loss == pytest.approx(expected, rel=1e-4)
    # per-sample grads of a short batch equal the same rows of a full batch
    g_full = np.zeros((m.max_batch, *m.activation_shape), np.float32)
    g_full[:3] = grad
    per_full = client.grads(x, g_full)
    per_short = client.grads(x[:3], grad)
    for short, long in zip(per_short, per_full, strict=True):
        assert short.shape[0] == 3
        np.testing.assert_allclose(short, long[:3], rtol=1e-5, atol=1e-7)
        np.testing.assert_array_equal(long[3:], 0.0)


@pytest.mark.parametrize("m", ARTIFACTS, ids=IDS)
def test_backward_equals_apply_of_summed_grads(m: Manifest) -> None:
    a_rt = ClientRuntime.from_manifest(m)
    b_rt = ClientRuntime.from_manifest(m)
    x, _ = _batch(m, 5, seed=1)
    g = np.random.default_rng(2).standard_normal((5, *m.activation_shape)).astype(np.float32)
    summed = [p.sum(axis=0) for p in a_rt.grads(x, g)]
    a_rt.backward(x, g, lr=0.1)
    b_rt.apply(summed, lr=0.1)
    for wa, wb in zip(a_rt.get_weights(), b_rt.get_weights(), strict=True):
        np.testing.assert_allclose(wa, wb, rtol=1e-5, atol=1e-6)
    assert a_rt.weights_sha256() != weights_sha256(ClientRuntime.from_manifest(m).get_weights())


def test_signatures_share_weights_and_round_trip() -> None:
    m = load_manifest(artifact_dir("cnn1d", 2))
    client = ClientRuntime.from_manifest(m)
    x, _ = _batch(m, 4)
    before = client.forward(x)
    ws = client.get_weights()
    assert tuple(w.shape for w in ws) == m.client_weight_shapes
    client.set_weights([w * 0.5 for w in ws])
    assert not np.allclose(client.forward(x), before)  # forward sees set_weights
    np.testing.assert_array_equal(client.get_weights()[0], ws[0] * 0.5)
    client.set_weights(ws)
    np.testing.assert_array_equal(client.forward(x), before)
    server = ServerRuntime.from_manifest(m)
    sw = server.get_weights()
    server.set_weights(sw)
    assert weights_sha256(server.get_weights()) == weights_sha256(sw)


def test_wrong_weights_fail_clearly() -> None:
    client = ClientRuntime.from_manifest(artifact_dir("mlp", 1))
    ws = list(client.get_weights())
    with pytest.raises(ModelError, match="expected 2 arrays, got 1"):
        client.set_weights(ws[:1])
    with pytest.raises(ModelError, match=r"array 0 has shape \(64, 256\), expected \(256, 64\)"):
        client.set_weights([ws[0].T, ws[1]])
    with pytest.raises(ModelError, match="finite"):
        client.set_weights([ws[0], np.full_like(ws[1], np.nan)])
    with pytest.raises(ModelError, match="expected"):
        client.apply([ws[0]], lr=0.1)
    np.testing.assert_array_equal(client.get_weights()[0], ws[0])  # nothing half-applied


def test_bad_inputs_rejected_before_litert() -> None:
    m = load_manifest(artifact_dir("cnn1d", 1))
    client = ClientRuntime.from_manifest(m)
    server = ServerRuntime.from_manifest(m)
    x, y = _batch(m, 2)
    with pytest.raises(ModelError, match="batch 33 outside"):
        client.forward(np.zeros((33, *m.input_shape), np.float32))
    with pytest.raises(ModelError, match="shape"):
        client.forward(np.zeros((2, 2, 256), np.float32))
    with pytest.raises(ModelError, match="NaN"):
        client.forward(np.full((1, *m.input_shape), np.nan, np.float32))
    a = client.forward(x)
    with pytest.raises(ModelError, match="labels must be in"):
        server.train(a, np.array([0, 11]), lr=0.01)
    with pytest.raises(ModelError, match="integers"):
        server.train(a, np.array([0.0, 1.0]), lr=0.01)
    with pytest.raises(ModelError, match="lr"):
        server.train(a, y, lr=float("nan"))
    with pytest.raises(ModelError, match="same batch"):
        client.backward(x, np.zeros((1, *m.activation_shape), np.float32), lr=0.1)


def test_tampered_artifact_refused(tmp_path: Path) -> None:
    shutil.copytree(artifact_dir("cnn1d", 1), tmp_path / "a")
    path = tmp_path / "a" / "client.tflite"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x40
    path.write_bytes(bytes(data))
    with pytest.raises(ArtifactIntegrityError, match="sha256"):
        ClientRuntime.from_manifest(tmp_path / "a" / "manifest.json")
    ServerRuntime.from_manifest(tmp_path / "a")  # the untouched half still loads
    (tmp_path / "a" / "server.tflite").unlink()
    with pytest.raises(ModelError, match="cannot read"):
        ServerRuntime.from_manifest(tmp_path / "a")


def test_server_training_lowers_loss_and_reset_optimizer() -> None:
    m = load_manifest(artifact_dir("mlp", 2))
    client = ClientRuntime.from_manifest(m)
    server = ServerRuntime.from_manifest(m)
    x, y = _batch(m, 16, seed=3)
    losses = []
    for _ in range(30):
        loss, g = server.train(client.forward(x), y, lr=5e-3)
        client.backward(x, g, lr=0.1)
        losses.append(loss)
    assert losses[-1] < 0.5 * losses[0]
    w = server.get_weights()
    server.reset_optimizer()
    server.train(client.forward(x), y, lr=0.0)  # lr 0: fresh Adam moves nothing
    for a, b in zip(server.get_weights(), w, strict=True):
        np.testing.assert_array_equal(a, b)


def test_shared_runtime_is_thread_safe() -> None:
    m = load_manifest(artifact_dir("cnn1d", 1))
    client = ClientRuntime.from_manifest(m)
    inputs = [_batch(m, 1 + i, seed=i)[0] for i in range(4)]
    expected = [client.forward(x) for x in inputs]
    errors: list[str] = []

    def work(i: int) -> None:
        for _ in range(50):
            if not np.array_equal(client.forward(inputs[i]), expected[i]):
                errors.append(f"thread {i} got another thread's rows")

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []


def test_normalise_applies_manifest_constants() -> None:
    m = load_manifest(artifact_dir("cnn1d", 1))
    client = ClientRuntime.from_manifest(m)
    raw = np.linspace(0, 5, 256, dtype=np.float32)[None, :] * 7 + 3
    out = client.normalise(raw)
    assert m.norm_per_window
    z = (raw - raw.mean()) / raw.std()
    np.testing.assert_allclose(out, (z - m.norm_mean[0]) / m.norm_std[0], rtol=1e-4, atol=1e-5)
    with pytest.raises(ModelError, match="shape"):
        client.normalise(np.zeros((1, 100), np.float32))
