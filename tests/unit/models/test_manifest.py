"""Manifest validation and round trip; canonical weight hash (pure)."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from models.manifest import (
    Manifest,
    artifact_dir,
    list_artifacts,
    load_manifest,
    manifest_from_dict,
    weights_sha256,
)
from protocol.errors import ModelError


def _manifest(**over: object) -> Manifest:
    base: dict[str, object] = dict(
        model_id="cnn1d", cut=1, input_shape=(2, 64), activation_shape=(16, 8), num_classes=5,
        max_batch=8, client_file="client.tflite", server_file="server.tflite",
        client_sha256="a" * 64, server_sha256="b" * 64, norm_mean=(0.0, 1.0),
        norm_std=(1.0, 2.0), norm_per_window=True,
        client_weight_shapes=((14, 8), (8,)), server_weight_shapes=((128, 5), (5,)),
        dataset="PLAID", window={"length": 64, "mode": "pad", "per_window": True})
    base.update(over)
    return Manifest(**base)  # type: ignore[arg-type]


def test_json_round_trip(tmp_path: Path) -> None:
    m = _manifest()
    (tmp_path / "manifest.json").write_text(m.to_json())
    loaded = load_manifest(tmp_path)
    assert loaded == m
    assert loaded.directory == tmp_path.resolve()
    assert m.directory == artifact_dir("cnn1d", 1)
    assert hash(loaded) == hash(m)  # usable as a dict key despite the dict fields
    assert {loaded: 1}[m] == 1


@pytest.mark.parametrize(("field", "value", "match"), [
    ("client_sha256", "A" * 64, "client_sha256"),
    ("norm_mean", (0.0,), "one value per input channel"),
    ("norm_std", (1.0, 0.0), "norm_std must be > 0"),
    ("client_file", "../x.tflite", "plain file name"),
    ("server_weight_shapes", ((0, 5),), "positive shapes"),
    ("label_dtype", "int64", "dtypes"),
])
def test_invalid_fields_rejected(field: str, value: object, match: str) -> None:
    with pytest.raises(ModelError, match=match):
        _manifest(**{field: value})


def test_load_reports_missing_field_and_bad_json(tmp_path: Path) -> None:
    data = json.loads(_manifest().to_json())
    del data["server_sha256"]
    with pytest.raises(ModelError, match="server_sha256"):
        manifest_from_dict(data)
    (tmp_path / "manifest.json").write_text("{not json")
    with pytest.raises(ModelError, match="not valid JSON"):
        load_manifest(tmp_path)
    with pytest.raises(ModelError, match="cannot read"):
        load_manifest(tmp_path / "missing.json")


def test_packaged_artifacts_listed() -> None:
    found = {(m.model_id, m.cut) for m in list_artifacts()}
    assert {("cnn1d", 1), ("cnn1d", 2), ("mlp", 1), ("mlp", 2)} <= found
    for m in list_artifacts():
        assert m.dataset == "PLAID"
        assert m.num_classes == 11
        assert (m.directory / m.client_file).is_file()


_arrays = hnp.arrays(dtype=st.sampled_from([np.float32, np.float16]),  # weight wire dtypes
                     shape=hnp.array_shapes(min_dims=0, max_dims=3, max_side=4),
                     elements={"allow_nan": False, "allow_infinity": False,
                               "min_value": -60000, "max_value": 60000})  # fits float16


@given(st.lists(_arrays, min_size=1, max_size=4))
def test_weight_hash_is_byte_order_independent_and_stable(ws: list[np.ndarray]) -> None:
    big = [w.astype(w.dtype.newbyteorder(">")) for w in ws]
    assert weights_sha256(ws) == weights_sha256(big)
    assert weights_sha256(ws) == weights_sha256([w.copy() for w in ws])


@given(_arrays)
def test_weight_hash_sees_shape_dtype_and_values(w: np.ndarray) -> None:
    h = weights_sha256([w])
    if w.shape != (w.size, 1):
        assert weights_sha256([w.reshape(-1, 1)]) != h
    other = np.float16 if w.dtype == np.float32 else np.float32
    assert weights_sha256([w.astype(other)]) != h
    if w.size:
        changed = w.copy()
        changed.flat[0] = 0 if changed.flat[0] != 0 else 1
        assert weights_sha256([changed]) != h
    assert weights_sha256([w, w]) != h


def test_replace_revalidates() -> None:
    with pytest.raises(ModelError):
        replace(_manifest(), cut=0)


def test_weights_hash_is_the_protocol_digest() -> None:
    """One definition system-wide: ledger records, announcements and devices agree."""
    from protocol.ledger_msgs import weights_digest

    ws = [np.arange(6, dtype=np.float32).reshape(2, 3), np.ones(3, np.float32)]
    assert weights_sha256(ws) == weights_digest(tuple(ws))
