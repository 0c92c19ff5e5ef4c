"""Architecture descriptions of the model zoo (pure, no TensorFlow).

A model is a chain of layers; a *cut* ``N`` puts the first ``N`` layers on
the client (the sensor node) and the rest on the server. Shapes follow the
runtime convention: the client input is ``(batch, channels, length)``; inside
the network tensors are channels-last ``(batch, time, features)`` for
convolutions and ``(batch, features)`` for dense layers. A dense layer that
follows a 3-D tensor flattens it first (row-major over ``(time, features)``).

This module is shared by the TensorFlow build code (``zoo``, ``export``,
``baseline``) and by anyone who needs the shapes without TensorFlow.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from protocol.errors import ConfigError

LayerKind = Literal["conv", "dense"]


@dataclass(frozen=True, slots=True, kw_only=True)
class LayerSpec:
    """One layer: a 1-D convolution ("same"-style zero padding) or a dense layer, ReLU optional.

    ``unit_norm`` (dense layers only) divides each output row, after the ReLU if
    any, by its L2 norm (``x * min(1/||x||, 1e12)``, Keras' ``UnitNormalization``):
    every row then has norm exactly 1, so a per-row clip to ``C >= 1`` loses
    nothing and the Gaussian noise of local DP meets a signal of known size.
    """

    kind: LayerKind
    units: int
    kernel: int = 1
    stride: int = 1
    relu: bool = True
    unit_norm: bool = False

    def __post_init__(self) -> None:
        problems = []
        if self.kind not in ("conv", "dense"):
            problems.append(f"unknown layer kind {self.kind!r}")
        if self.units < 1:
            problems.append("units must be >= 1")
        if self.kernel < 1 or self.stride < 1:
            problems.append("kernel and stride must be >= 1")
        if self.unit_norm and self.kind != "dense":
            problems.append("unit_norm is supported on dense layers only")
        if problems:
            raise ConfigError(problems)


@dataclass(frozen=True, slots=True, kw_only=True)
class ModelSpec:
    """A whole model: input shape ``(channels, length)``, class count, layers and cut points."""

    model_id: str
    input_shape: tuple[int, int]
    num_classes: int
    layers: tuple[LayerSpec, ...]
    cuts: tuple[int, ...]
    shapes: tuple[tuple[int, ...], ...] = field(init=False)

    def __post_init__(self) -> None:
        problems = []
        channels, length = self.input_shape
        if channels < 1 or length < 1:
            problems.append(f"input_shape must be positive, got {self.input_shape}")
        if self.num_classes < 2:
            problems.append("num_classes must be >= 2")
        if not self.layers:
            problems.append("a model needs at least one layer")
        elif self.layers[-1].kind != "dense" or self.layers[-1].relu or self.layers[-1].unit_norm:
            problems.append("the last layer must be dense without ReLU (the logits)")
        for cut in self.cuts:
            if not 1 <= cut < len(self.layers):
                problems.append(f"cut {cut} outside 1..{len(self.layers) - 1}")
        if problems:
            raise ConfigError(problems)
        shapes: list[tuple[int, ...]] = [(length, channels)]
        for layer in self.layers:
            prev = shapes[-1]
            if layer.kind == "conv":
                if len(prev) != 2:
                    raise ConfigError("a convolution cannot follow a dense layer")
                out_len = conv_out_len(prev[0], layer.kernel, layer.stride)
                shapes.append((out_len, layer.units))
            else:
                shapes.append((layer.units,))
        if shapes[-1] != (self.num_classes,):
            object.__setattr__(self, "shapes", ())
            raise ConfigError(f"last layer has {shapes[-1]} units, expected {self.num_classes}")
        object.__setattr__(self, "shapes", tuple(shapes))

    def activation_shape(self, cut: int) -> tuple[int, ...]:
        """Per-sample shape of what the client sends at this cut (channels-last)."""
        self.check_cut(cut)
        return self.shapes[cut]

    def check_cut(self, cut: int) -> None:
        """Raise :class:`ConfigError` if ``cut`` is not one of this model's cut points."""
        if cut not in self.cuts:
            raise ConfigError(f"model {self.model_id} has cuts {self.cuts}, not {cut}")

    def weight_shapes(self, start: int, stop: int) -> tuple[tuple[int, ...], ...]:
        """Shapes ``(kernel, bias, kernel, bias, ...)`` of layers ``start..stop-1``."""
        out: list[tuple[int, ...]] = []
        for i in range(start, stop):
            layer = self.layers[i]
            fan_in = _fan_in(self.shapes[i], layer)
            out += [(fan_in, layer.units), (layer.units,)]
        return tuple(out)


def _fan_in(in_shape: tuple[int, ...], layer: LayerSpec) -> int:
    if layer.kind == "conv":
        return layer.kernel * in_shape[1]
    size = 1
    for d in in_shape:
        size *= d
    return size


def conv_out_len(length: int, kernel: int, stride: int) -> int:
    """Output length of a strided convolution with ``(kernel - 1) // 2`` zeros on the left."""
    pad = (kernel - 1) // 2
    return (length + 2 * pad - kernel) // stride + 1


def conv_padding(kernel: int) -> tuple[int, int]:
    """Zeros added on the left and right of the time axis."""
    pad = (kernel - 1) // 2
    return pad, pad


def conv_indices(length: int, kernel: int, stride: int, out_len: int) -> np.ndarray:
    """im2col indices: ``idx[t, k]`` is the input step under tap ``k`` of output ``t``.

    Positions in the padding point at ``length``, the appended zero row.
    """
    left, _ = conv_padding(kernel)
    t = np.arange(out_len)[:, None] * stride + np.arange(kernel)[None, :] - left
    return np.where((t < 0) | (t >= length), length, t).astype(np.int32)


def cnn1d(*, input_shape: tuple[int, int], num_classes: int) -> ModelSpec:
    """1-D CNN: three strided convolutions then a dense classifier.

    Cut 1 leaves one cheap convolution on the node (weak nodes); cut 2 two.
    """
    layers = (
        LayerSpec(kind="conv", units=8, kernel=7, stride=4),
        LayerSpec(kind="conv", units=16, kernel=5, stride=2),
        LayerSpec(kind="conv", units=32, kernel=5, stride=2),
        LayerSpec(kind="dense", units=num_classes, relu=False),
    )
    return ModelSpec(model_id="cnn1d", input_shape=input_shape, num_classes=num_classes,
                     layers=layers, cuts=(1, 2))


def mlp(*, input_shape: tuple[int, int], num_classes: int) -> ModelSpec:
    """Multilayer perceptron on the flattened window; cut 1 = one hidden layer on the node."""
    layers = (
        LayerSpec(kind="dense", units=64),
        LayerSpec(kind="dense", units=32),
        LayerSpec(kind="dense", units=num_classes, relu=False),
    )
    return ModelSpec(model_id="mlp", input_shape=input_shape, num_classes=num_classes,
                     layers=layers, cuts=(1, 2))


def mlp_dp(*, input_shape: tuple[int, int], num_classes: int) -> ModelSpec:
    """Funnel for local DP: both cuts are narrow, unit-norm bottlenecks; a linear server head.

    Cut 1 (weakest nodes) sends 16 numbers: one ReLU layer, L2-normalised.
    Cut 2 sends 8 numbers: a second, linear layer, L2-normalised. Every row has
    norm 1, so the agents' per-row clip (``C = 1``) never rescales it, and the
    noise ``N(0, (z*C)^2)`` per coordinate has total norm ``z*sqrt(d)`` (d = 16
    or 8) against a signal of norm 1, instead of ``z*sqrt(512)`` against a
    clipped 512-dimensional activation (cnn1d). The server head is linear (the
    logits layer; at cut 1 also the 8-unit layer): hidden ReLU layers on the
    server fitted the noise in our measurements (docs/models.md).
    """
    layers = (
        LayerSpec(kind="dense", units=16, unit_norm=True),
        LayerSpec(kind="dense", units=8, relu=False, unit_norm=True),
        LayerSpec(kind="dense", units=num_classes, relu=False),
    )
    return ModelSpec(model_id="mlp_dp", input_shape=input_shape, num_classes=num_classes,
                     layers=layers, cuts=(1, 2))


ZOO = {"cnn1d": cnn1d, "mlp": mlp, "mlp_dp": mlp_dp}


def model_spec(model_id: str, *, input_shape: tuple[int, int], num_classes: int) -> ModelSpec:
    """Look up a zoo architecture by id; :class:`ConfigError` if unknown."""
    try:
        factory = ZOO[model_id]
    except KeyError:
        raise ConfigError(f"unknown model {model_id!r}; known: {sorted(ZOO)}") from None
    return factory(input_shape=input_shape, num_classes=num_classes)
