"""Full-model (``kind == "full"``, fl-dpsgd) manifests: validation, JSON, old manifests (pure)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from models.manifest import (
    Manifest,
    artifact_dir,
    full_artifact_dir,
    list_artifacts,
    load_manifest,
    manifest_from_dict,
)
from protocol.errors import ModelError


def _full(**over: object) -> Manifest:
    base: dict[str, object] = dict(
        kind="full", model_id="mlp_dp", cut=3, input_shape=(1, 64), activation_shape=(5,),
        num_classes=5, max_batch=8, client_file="model.tflite", server_file="",
        client_sha256="a" * 64, server_sha256="", norm_mean=(0.0,), norm_std=(1.0,),
        norm_per_window=True,
        client_weight_shapes=((64, 16), (16,), (16, 8), (8,), (8, 5), (5,)),
        server_weight_shapes=(), dataset="PLAID", window={"length": 64})
    base.update(over)
    return Manifest(**base)  # type: ignore[arg-type]


def test_full_round_trip(tmp_path: Path) -> None:
    m = _full()
    text = m.to_json()
    assert json.loads(text)["kind"] == "full"
    (tmp_path / "manifest.json").write_text(text)
    assert load_manifest(tmp_path) == m
    assert m.directory == full_artifact_dir("mlp_dp")


@pytest.mark.parametrize(("over", "match"), [
    ({"server_file": "server.tflite"}, "no server file"),
    ({"server_weight_shapes": ((8, 5), (5,))}, "no server file"),
    ({"activation_shape": (8,)}, "outputs"),
    ({"cut": 2}, "weight arrays"),
    ({"kind": "half"}, "kind must be"),
    ({"client_sha256": ""}, "client_sha256"),
])
def test_full_rejects_inconsistent_fields(over: dict[str, object], match: str) -> None:
    with pytest.raises(ModelError, match=match):
        _full(**over)


def test_split_manifests_do_not_gain_a_kind_field() -> None:
    """Existing manifests load as "split" and re-serialise to the committed bytes."""
    for m in list_artifacts():
        assert m.kind == "split"
        committed = (artifact_dir(m.model_id, m.cut) / "manifest.json").read_text()
        assert "kind" not in json.loads(committed)
        assert m.to_json() == committed
    data = json.loads((artifact_dir("mlp", 1) / "manifest.json").read_text())
    with pytest.raises(ModelError, match="kind must be"):
        manifest_from_dict({**data, "kind": "other"})
