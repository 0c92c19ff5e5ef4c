"""Centralised, non-private baselines: Keras vs the two LiteRT halves chained (build time, TF).

Both backends start from the same seeded initial weights, see the same
mini-batches in the same order (a seeded permutation per epoch) and use the
same optimisers (SGD on the client layers, Adam on the server layers). The
Keras side uses stock layers and TensorFlow autodiff; the LiteRT side runs
``client.forward -> server.train -> client.backward`` on exported artifacts,
exactly what a node and the server do, minus the network and the privacy
mechanisms. Matching test accuracy shows that on-device training is correct.
"""

from __future__ import annotations

import logging
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from models.data import WindowConfig, Windows, load_windows
from models.export import DEFAULT_MAX_BATCH, export_pair
from models.reference import KerasTrainer
from models.runtime import ClientRuntime, ServerRuntime
from models.spec import ModelSpec, model_spec
from models.zoo import initial_weights
from protocol.errors import ConfigError

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True, kw_only=True)
class TrainConfig:
    """Hyper-parameters shared by both backends."""

    epochs: int = 60
    batch: int = DEFAULT_MAX_BATCH
    client_lr: float = 0.1
    server_lr: float = 5e-3
    seed: int = 0

    def __post_init__(self) -> None:
        problems = []
        if self.epochs < 1:
            problems.append("epochs must be >= 1")
        if not 1 <= self.batch <= DEFAULT_MAX_BATCH:
            problems.append(f"batch must be in 1..{DEFAULT_MAX_BATCH}")
        if not (self.client_lr > 0 and self.server_lr > 0):
            problems.append("learning rates must be > 0")
        if problems:
            raise ConfigError(problems)


@dataclass(frozen=True, slots=True, kw_only=True)
class BaselineResult:
    """Test accuracy and final training loss of one backend on one dataset."""

    backend: str  # "keras" | "litert"
    model_id: str
    cut: int
    dataset: str
    accuracy: float
    final_loss: float
    seconds: float


def batches(n: int, batch: int, rng: np.random.Generator) -> Iterator[np.ndarray]:
    """One epoch of index batches from a random permutation (last batch may be short)."""
    perm = rng.permutation(n)
    for i in range(0, n, batch):
        yield perm[i:i + batch]


def spec_for(model_id: str, windows: Windows) -> ModelSpec:
    """Zoo architecture sized for the dataset's channels, window length and classes."""
    return model_spec(model_id, input_shape=(windows.x_train.shape[1], windows.x_train.shape[2]),
                      num_classes=windows.num_classes)


def train_keras(spec: ModelSpec, cut: int, windows: Windows, cfg: TrainConfig) -> BaselineResult:
    """Train the Keras reference; returns its test accuracy."""
    t0 = time.perf_counter()
    x_train, x_test = windows.normalised()
    trainer = KerasTrainer(spec, cut, initial_weights(spec, seed=cfg.seed),
                           client_lr=cfg.client_lr, server_lr=cfg.server_lr)
    rng = np.random.default_rng(cfg.seed)
    loss = float("nan")
    for _ in range(cfg.epochs):
        for idx in batches(len(x_train), cfg.batch, rng):
            loss = trainer.train_step(x_train[idx], windows.y_train[idx])
    pred = trainer.predict(x_test).argmax(axis=1)
    acc = float(np.mean(pred == windows.y_test))
    return BaselineResult(backend="keras", model_id=spec.model_id, cut=cut,
                          dataset="", accuracy=acc, final_loss=loss,
                          seconds=time.perf_counter() - t0)


def train_litert(artifacts: str | Path, windows: Windows, cfg: TrainConfig) -> BaselineResult:
    """Train the exported halves chained in this process; returns the test accuracy."""
    t0 = time.perf_counter()
    client = ClientRuntime.from_manifest(artifacts)
    server = ServerRuntime.from_manifest(artifacts)
    x_train = client.normalise(windows.x_train)
    x_test = client.normalise(windows.x_test)
    rng = np.random.default_rng(cfg.seed)
    loss = float("nan")
    for _ in range(cfg.epochs):
        for idx in batches(len(x_train), cfg.batch, rng):
            x = x_train[idx]
            loss, grad = server.train(client.forward(x), windows.y_train[idx], lr=cfg.server_lr)
            client.backward(x, grad, lr=cfg.client_lr)
    acc = float(np.mean(predict_litert(client, server, x_test).argmax(axis=1) == windows.y_test))
    m = client.manifest
    return BaselineResult(backend="litert", model_id=m.model_id, cut=m.cut, dataset=m.dataset,
                          accuracy=acc, final_loss=loss, seconds=time.perf_counter() - t0)


def predict_litert(client: ClientRuntime, server: ServerRuntime, x: np.ndarray) -> np.ndarray:
    """Class probabilities for normalised windows, in chunks of ``max_batch``."""
    step = client.manifest.max_batch
    parts = [server.predict(client.forward(x[i:i + step])) for i in range(0, len(x), step)]
    return np.concatenate(parts)


def run_baseline(model_id: str, cut: int, window: WindowConfig, cfg: TrainConfig, *,
                 data_dir: str | Path | None = None) -> dict[str, Any]:
    """Both backends on one dataset, from freshly exported artifacts (same seed)."""
    windows = load_windows(window, data_dir=data_dir)
    spec = spec_for(model_id, windows)
    keras_res = train_keras(spec, cut, windows, cfg)
    with tempfile.TemporaryDirectory(prefix="splitfed-baseline-") as tmp:
        export_pair(spec, cut, out_dir=tmp, seed=cfg.seed, norm_mean=windows.mean,
                    norm_std=windows.std, norm_per_window=windows.per_window,
                    dataset=window.dataset, window=window.as_dict())
        lite_res = train_litert(tmp, windows, cfg)
    out = {"keras": asdict(keras_res), "litert": asdict(lite_res),
           "window": {"dataset": window.dataset, **window.as_dict()}, "train": asdict(cfg)}
    out["keras"]["dataset"] = window.dataset
    log.info("%s cut %d on %s: keras %.3f, litert %.3f", model_id, cut, window.dataset,
             keras_res.accuracy, lite_res.accuracy)
    return out
