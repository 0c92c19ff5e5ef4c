"""The DP-friendly funnel: narrow unit-norm cuts, validated layer options."""

from __future__ import annotations

import pytest

from models.spec import LayerSpec, ModelSpec, model_spec
from protocol.errors import ConfigError


def test_mlp_dp_cuts_are_narrow() -> None:
    spec = model_spec("mlp_dp", input_shape=(1, 256), num_classes=11)
    assert spec.activation_shape(1) == (16,)
    assert spec.activation_shape(2) == (8,)
    assert all(spec.layers[c - 1].unit_norm for c in spec.cuts)
    assert not spec.layers[-1].unit_norm


def test_unit_norm_only_on_dense_layers() -> None:
    with pytest.raises(ConfigError, match="unit_norm"):
        LayerSpec(kind="conv", units=4, kernel=3, unit_norm=True)


def test_logits_layer_cannot_be_normalised() -> None:
    with pytest.raises(ConfigError, match="logits"):
        ModelSpec(model_id="x", input_shape=(1, 8), num_classes=3,
                  layers=(LayerSpec(kind="dense", units=4),
                          LayerSpec(kind="dense", units=3, relu=False, unit_norm=True)),
                  cuts=(1,))
