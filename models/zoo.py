"""TensorFlow halves of the zoo models, written so LiteRT can train them (build time only).

Theory of operation: each half is a ``tf.Module`` whose weights are
``tf.Variable``\\ s (LiteRT resource variables) and whose methods become
``.tflite`` signatures. Back-propagation is written by hand, layer by layer
(an explicit vector-Jacobian product made of builtin ops), instead of
``tf.GradientTape``: TensorFlow's own gradients of ``relu``, ``conv1d``,
``tf.signal.frame`` or broadcasting lower to Flex ops (``ReluGrad``,
``Conv2DBackpropFilter``, ``StridedSliceGrad``, ``BroadcastGradientArgs``)
that LiteRT's builtin op set does not have. The pieces:

* ReLU is ``maximum(z, 0)``, its gradient ``dy * cast(z > 0)``.
* A strided 1-D convolution is im2col (``gather`` with constant indices into
  the input extended by one zero row, which stands for the padding) followed
  by a 2-D ``matmul``. Its filter gradient is a ``matmul``; its input gradient
  is col2im, an ``unsorted_segment_sum`` over the same indices.
* Dense layers work on 2-D tensors only.
* A unit-norm output ``u = r / |r|`` (``r`` the layer's output after the
  optional ReLU) back-propagates as ``(dr - u <u, du>) / |r|``; the ``1e12``
  cap on ``1/|r|`` (an all-zero row) is treated as a constant.
* Per-sample weight gradients (DP-SGD) are batched matmuls with equal batch
  dimensions (no broadcasting).

Every signature has a fixed batch dimension: ``max_batch``, except
``forward_single`` / ``predict_single`` (batch 1, for per-window inference);
the runtime pads other smaller batches. Padded rows are marked with label ``-1`` on the server (a
zero one-hot row, excluded from the mean loss) and get a zero upstream
gradient on the client, so they never change a weight.

:class:`FullModel` is all layers in one module (the ``fl-dpsgd`` tier): the
same forward/backward, with per-example gradients of each example's own
cross-entropy (``dlogits = (softmax - onehot) * mask``, not divided by B).

The client half trains with plain SGD (``w -= lr * g``, so that DP-SGD can
hand it a noisy mean). The server half keeps Adam state (Keras' formulation:
``lr_t = lr * sqrt(1 - b2^t) / (1 - b1^t)``, ``w -= lr_t * m / (sqrt(v) + eps)``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import tensorflow as tf

from models.spec import LayerSpec, ModelSpec, conv_indices

Tensor = Any  # tf.Tensor; TensorFlow ships no usable type stubs


@dataclass(frozen=True, slots=True)
class _Layer:
    spec: LayerSpec
    in_shape: tuple[int, ...]
    out_shape: tuple[int, ...]
    index: np.ndarray | None  # (T, K) im2col indices into the zero-extended input, conv only


def initial_weights(spec: ModelSpec, *, seed: int) -> list[np.ndarray]:
    """He-normal kernels (the logits layer: 1/fan_in variance), zero biases, from ``seed``."""
    rng = np.random.default_rng(seed)
    out: list[np.ndarray] = []
    shapes = spec.weight_shapes(0, len(spec.layers))
    for i in range(len(spec.layers)):
        k_shape, b_shape = shapes[2 * i], shapes[2 * i + 1]
        gain = 2.0 if spec.layers[i].relu else 1.0
        std = float(np.sqrt(gain / k_shape[0]))
        out.append((rng.standard_normal(k_shape) * std).astype(np.float32))
        out.append(np.zeros(b_shape, np.float32))
    return out


def _inv_norm(h: Tensor) -> Tensor:
    """``min(1/||row||, 1e12)`` per row of a 2-D tensor (Keras' ``UnitNormalization``).

    Written as ``rsqrt(max(sum, 1e-24))``: LiteRT's ``rsqrt(0)`` is NaN, not inf.
    """
    return tf.math.rsqrt(tf.maximum(tf.reduce_sum(h * h, axis=1, keepdims=True), 1e-24))


def _index(layer: _Layer) -> np.ndarray:
    if layer.index is None:
        raise TypeError("im2col indices requested for a dense layer")
    return layer.index


class _Half(tf.Module):  # type: ignore[misc]
    """Layers ``start..stop-1`` of ``spec`` with manual forward/backward passes."""

    def __init__(self, spec: ModelSpec, start: int, stop: int, weights: list[np.ndarray],
                 *, max_batch: int, name: str) -> None:
        super().__init__(name=name)
        self.spec = spec
        self.max_batch = max_batch
        self.layers: list[_Layer] = []
        for i in range(start, stop):
            ls = spec.layers[i]
            idx = None
            if ls.kind == "conv":
                idx = conv_indices(spec.shapes[i][0], ls.kernel, ls.stride, spec.shapes[i + 1][0])
            self.layers.append(_Layer(ls, spec.shapes[i], spec.shapes[i + 1], idx))
        self.in_shape = spec.shapes[start]
        self.out_shape = spec.shapes[stop]
        self.w = [tf.Variable(w, name=f"w{j:02d}") for j, w in enumerate(weights)]

    # ---- forward / backward, all builtin ops ----
    def _forward(self, h: Tensor) -> tuple[Tensor, list[tuple[Tensor, Tensor]]]:
        """Return the output and, per layer, (layer input as 2-D/cols, pre-activation)."""
        b = int(h.shape[0])  # static: every signature has a fixed batch size
        caches = []
        for j, layer in enumerate(self.layers):
            kern, bias = self.w[2 * j], self.w[2 * j + 1]
            if layer.spec.kind == "conv":
                feats = layer.in_shape[1]
                ext = tf.concat([h, tf.zeros([b, 1, feats], tf.float32)], axis=1)
                cols = tf.gather(ext, tf.constant(_index(layer).reshape(-1)), axis=1)
                cols = tf.reshape(cols, [b * layer.out_shape[0], layer.spec.kernel * feats])
                z = tf.matmul(cols, kern) + bias
                out = tf.reshape(z, [b, *layer.out_shape])
            else:
                cols = tf.reshape(h, [b, -1])
                z = tf.matmul(cols, kern) + bias
                out = z
            caches.append((cols, z))
            h = tf.maximum(out, 0.0) if layer.spec.relu else out
            if layer.spec.unit_norm:
                h = h * _inv_norm(h)
        return h, caches

    def _backward(self, caches: list[tuple[Tensor, Tensor]], dy: Tensor, *, per_sample: bool,
                  need_dx: bool) -> tuple[Tensor | None, list[Tensor]]:
        """Back-propagate ``dy``; weight gradients summed over the batch or per sample."""
        b = int(dy.shape[0])
        grads: list[Tensor] = [None] * len(self.w)
        d = dy
        for j in reversed(range(len(self.layers))):
            layer = self.layers[j]
            cols, z = caches[j]
            kern = self.w[2 * j]
            dz = tf.reshape(d, z.shape)
            if layer.spec.unit_norm:  # d(r/|r|) = (dr - u <u, dr>) / |r|, r = relu(z) or z
                r = tf.maximum(z, 0.0) if layer.spec.relu else z
                inv = _inv_norm(r)
                u = r * inv
                dz = (dz - u * tf.reduce_sum(u * dz, axis=1, keepdims=True)) * inv
            if layer.spec.relu:
                dz = dz * tf.cast(z > 0.0, tf.float32)
            if per_sample:
                rows = int(z.shape[0]) // b
                cols3 = tf.reshape(cols, [b, rows, -1])
                dz3 = tf.reshape(dz, [b, rows, -1])
                grads[2 * j] = tf.matmul(cols3, dz3, transpose_a=True)
                grads[2 * j + 1] = tf.reduce_sum(dz3, axis=1)
            else:
                grads[2 * j] = tf.matmul(cols, dz, transpose_a=True)
                grads[2 * j + 1] = tf.reduce_sum(dz, axis=0)
            if j == 0 and not need_dx:
                return None, grads
            dcols = tf.matmul(dz, kern, transpose_b=True)
            if layer.spec.kind == "conv":
                steps, feats = layer.in_shape
                taps = _index(layer).size
                dcols = tf.transpose(tf.reshape(dcols, [b, taps, feats]), [1, 0, 2])
                dext = tf.math.unsorted_segment_sum(
                    dcols, tf.constant(_index(layer).reshape(-1)), steps + 1)
                d = tf.transpose(dext[:steps], [1, 0, 2])
            else:
                d = tf.reshape(dcols, [b, *layer.in_shape])
        return d, grads

    def _weights_dict(self) -> dict[str, Tensor]:
        return {f"w{j:02d}": v.read_value() for j, v in enumerate(self.w)}

    def _assign(self, values: list[Tensor]) -> None:
        for v, value in zip(self.w, values, strict=True):
            v.assign(value)

    def weight_specs(self, prefix: str) -> list[tf.TensorSpec]:
        """Input specs named ``<prefix>00``, ``<prefix>01``... shaped like the weights."""
        return [tf.TensorSpec(v.shape, tf.float32, name=f"{prefix}{j:02d}")
                for j, v in enumerate(self.w)]


class ClientHalf(_Half):
    """Client layers; signatures forward, backward, grads, apply, get_weights, set_weights."""

    def __init__(self, spec: ModelSpec, cut: int, weights: list[np.ndarray], *,
                 max_batch: int) -> None:
        super().__init__(spec, 0, cut, weights, max_batch=max_batch, name="client")
        channels, length = spec.input_shape
        x = tf.TensorSpec([max_batch, channels, length], tf.float32, name="x")
        x1 = tf.TensorSpec([1, channels, length], tf.float32, name="x")
        g = tf.TensorSpec([max_batch, *self.out_shape], tf.float32, name="grad")
        lr = tf.TensorSpec([], tf.float32, name="lr")
        self.sig_fns = {
            "forward": tf.function(self._sig_forward, input_signature=[x]),
            "forward_single": tf.function(self._sig_forward, input_signature=[x1]),
            "backward": tf.function(self._sig_backward, input_signature=[x, g, lr]),
            "grads": tf.function(self._sig_grads, input_signature=[x, g]),
            "apply": tf.function(self._sig_apply,
                                 input_signature=[*self.weight_specs("g"), lr]),
            "get_weights": tf.function(self._weights_dict, input_signature=[]),
            "set_weights": tf.function(self._sig_set, input_signature=self.weight_specs("w")),
        }

    def _input(self, x: Tensor) -> Tensor:
        return tf.transpose(x, [0, 2, 1])  # (B, C, L) -> channels-last (B, L, C)

    def _sig_forward(self, x: Tensor) -> dict[str, Tensor]:
        out, _ = self._forward(self._input(x))
        return {"activations": out}

    def _sig_backward(self, x: Tensor, grad: Tensor, lr: Tensor) -> dict[str, Tensor]:
        _, caches = self._forward(self._input(x))
        _, grads = self._backward(caches, grad, per_sample=False, need_dx=False)
        for v, g in zip(self.w, grads, strict=True):
            v.assign_sub(lr * g)
        return {"applied": tf.constant(1, tf.int32)}

    def _sig_grads(self, x: Tensor, grad: Tensor) -> dict[str, Tensor]:
        _, caches = self._forward(self._input(x))
        _, grads = self._backward(caches, grad, per_sample=True, need_dx=False)
        return {f"g{j:02d}": g for j, g in enumerate(grads)}

    def _sig_apply(self, *args: Tensor) -> dict[str, Tensor]:
        *grads, lr = args
        for v, g in zip(self.w, grads, strict=True):
            v.assign_sub(lr * g)
        return {"applied": tf.constant(1, tf.int32)}

    def _sig_set(self, *ws: Tensor) -> dict[str, Tensor]:
        self._assign(list(ws))
        return {"applied": tf.constant(1, tf.int32)}


class ServerHalf(_Half):
    """Server layers + softmax cross-entropy + Adam; signatures train, predict, weights, reset."""

    def __init__(self, spec: ModelSpec, cut: int, weights: list[np.ndarray], *, max_batch: int,
                 beta1: float = 0.9, beta2: float = 0.999, epsilon: float = 1e-7) -> None:
        super().__init__(spec, cut, len(spec.layers), weights, max_batch=max_batch,
                         name="server")
        self.beta1, self.beta2, self.epsilon = beta1, beta2, epsilon
        self.m = [tf.Variable(np.zeros(v.shape, np.float32), name=f"m{j:02d}")
                  for j, v in enumerate(self.w)]
        self.v = [tf.Variable(np.zeros(v.shape, np.float32), name=f"v{j:02d}")
                  for j, v in enumerate(self.w)]
        self.step = tf.Variable(np.float32(0.0), name="step")
        a = tf.TensorSpec([max_batch, *self.in_shape], tf.float32, name="activations")
        a1 = tf.TensorSpec([1, *self.in_shape], tf.float32, name="activations")
        y = tf.TensorSpec([max_batch], tf.int32, name="labels")
        lr = tf.TensorSpec([], tf.float32, name="lr")
        self.sig_fns = {
            "train": tf.function(self._sig_train, input_signature=[a, y, lr]),
            "predict": tf.function(self._sig_predict, input_signature=[a]),
            "predict_single": tf.function(self._sig_predict, input_signature=[a1]),
            "get_weights": tf.function(self._weights_dict, input_signature=[]),
            "set_weights": tf.function(self._sig_set, input_signature=self.weight_specs("w")),
            "reset_optimizer": tf.function(self._sig_reset, input_signature=[]),
        }

    def _sig_predict(self, activations: Tensor) -> dict[str, Tensor]:
        logits, _ = self._forward(activations)
        return {"probabilities": tf.nn.softmax(logits)}

    def loss_and_dlogits(self, logits: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
        """Mean cross-entropy over rows with label >= 0 and its gradient w.r.t. the logits."""
        onehot = tf.one_hot(labels, self.spec.num_classes, dtype=tf.float32)  # -1 -> zero row
        mask = tf.reduce_sum(onehot, axis=1)
        count = tf.maximum(tf.reduce_sum(mask), 1.0)
        shift = logits - tf.reduce_max(logits, axis=1, keepdims=True)
        lse = tf.math.log(tf.reduce_sum(tf.exp(shift), axis=1))
        picked = tf.reduce_sum(shift * onehot, axis=1)
        loss = tf.reduce_sum((lse - picked) * mask) / count
        dlogits = (tf.nn.softmax(logits) - onehot) * tf.expand_dims(mask / count, 1)
        return loss, dlogits

    def _sig_train(self, activations: Tensor, labels: Tensor, lr: Tensor) -> dict[str, Tensor]:
        logits, caches = self._forward(activations)
        loss, dlogits = self.loss_and_dlogits(logits, labels)
        dact, grads = self._backward(caches, dlogits, per_sample=False, need_dx=True)
        self.step.assign_add(1.0)
        t = self.step.read_value()
        b1, b2 = self.beta1, self.beta2
        lr_t = lr * tf.sqrt(1.0 - tf.pow(b2, t)) / (1.0 - tf.pow(b1, t))
        for w, m, v, g in zip(self.w, self.m, self.v, grads, strict=True):
            m_new = m + (g - m) * (1.0 - b1)
            v_new = v + (g * g - v) * (1.0 - b2)
            m.assign(m_new)
            v.assign(v_new)
            w.assign_sub(lr_t * m_new / (tf.sqrt(v_new) + self.epsilon))
        return {"loss": loss, "grad_activations": dact}

    def _sig_set(self, *ws: Tensor) -> dict[str, Tensor]:
        self._assign(list(ws))
        return {"applied": tf.constant(1, tf.int32)}

    def _sig_reset(self) -> dict[str, Tensor]:
        for m, v in zip(self.m, self.v, strict=True):
            m.assign(tf.zeros_like(m))
            v.assign(tf.zeros_like(v))
        self.step.assign(0.0)
        return {"applied": tf.constant(1, tf.int32)}


def build_halves(spec: ModelSpec, cut: int, *, max_batch: int, seed: int,
                 weights: list[np.ndarray] | None = None) -> tuple[ClientHalf, ServerHalf]:
    """Client and server halves at ``cut`` with shared initial weights from ``seed``."""
    spec.check_cut(cut)
    ws = initial_weights(spec, seed=seed) if weights is None else weights
    client = ClientHalf(spec, cut, ws[: 2 * cut], max_batch=max_batch)
    server = ServerHalf(spec, cut, ws[2 * cut:], max_batch=max_batch)
    return client, server


class FullModel(_Half):
    """The whole model on the device (``fl-dpsgd``: federated tier, cut = number of layers).

    Signatures: ``predict`` / ``predict_single`` (class probabilities),
    ``per_example_grads`` (each example's gradient of ITS OWN cross-entropy,
    not the batch mean, as ``(B, *w.shape)`` per weight; rows labelled ``-1``
    are padding and get exactly zero), ``apply`` (``w -= lr * g``, plain SGD
    with a gradient already aggregated, e.g. by DP-SGD), ``get_weights`` and
    ``set_weights``. The device never trains without clipping and noise, so
    there is no fused train step.
    """

    def __init__(self, spec: ModelSpec, weights: list[np.ndarray], *, max_batch: int) -> None:
        super().__init__(spec, 0, len(spec.layers), weights, max_batch=max_batch, name="full")
        channels, length = spec.input_shape
        x = tf.TensorSpec([max_batch, channels, length], tf.float32, name="x")
        x1 = tf.TensorSpec([1, channels, length], tf.float32, name="x")
        y = tf.TensorSpec([max_batch], tf.int32, name="labels")
        lr = tf.TensorSpec([], tf.float32, name="lr")
        self.sig_fns = {
            "predict": tf.function(self._sig_predict, input_signature=[x]),
            "predict_single": tf.function(self._sig_predict, input_signature=[x1]),
            "per_example_grads": tf.function(self._sig_per_example, input_signature=[x, y]),
            "apply": tf.function(self._sig_apply,
                                 input_signature=[*self.weight_specs("g"), lr]),
            "get_weights": tf.function(self._weights_dict, input_signature=[]),
            "set_weights": tf.function(self._sig_set, input_signature=self.weight_specs("w")),
        }

    def _input(self, x: Tensor) -> Tensor:
        return tf.transpose(x, [0, 2, 1])  # (B, C, L) -> channels-last (B, L, C)

    def _sig_predict(self, x: Tensor) -> dict[str, Tensor]:
        logits, _ = self._forward(self._input(x))
        return {"probabilities": tf.nn.softmax(logits)}

    def _sig_per_example(self, x: Tensor, labels: Tensor) -> dict[str, Tensor]:
        logits, caches = self._forward(self._input(x))
        onehot = tf.one_hot(labels, self.spec.num_classes, dtype=tf.float32)  # -1 -> zero row
        mask = tf.reduce_sum(onehot, axis=1, keepdims=True)
        dlogits = (tf.nn.softmax(logits) - onehot) * mask  # d(own loss)/d(own logits)
        _, grads = self._backward(caches, dlogits, per_sample=True, need_dx=False)
        return {f"g{j:02d}": g for j, g in enumerate(grads)}

    def _sig_apply(self, *args: Tensor) -> dict[str, Tensor]:
        *grads, lr = args
        for v, g in zip(self.w, grads, strict=True):
            v.assign_sub(lr * g)
        return {"applied": tf.constant(1, tf.int32)}

    def _sig_set(self, *ws: Tensor) -> dict[str, Tensor]:
        self._assign(list(ws))
        return {"applied": tf.constant(1, tf.int32)}


def build_full(spec: ModelSpec, *, max_batch: int, seed: int,
               weights: list[np.ndarray] | None = None) -> FullModel:
    """The whole model with initial weights from ``seed`` (the same as :func:`build_halves`)."""
    ws = initial_weights(spec, seed=seed) if weights is None else weights
    return FullModel(spec, ws, max_batch=max_batch)
