"""Export zoo halves to ``client.tflite`` / ``server.tflite`` + ``manifest.json`` (build time, TF).

Each half is saved as a SavedModel with one signature per method and
converted with resource variables enabled and ``TFLITE_BUILTINS`` as the only
op set, so conversion itself fails if any op would need Flex or a custom op;
:func:`models.tflite_ops.check_builtin_only` re-checks the written bytes.
Weights are initialised from a fixed seed with numpy, so the same
``(model, cut, window, seed, max_batch)`` and the same TensorFlow version give
the same bytes (``splitfed-models build`` is reproducible).
"""

from __future__ import annotations

import hashlib
import logging
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import tensorflow as tf

from models.manifest import Manifest, artifact_dir, full_artifact_dir
from models.spec import ModelSpec
from models.tflite_ops import check_builtin_only
from models.zoo import ServerHalf, build_full, build_halves
from protocol.errors import ModelError

log = logging.getLogger(__name__)

DEFAULT_MAX_BATCH = 32


def convert_half(half: tf.Module) -> bytes:
    """Convert a :class:`~models.zoo.ClientHalf` or ``ServerHalf`` to builtin-only ``.tflite``."""
    fns: dict[str, Any] = half.sig_fns
    sigs = {name: fn.get_concrete_function() for name, fn in fns.items()}
    with tempfile.TemporaryDirectory(prefix="splitfed-export-") as tmp:
        tf.saved_model.save(half, tmp, signatures=sigs)
        conv = tf.lite.TFLiteConverter.from_saved_model(tmp, signature_keys=list(sigs))
        conv.experimental_enable_resource_variables = True
        conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
        try:
            data: bytes = conv.convert()
        except Exception as exc:  # the converter raises ConverterError and plain Exceptions
            raise ModelError(f"conversion to builtin-only TFLite failed: {exc}") from exc
    check_builtin_only(data)
    return data


def export_pair(spec: ModelSpec, cut: int, *, out_dir: str | Path | None = None,
                max_batch: int = DEFAULT_MAX_BATCH, seed: int = 0,
                norm_mean: tuple[float, ...], norm_std: tuple[float, ...],
                norm_per_window: bool, dataset: str, window: dict[str, Any],
                weights: list[np.ndarray] | None = None) -> Manifest:
    """Write ``client.tflite``, ``server.tflite`` and ``manifest.json`` for ``spec`` at ``cut``."""
    client, server = build_halves(spec, cut, max_batch=max_batch, seed=seed, weights=weights)
    client_bytes = convert_half(client)
    server_bytes = convert_half(server)
    target = Path(out_dir) if out_dir is not None else artifact_dir(spec.model_id, cut)
    target.mkdir(parents=True, exist_ok=True)
    manifest = Manifest(
        model_id=spec.model_id, cut=cut, input_shape=spec.input_shape,
        activation_shape=spec.activation_shape(cut), num_classes=spec.num_classes,
        max_batch=max_batch, client_file="client.tflite", server_file="server.tflite",
        client_sha256=hashlib.sha256(client_bytes).hexdigest(),
        server_sha256=hashlib.sha256(server_bytes).hexdigest(),
        norm_mean=tuple(norm_mean), norm_std=tuple(norm_std), norm_per_window=norm_per_window,
        client_weight_shapes=spec.weight_shapes(0, cut),
        server_weight_shapes=spec.weight_shapes(cut, len(spec.layers)),
        dataset=dataset, window=dict(window), optimizer=_optimizer_info(server), seed=seed,
        location=target.resolve())
    (target / "client.tflite").write_bytes(client_bytes)
    (target / "server.tflite").write_bytes(server_bytes)
    (target / "manifest.json").write_text(manifest.to_json(), encoding="utf-8")
    log.info("exported %s cut %d to %s (client %d B, server %d B)", spec.model_id, cut, target,
             len(client_bytes), len(server_bytes))
    return manifest


def export_full(spec: ModelSpec, *, out_dir: str | Path | None = None,
                max_batch: int = DEFAULT_MAX_BATCH, seed: int = 0,
                norm_mean: tuple[float, ...], norm_std: tuple[float, ...],
                norm_per_window: bool, dataset: str, window: dict[str, Any],
                weights: list[np.ndarray] | None = None) -> Manifest:
    """Write ``model.tflite`` + ``manifest.json`` (kind "full") for the whole of ``spec``.

    Same initial weights as :func:`export_pair` for the same ``seed``.
    """
    model_bytes = convert_half(build_full(spec, max_batch=max_batch, seed=seed, weights=weights))
    target = Path(out_dir) if out_dir is not None else full_artifact_dir(spec.model_id)
    target.mkdir(parents=True, exist_ok=True)
    layers = len(spec.layers)
    manifest = Manifest(
        kind="full", model_id=spec.model_id, cut=layers, input_shape=spec.input_shape,
        activation_shape=(spec.num_classes,), num_classes=spec.num_classes,
        max_batch=max_batch, client_file="model.tflite", server_file="",
        client_sha256=hashlib.sha256(model_bytes).hexdigest(), server_sha256="",
        norm_mean=tuple(norm_mean), norm_std=tuple(norm_std), norm_per_window=norm_per_window,
        client_weight_shapes=spec.weight_shapes(0, layers), server_weight_shapes=(),
        dataset=dataset, window=dict(window), optimizer={"client": "sgd"}, seed=seed,
        location=target.resolve())
    (target / "model.tflite").write_bytes(model_bytes)
    (target / "manifest.json").write_text(manifest.to_json(), encoding="utf-8")
    log.info("exported full %s to %s (%d B)", spec.model_id, target, len(model_bytes))
    return manifest


def _optimizer_info(server: ServerHalf) -> dict[str, Any]:
    return {"client": "sgd", "server": "adam", "beta1": server.beta1, "beta2": server.beta2,
            "epsilon": server.epsilon}
