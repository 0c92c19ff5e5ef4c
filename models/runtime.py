"""LiteRT runtime for the client and server model halves (never imports TensorFlow).

Theory of operation: a runtime reads the ``.tflite`` bytes named by a
:class:`~models.manifest.Manifest`, checks their SHA-256 against the manifest
*on the bytes it then loads* (no re-read between check and use), and builds
one LiteRT ``Interpreter``. The weights are resource variables inside that
interpreter; all its signature runners (``forward``, ``backward``, ...)
share them, so a ``backward`` is seen by the next ``forward``.

Every signature has a fixed batch dimension ``manifest.max_batch``. Calls
with ``1 <= B <= max_batch`` rows copy the input into buffers allocated once
at load time and pad the rest with zeros (client gradients) or label ``-1``
(server: excluded from the loss and its gradient); outputs are cut back to
``B`` rows. The interpreter therefore never resizes or reallocates tensors on
the hot path (LiteRT's ``AllocateTensors`` is a no-op when shapes are
unchanged). A padded call costs what a ``max_batch`` call costs, except that
``forward`` and ``predict`` of a single window use the batch-1 signatures
``forward_single`` / ``predict_single`` (same weights) when the artifact has them.

Thread safety: every public method takes the runtime's internal lock, so a
runtime may be shared between threads; calls are serialised (LiteRT
interpreters are not re-entrant). For parallelism use one runtime per thread.

Errors: bad shapes, dtypes, labels or non-finite values raise
:class:`~protocol.errors.ModelError` before LiteRT is called; LiteRT failures
are translated to ``ModelError``; a hash mismatch raises
:class:`~protocol.errors.ArtifactIntegrityError`.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from models.manifest import Manifest, Shape, load_manifest, weights_sha256
from models.preprocess import apply_norm
from protocol.errors import ArtifactIntegrityError, ModelError

try:
    from ai_edge_litert.interpreter import Interpreter
except ImportError:  # boards that only have tflite-runtime (numpy < 2)
    from tflite_runtime.interpreter import Interpreter

__all__ = ["ClientRuntime", "ServerRuntime", "weights_sha256"]

log = logging.getLogger(__name__)


def _load(manifest: Manifest, file_name: str, expected: str, num_threads: int | None) -> Any:
    path = manifest.directory / file_name
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ModelError(f"cannot read model file {path}: {exc.strerror}") from exc
    actual = hashlib.sha256(data).hexdigest()
    if actual != expected:
        raise ArtifactIntegrityError(
            f"{path} has sha256 {actual}, manifest says {expected}")
    try:
        interp = Interpreter(model_content=data, num_threads=num_threads)
    except (RuntimeError, ValueError) as exc:
        raise ModelError(f"LiteRT cannot load {path}: {exc}") from exc
    log.debug("loaded %s (%d bytes, sha256 %s)", path, len(data), actual)
    return interp


def _resolve(manifest_or_path: Manifest | str | Path) -> Manifest:
    if isinstance(manifest_or_path, Manifest):
        return manifest_or_path
    return load_manifest(manifest_or_path)


class _Runtime:
    _weight_shapes: tuple[Shape, ...]
    manifest: Manifest

    def normalise(self, x: np.ndarray) -> np.ndarray:
        """Normalise raw windows as the build did (:mod:`models.preprocess`, manifest constants).

        ``x`` is ``(C, L)`` or ``(B, C, L)``; ``forward``/``predict`` expect normalised input.
        """
        arr = np.asarray(x, dtype=np.float32)
        if arr.shape[-2:] != self.manifest.input_shape:
            raise ModelError(f"window must end in shape {self.manifest.input_shape}, "
                             f"got {arr.shape}")
        m = self.manifest
        return apply_norm(arr, mean=m.norm_mean, std=m.norm_std, per_window=m.norm_per_window)

    def __init__(self, manifest: Manifest, file_name: str, sha256: str,
                 num_threads: int | None) -> None:
        self.manifest = manifest
        self.sha256 = sha256
        self._interp = _load(manifest, file_name, sha256, num_threads)
        self._lock = threading.Lock()
        self._runners: dict[str, Any] = {}
        for name in self._interp.get_signature_list():
            self._runners[name] = self._interp.get_signature_runner(name)
        self._names = tuple(f"w{j:02d}" for j in range(len(self._weight_shapes)))

    def _run(self, name: str, **inputs: np.ndarray) -> dict[str, np.ndarray]:
        try:
            out: dict[str, np.ndarray] = self._runners[name](**inputs)
        except KeyError as exc:
            raise ModelError(f"artifact has no signature {name!r}") from exc
        except (RuntimeError, ValueError) as exc:
            raise ModelError(f"LiteRT {name} failed: {exc}") from exc
        return out

    def _rows(self, arr: np.ndarray, tail: Shape, what: str) -> int:
        if not isinstance(arr, np.ndarray):
            raise ModelError(f"{what} must be a numpy array")
        if arr.ndim != 1 + len(tail) or tuple(arr.shape[1:]) != tail:
            raise ModelError(f"{what} must have shape (B, {', '.join(map(str, tail))}), "
                             f"got {arr.shape}")
        b = int(arr.shape[0])
        if not 1 <= b <= self.manifest.max_batch:
            raise ModelError(f"{what}: batch {b} outside 1..{self.manifest.max_batch}")
        if arr.dtype.kind != "f":
            raise ModelError(f"{what} must be floating point, got {arr.dtype}")
        if not np.all(np.isfinite(arr)):
            raise ModelError(f"{what} contains NaN or Inf")
        return b

    @staticmethod
    def _fill(buf: np.ndarray, arr: np.ndarray, b: int) -> None:
        buf[:b] = arr
        buf[b:] = 0.0

    def _check_weights(self, ws: Sequence[np.ndarray], what: str) -> list[np.ndarray]:
        if len(ws) != len(self._weight_shapes):
            raise ModelError(f"{what}: expected {len(self._weight_shapes)} arrays, got {len(ws)}")
        out = []
        for j, (w, shape) in enumerate(zip(ws, self._weight_shapes, strict=True)):
            arr = np.asarray(w)
            if tuple(arr.shape) != shape:
                raise ModelError(f"{what}: array {j} has shape {arr.shape}, expected {shape}")
            if arr.dtype.kind != "f" or not np.all(np.isfinite(arr)):
                raise ModelError(f"{what}: array {j} must be finite floating point")
            out.append(np.ascontiguousarray(arr, dtype=np.float32))
        return out

    @staticmethod
    def _lr(lr: float) -> np.ndarray:
        value = float(lr)
        if not np.isfinite(value) or value < 0:
            raise ModelError(f"lr must be finite and >= 0, got {lr}")
        return np.array(value, dtype=np.float32)

    def get_weights(self) -> tuple[np.ndarray, ...]:
        """Copies of the current weights, in manifest order."""
        with self._lock:
            out = self._run("get_weights")
        return tuple(np.array(out[n]) for n in self._names)

    def set_weights(self, ws: Sequence[np.ndarray]) -> None:
        """Replace all weights; :class:`ModelError` on wrong count, shape or values."""
        arrays = self._check_weights(ws, "set_weights")
        with self._lock:
            self._run("set_weights", **dict(zip(self._names, arrays, strict=True)))

    def weights_sha256(self) -> str:
        """:func:`~models.manifest.weights_sha256` of the current weights."""
        return weights_sha256(self.get_weights())


class ClientRuntime(_Runtime):
    """The node's half: ``forward``, ``backward`` (SGD), per-sample ``grads`` + ``apply``."""

    def __init__(self, manifest: Manifest, *, num_threads: int | None = None) -> None:
        self._weight_shapes = manifest.client_weight_shapes
        super().__init__(manifest, manifest.client_file, manifest.client_sha256, num_threads)
        b = manifest.max_batch
        self._x = np.zeros((b, *manifest.input_shape), np.float32)
        self._x1 = np.zeros((1, *manifest.input_shape), np.float32)
        self._g = np.zeros((b, *manifest.activation_shape), np.float32)

    @classmethod
    def from_manifest(cls, manifest_or_path: Manifest | str | Path, *,
                      num_threads: int | None = None) -> ClientRuntime:
        """Load the client half; :class:`ArtifactIntegrityError` if its sha256 differs."""
        return cls(_resolve(manifest_or_path), num_threads=num_threads)

    def forward(self, x: np.ndarray) -> np.ndarray:
        """Activations ``(B, *activation_shape)`` for normalised windows ``x`` ``(B, C, L)``."""
        b = self._rows(x, self.manifest.input_shape, "x")
        with self._lock:
            if b == 1 and "forward_single" in self._runners:
                self._x1[:] = x
                single: np.ndarray = self._run("forward_single", x=self._x1)["activations"]
                return single
            self._fill(self._x, x, b)
            out = self._run("forward", x=self._x)["activations"]
        return out[:b]

    def backward(self, x: np.ndarray, grad: np.ndarray, *, lr: float) -> None:
        """SGD step ``w -= lr * sum_b dL/dw`` given ``grad`` = dL/d(activations) ``(B, ...)``."""
        b = self._rows(x, self.manifest.input_shape, "x")
        if self._rows(grad, self.manifest.activation_shape, "grad") != b:
            raise ModelError("x and grad must have the same batch size")
        lr_arr = self._lr(lr)
        with self._lock:
            self._fill(self._x, x, b)
            self._fill(self._g, grad, b)
            self._run("backward", x=self._x, grad=self._g, lr=lr_arr)

    def grads(self, x: np.ndarray, grad: np.ndarray) -> tuple[np.ndarray, ...]:
        """Per-sample weight gradients, each ``(B, *w.shape)``; their batch sum is what
        :meth:`backward` applies (so with a mean loss upstream they carry its ``1/B``)."""
        b = self._rows(x, self.manifest.input_shape, "x")
        if self._rows(grad, self.manifest.activation_shape, "grad") != b:
            raise ModelError("x and grad must have the same batch size")
        with self._lock:
            self._fill(self._x, x, b)
            self._fill(self._g, grad, b)
            out = self._run("grads", x=self._x, grad=self._g)
        return tuple(out[f"g{n[1:]}"][:b] for n in self._names)

    def apply(self, grads: Sequence[np.ndarray], *, lr: float) -> None:
        """``w -= lr * g`` with gradients already aggregated to ``w.shape`` (DP-SGD noisy mean)."""
        arrays = self._check_weights(grads, "apply")
        lr_arr = self._lr(lr)
        with self._lock:
            feeds = {f"g{n[1:]}": a for n, a in zip(self._names, arrays, strict=True)}
            self._run("apply", lr=lr_arr, **feeds)


class ServerRuntime(_Runtime):
    """The server's half: ``train`` (cross-entropy + Adam) and ``predict``."""

    def __init__(self, manifest: Manifest, *, num_threads: int | None = None) -> None:
        self._weight_shapes = manifest.server_weight_shapes
        super().__init__(manifest, manifest.server_file, manifest.server_sha256, num_threads)
        b = manifest.max_batch
        self._a = np.zeros((b, *manifest.activation_shape), np.float32)
        self._a1 = np.zeros((1, *manifest.activation_shape), np.float32)
        self._y = np.full((b,), -1, np.int32)

    @classmethod
    def from_manifest(cls, manifest_or_path: Manifest | str | Path, *,
                      num_threads: int | None = None) -> ServerRuntime:
        """Load the server half; :class:`ArtifactIntegrityError` if its sha256 differs."""
        return cls(_resolve(manifest_or_path), num_threads=num_threads)

    def train(self, activations: np.ndarray, labels: np.ndarray, *,
              lr: float) -> tuple[float, np.ndarray]:
        """One Adam step on mean cross-entropy; returns ``(loss, dL/d(activations))``."""
        b = self._rows(activations, self.manifest.activation_shape, "activations")
        y = np.asarray(labels)
        if y.shape != (b,) or y.dtype.kind not in "iu":
            raise ModelError(f"labels must be integers of shape ({b},), got {y.dtype} {y.shape}")
        if b and (int(y.min()) < 0 or int(y.max()) >= self.manifest.num_classes):
            raise ModelError(f"labels must be in 0..{self.manifest.num_classes - 1}")
        lr_arr = self._lr(lr)
        with self._lock:
            self._fill(self._a, activations, b)
            self._y[:b] = y
            self._y[b:] = -1
            out = self._run("train", activations=self._a, labels=self._y, lr=lr_arr)
        return float(out["loss"]), out["grad_activations"][:b]

    def predict(self, activations: np.ndarray) -> np.ndarray:
        """Class probabilities ``(B, num_classes)``."""
        b = self._rows(activations, self.manifest.activation_shape, "activations")
        with self._lock:
            if b == 1 and "predict_single" in self._runners:
                self._a1[:] = activations
                single: np.ndarray = self._run("predict_single", activations=self._a1)[
                    "probabilities"]
                return single
            self._fill(self._a, activations, b)
            out = self._run("predict", activations=self._a)["probabilities"]
        return out[:b]

    def reset_optimizer(self) -> None:
        """Zero Adam's moments and step count (e.g. after loading aggregated weights)."""
        with self._lock:
            self._run("reset_optimizer")
