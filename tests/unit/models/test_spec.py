"""Architecture shapes, cut validation and im2col indices (pure, no TensorFlow)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from models.spec import LayerSpec, ModelSpec, cnn1d, conv_indices, conv_out_len, mlp, model_spec
from protocol.errors import ConfigError


def test_cnn1d_shapes_and_cuts() -> None:
    spec = cnn1d(input_shape=(3, 256), num_classes=11)
    assert spec.shapes[0] == (256, 3)
    assert spec.activation_shape(1) == (64, 8)
    assert spec.activation_shape(2) == (32, 16)
    assert spec.shapes[-1] == (11,)
    client = spec.weight_shapes(0, 1)
    assert client == ((7 * 3, 8), (8,))
    assert spec.weight_shapes(3, 4) == ((16 * 32, 11), (11,))


def test_mlp_flattens_input() -> None:
    spec = mlp(input_shape=(2, 50), num_classes=4)
    assert spec.weight_shapes(0, 1) == ((100, 64), (64,))
    assert spec.activation_shape(2) == (32,)


def test_unknown_cut_and_model_rejected() -> None:
    spec = mlp(input_shape=(1, 16), num_classes=3)
    with pytest.raises(ConfigError, match="cuts"):
        spec.activation_shape(3)
    with pytest.raises(ConfigError, match="unknown model"):
        model_spec("resnet", input_shape=(1, 16), num_classes=3)


def test_invalid_specs_report_problems() -> None:
    with pytest.raises(ConfigError) as info:
        ModelSpec(model_id="x", input_shape=(0, 16), num_classes=1,
                  layers=(LayerSpec(kind="dense", units=1, relu=True),), cuts=(1,))
    assert len(info.value.problems) >= 3
    with pytest.raises(ConfigError, match="expected 5"):
        ModelSpec(model_id="x", input_shape=(1, 16), num_classes=5,
                  layers=(LayerSpec(kind="dense", units=4),
                          LayerSpec(kind="dense", units=3, relu=False)), cuts=(1,))
    with pytest.raises(ConfigError, match="cannot follow"):
        ModelSpec(model_id="x", input_shape=(1, 16), num_classes=3,
                  layers=(LayerSpec(kind="dense", units=4), LayerSpec(kind="conv", units=2),
                          LayerSpec(kind="dense", units=3, relu=False)), cuts=(1,))


@given(length=st.integers(1, 40), kernel=st.integers(1, 9), stride=st.integers(1, 4),
       seed=st.integers(0, 2**32 - 1))
def test_im2col_matches_direct_convolution(length: int, kernel: int, stride: int,
                                            seed: int) -> None:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(length)
    w = rng.standard_normal(kernel)
    out_len = conv_out_len(length, kernel, stride)
    if out_len < 1:
        return
    idx = conv_indices(length, kernel, stride, out_len)
    ext = np.concatenate([x, [0.0]])
    via_im2col = ext[idx] @ w
    pad = (kernel - 1) // 2
    padded = np.concatenate([np.zeros(pad), x, np.zeros(pad)])
    direct = np.array([padded[t * stride:t * stride + kernel] @ w for t in range(out_len)])
    np.testing.assert_allclose(via_im2col, direct, rtol=1e-12, atol=1e-12)
