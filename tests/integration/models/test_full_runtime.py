"""FullRuntime (fl-dpsgd: the whole model on the device) on the committed artifacts."""

from __future__ import annotations

import shutil
import threading
from pathlib import Path

import numpy as np
import pytest

from models.full_runtime import FullRuntime
from models.manifest import Manifest, artifact_dir, list_full_artifacts, load_manifest
from protocol.errors import ArtifactIntegrityError, ModelError

FULL = list_full_artifacts()
IDS = [m.model_id for m in FULL]


def _batch(m: Manifest, b: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((b, *m.input_shape)).astype(np.float32)
    return x, rng.integers(0, m.num_classes, b).astype(np.int32)


def test_committed_full_artifacts_exist() -> None:
    assert "mlp_dp" in IDS


@pytest.mark.parametrize("m", FULL, ids=IDS)
def test_padding_is_invisible(m: Manifest) -> None:
    """B rows give the same probabilities and per-example gradients as inside a full batch."""
    rt = FullRuntime.from_manifest(m)
    x, y = _batch(m, m.max_batch)
    probs = rt.predict(x)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)
    full = rt.per_example_grads(x, y)
    assert [g.shape for g in full] == [(m.max_batch, *s) for s in m.client_weight_shapes]
    for b in (1, 3, m.max_batch - 1):
        np.testing.assert_allclose(rt.predict(x[:b]), probs[:b], rtol=1e-5, atol=1e-7)
        for g_b, g_full in zip(rt.per_example_grads(x[:b], y[:b]), full, strict=True):
            np.testing.assert_allclose(g_b, g_full[:b], rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("m", FULL, ids=IDS)
def test_gradient_is_of_each_examples_own_loss(m: Manifest) -> None:
    """An example's gradient does not depend on the other rows, and it is not divided by B;
    a step against it lowers that example's loss."""
    rt = FullRuntime.from_manifest(m)
    x, y = _batch(m, 4, seed=1)
    alone = rt.per_example_grads(x[2:3], y[2:3])
    together = rt.per_example_grads(x, y)
    for a, t in zip(alone, together, strict=True):
        np.testing.assert_allclose(a[0], t[2], rtol=1e-5, atol=1e-7)
    before = -np.log(rt.predict(x[2:3])[0, y[2]])
    rt.apply([a[0] for a in alone], lr=1e-2)
    after = -np.log(rt.predict(x[2:3])[0, y[2]])
    assert after < before


@pytest.mark.parametrize("m", FULL, ids=IDS)
def test_weights_round_trip_and_apply(m: Manifest) -> None:
    rt = FullRuntime.from_manifest(m)
    ws = rt.get_weights()
    zeros = [np.zeros_like(w) for w in ws]
    rt.set_weights(zeros)
    assert all(not w.any() for w in rt.get_weights())
    rt.apply([np.ones_like(w) for w in ws], lr=0.5)
    assert all(np.all(w == -0.5) for w in rt.get_weights())
    rt.set_weights(ws)
    for a, b in zip(rt.get_weights(), ws, strict=True):
        np.testing.assert_array_equal(a, b)


def test_bad_input_is_rejected() -> None:
    m = FULL[0]
    rt = FullRuntime.from_manifest(m)
    x, y = _batch(m, 3)
    with pytest.raises(ModelError, match="shape"):
        rt.predict(x[:, :, :-1])
    with pytest.raises(ModelError, match="batch"):
        rt.predict(np.zeros((m.max_batch + 1, *m.input_shape), np.float32))
    with pytest.raises(ModelError, match="NaN"):
        rt.predict(np.full((1, *m.input_shape), np.nan, np.float32))
    with pytest.raises(ModelError, match="labels must be in"):
        rt.per_example_grads(x, np.array([0, -1, 1], np.int32))
    with pytest.raises(ModelError, match="labels must be integers"):
        rt.per_example_grads(x, y[:2])
    with pytest.raises(ModelError, match="expected"):
        rt.apply(list(rt.get_weights())[:-1], lr=0.1)
    with pytest.raises(ModelError, match="lr"):
        rt.apply(list(rt.get_weights()), lr=float("nan"))


def test_split_manifest_is_refused() -> None:
    with pytest.raises(ModelError, match="full-model manifest"):
        FullRuntime.from_manifest(artifact_dir("mlp_dp", 2))


def test_tampered_bytes_are_refused(tmp_path: Path) -> None:
    src = FULL[0].directory
    shutil.copytree(src, tmp_path / "full")
    data = bytearray((tmp_path / "full" / "model.tflite").read_bytes())
    data[-1] ^= 1
    (tmp_path / "full" / "model.tflite").write_bytes(bytes(data))
    with pytest.raises(ArtifactIntegrityError):
        FullRuntime.from_manifest(load_manifest(tmp_path / "full"))


def test_concurrent_calls_are_serialised() -> None:
    m = FULL[0]
    rt = FullRuntime.from_manifest(m)
    x, y = _batch(m, 5)
    want = rt.per_example_grads(x, y)
    errors: list[BaseException] = []

    def worker() -> None:
        try:
            for _ in range(20):
                for g, w in zip(rt.per_example_grads(x, y), want, strict=True):
                    np.testing.assert_array_equal(g, w)
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not any(t.is_alive() for t in threads)
    assert errors == []
