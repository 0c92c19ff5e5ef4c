"""Flatbuffer inspection of the committed artifacts: builtin ops only, expected signatures."""

from __future__ import annotations

import pytest

from models.manifest import list_artifacts
from models.tflite_ops import check_builtin_only, format_model_info, read_model_info
from protocol.errors import ModelError

CLIENT_SIGS = {"forward", "forward_single", "backward", "grads", "apply", "get_weights",
               "set_weights"}
SERVER_SIGS = {"train", "predict", "predict_single", "get_weights", "set_weights",
               "reset_optimizer"}


@pytest.mark.parametrize("m", list_artifacts(), ids=lambda m: f"{m.model_id}-cut{m.cut}")
def test_committed_artifacts_are_builtin_only(m: object) -> None:
    from models.manifest import Manifest
    assert isinstance(m, Manifest)
    b = m.max_batch
    client = check_builtin_only((m.directory / m.client_file).read_bytes())
    server = check_builtin_only((m.directory / m.server_file).read_bytes())
    assert client.sha256 == m.client_sha256 and server.sha256 == m.server_sha256
    assert set(client.signatures) == CLIENT_SIGS
    assert set(server.signatures) == SERVER_SIGS
    fwd_in, fwd_out = client.signatures["forward"]
    assert [(t.name, t.shape, t.dtype) for t in fwd_in] == [("x", (b, *m.input_shape), "float32")]
    assert fwd_out[0].shape == (b, *m.activation_shape)
    assert client.signatures["forward_single"][0][0].shape == (1, *m.input_shape)
    assert server.signatures["predict_single"][1][0].shape == (1, m.num_classes)
    train_in, train_out = server.signatures["train"]
    assert {t.name: t.dtype for t in train_in} == {
        "activations": "float32", "labels": "int32", "lr": "float32"}
    assert {t.name for t in train_out} == {"loss", "grad_activations"}
    got = tuple(t.shape for t in client.signatures["get_weights"][1])
    assert got == m.client_weight_shapes
    grads_out = client.signatures["grads"][1]
    assert tuple(t.shape for t in grads_out) == tuple((b, *s) for s in m.client_weight_shapes)
    assert "FLEX" not in format_model_info(client).upper()


def test_not_a_model_rejected() -> None:
    with pytest.raises(ModelError, match="not a TFLite"):
        read_model_info(b"\x00" * 64)
    with pytest.raises(ModelError):
        read_model_info(b"1234TFL3" + b"\xff" * 8)
