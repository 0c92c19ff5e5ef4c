"""The same architectures as ordinary Keras models (reference for gradient checks and baselines).

Built from standard Keras layers (``ZeroPadding1D`` + ``Conv1D`` + ``ReLU``,
``Flatten``, ``Dense``) and trained with TensorFlow autodiff and Keras
optimizers: nothing here shares code with the hand-written backward passes of
:mod:`models.zoo`, so agreement between the two is evidence that the LiteRT
artifacts compute the right gradients. Optimisers match the artifacts:
SGD on the client layers, Adam on the server layers.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from models.spec import ModelSpec, conv_padding


def keras_model(spec: ModelSpec, weights: Sequence[np.ndarray]) -> keras.Model:
    """Keras model of ``spec`` (input ``(C, L)``, output logits) holding ``weights``."""
    channels, length = spec.input_shape
    inp = keras.Input(shape=(channels, length), dtype="float32")
    h = keras.layers.Permute((2, 1))(inp)
    params: list[np.ndarray] = []
    for i, layer in enumerate(spec.layers):
        kern, bias = weights[2 * i], weights[2 * i + 1]
        if layer.kind == "conv":
            h = keras.layers.ZeroPadding1D(conv_padding(layer.kernel))(h)
            conv = keras.layers.Conv1D(layer.units, layer.kernel, strides=layer.stride,
                                       padding="valid")
            h = conv(h)
            in_ch = spec.shapes[i][1]
            params += [kern.reshape(layer.kernel, in_ch, layer.units), bias]
        else:
            if len(h.shape) > 2:
                h = keras.layers.Flatten()(h)
            h = keras.layers.Dense(layer.units)(h)
            params += [kern, bias]
        if layer.relu:
            h = keras.layers.ReLU()(h)
        if layer.unit_norm:
            h = keras.layers.UnitNormalization()(h)
    model = keras.Model(inp, h)
    model.set_weights(params)
    return model


def flat_weights(spec: ModelSpec, model: keras.Model) -> list[np.ndarray]:
    """The model's weights in zoo layout (conv kernels as ``(K*C, F)``)."""
    out = []
    for w in model.get_weights():
        out.append(w.reshape(-1, w.shape[-1]) if w.ndim == 3 else w)
    return out


class KerasTrainer:
    """Central training of a Keras model with SGD on layers ``< cut`` and Adam on the rest."""

    def __init__(self, spec: ModelSpec, cut: int, weights: Sequence[np.ndarray], *,
                 client_lr: float, server_lr: float, epsilon: float = 1e-7) -> None:
        self.spec = spec
        self.model = keras_model(spec, weights)
        n_client = 2 * cut
        self.client_vars = self.model.trainable_variables[:n_client]
        self.server_vars = self.model.trainable_variables[n_client:]
        self.sgd = keras.optimizers.SGD(learning_rate=client_lr)
        self.adam = keras.optimizers.Adam(learning_rate=server_lr, epsilon=epsilon)
        self._step = tf.function(self._train_step, reduce_retracing=True)

    def _train_step(self, x: Any, y: Any) -> Any:
        with tf.GradientTape() as tape:
            logits = self.model(x, training=True)
            loss = tf.reduce_mean(
                tf.nn.sparse_softmax_cross_entropy_with_logits(labels=y, logits=logits))
        grads = tape.gradient(loss, [*self.client_vars, *self.server_vars])
        n = len(self.client_vars)
        self.sgd.apply(grads[:n], self.client_vars)
        self.adam.apply(grads[n:], self.server_vars)
        return loss

    def train_step(self, x: np.ndarray, y: np.ndarray) -> float:
        """One step on a batch; returns the mean loss before the update."""
        return float(self._step(tf.constant(x, tf.float32), tf.constant(y, tf.int32)))

    def predict(self, x: np.ndarray) -> np.ndarray:
        """Class probabilities."""
        logits = self.model(tf.constant(x, tf.float32), training=False)
        return np.asarray(tf.nn.softmax(logits))


def reference_gradients(spec: ModelSpec, weights: Sequence[np.ndarray], x: np.ndarray,
                        y: np.ndarray, cut: int) -> tuple[float, list[np.ndarray], np.ndarray]:
    """TF autodiff: mean loss, gradients of all weights (zoo layout), dL/d(cut activations)."""
    model = keras_model(spec, weights)
    # Split the Keras graph at the cut: the output of layer `cut` (after its ReLU and
    # normalisation, i.e. the last Keras layer before the next Conv1D/Dense or padding).
    sub = [lay for lay in model.layers if isinstance(lay, keras.layers.Conv1D | keras.layers.Dense)]
    after = model.layers.index(sub[cut]) if cut < len(sub) else len(model.layers)
    while isinstance(model.layers[after - 1], keras.layers.ZeroPadding1D | keras.layers.Flatten):
        after -= 1
    cut_tensor_layer = model.layers[after - 1]
    probe = keras.Model(model.inputs, [cut_tensor_layer.output, model.output])
    xt = tf.constant(x, tf.float32)
    with tf.GradientTape() as tape:
        act, logits = probe(xt)
        loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(
            labels=tf.constant(y, tf.int32), logits=logits))
    grads = tape.gradient(loss, [*model.trainable_variables, act])
    ws = [np.asarray(g) for g in grads[:-1]]
    ws = [g.reshape(-1, g.shape[-1]) if g.ndim == 3 else g for g in ws]
    return float(loss), ws, np.asarray(grads[-1])
