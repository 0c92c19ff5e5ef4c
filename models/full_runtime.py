"""LiteRT runtime for the whole model on the device (``fl-dpsgd``; never imports TensorFlow).

Theory of operation: in the federated tier the device holds every layer
(manifest ``kind == "full"``, one ``model.tflite``). It never sends
activations or labels; it trains locally with DP-SGD
(:mod:`agent.privacy.dpfedavg`) and releases only the noised weight update.
The artifact therefore offers exactly what DP-SGD needs:

* :meth:`FullRuntime.per_example_grads`: for each example, the gradient of
  ITS OWN cross-entropy loss (not the batch mean) for every weight, as
  ``(B, *w.shape)`` arrays, so the caller can clip each example separately;
* :meth:`FullRuntime.apply`: ``w -= lr * g`` with an already aggregated
  (clipped, noised, averaged) gradient;
* :meth:`FullRuntime.predict` for inference and evaluation, and get/set of
  the weights (the round's global model in, the update out).

Conventions are those of :mod:`models.runtime`: the SHA-256 of the bytes is
checked against the manifest on the bytes loaded; every signature has the
fixed batch ``manifest.max_batch`` and calls with fewer rows are padded into
buffers allocated once (padded rows carry label ``-1``, which the artifact
maps to a zero gradient, and are cut from the outputs); one internal lock
serialises calls; bad input raises :class:`~protocol.errors.ModelError`
before LiteRT is called.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from models.manifest import Manifest
from models.runtime import _resolve, _Runtime
from protocol.errors import ModelError

__all__ = ["FullRuntime"]


class FullRuntime(_Runtime):
    """The whole model: ``predict``, ``per_example_grads``, ``apply``, get/set weights."""

    def __init__(self, manifest: Manifest, *, num_threads: int | None = None) -> None:
        if manifest.kind != "full":
            raise ModelError(f"FullRuntime needs a full-model manifest, got kind "
                             f"{manifest.kind!r} ({manifest.model_id} cut {manifest.cut})")
        self._weight_shapes = manifest.client_weight_shapes
        super().__init__(manifest, manifest.client_file, manifest.client_sha256, num_threads)
        b = manifest.max_batch
        self._x = np.zeros((b, *manifest.input_shape), np.float32)
        self._x1 = np.zeros((1, *manifest.input_shape), np.float32)
        self._y = np.full((b,), -1, np.int32)

    @classmethod
    def from_manifest(cls, manifest_or_path: Manifest | str | Path, *,
                      num_threads: int | None = None) -> FullRuntime:
        """Load ``model.tflite``; :class:`ArtifactIntegrityError` if its sha256 differs."""
        return cls(_resolve(manifest_or_path), num_threads=num_threads)

    @property
    def max_batch(self) -> int:
        """Rows per LiteRT call; larger batches must be chunked by the caller."""
        return self.manifest.max_batch

    @property
    def weight_shapes(self) -> tuple[tuple[int, ...], ...]:
        """Shapes of the weight arrays, in manifest order."""
        return self._weight_shapes

    def predict(self, x: np.ndarray) -> np.ndarray:
        """Class probabilities ``(B, num_classes)`` for normalised windows ``(B, C, L)``."""
        b = self._rows(x, self.manifest.input_shape, "x")
        with self._lock:
            if b == 1 and "predict_single" in self._runners:
                self._x1[:] = x
                single: np.ndarray = self._run("predict_single", x=self._x1)["probabilities"]
                return single
            self._fill(self._x, x, b)
            out = self._run("predict", x=self._x)["probabilities"]
        return out[:b]

    def per_example_grads(self, x: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, ...]:
        """Each example's gradient of its own cross-entropy: one ``(B, *w.shape)`` per weight."""
        b = self._rows(x, self.manifest.input_shape, "x")
        y = np.asarray(labels)
        if y.shape != (b,) or y.dtype.kind not in "iu":
            raise ModelError(f"labels must be integers of shape ({b},), got {y.dtype} {y.shape}")
        if int(y.min()) < 0 or int(y.max()) >= self.manifest.num_classes:
            raise ModelError(f"labels must be in 0..{self.manifest.num_classes - 1}")
        with self._lock:
            self._fill(self._x, x, b)
            self._y[:b] = y
            self._y[b:] = -1
            out = self._run("per_example_grads", x=self._x, labels=self._y)
            return tuple(np.array(out[f"g{n[1:]}"][:b]) for n in self._names)

    def apply(self, grads: Sequence[np.ndarray], *, lr: float) -> None:
        """``w -= lr * g`` with gradients already aggregated to ``w.shape``."""
        arrays = self._check_weights(grads, "apply")
        lr_arr = self._lr(lr)
        with self._lock:
            feeds = {f"g{n[1:]}": a for n, a in zip(self._names, arrays, strict=True)}
            self._run("apply", lr=lr_arr, **feeds)
