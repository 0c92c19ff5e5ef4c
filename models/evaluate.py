"""Held-out evaluation of a (client half, server half) pair with LiteRT.

Adapter (reads the dataset files, runs the interpreters). The evaluation
set is the ``<dataset>_TEST.ts`` split named by the manifest, windowed as
the manifest says; accuracy = share of windows whose arg-max class equals
the label.

In a DP session devices clip every activation row to the session's clip norm
before adding noise, so the server half is trained on clipped rows. The
evaluator applies the same clipping (``clip_norm``), but not the noise: it
measures the model on the inputs the server half is trained for, in
expectation. :func:`evaluation_clip` reads that norm from the session.
The runtimes are private to this evaluator (one thread).
Validators use the same class on their own held-out files.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from models.clip import clip_rows
from models.data import WindowConfig, load_windows
from models.manifest import Manifest
from models.runtime import ClientRuntime, ServerRuntime

__all__ = ["HeldOutEvaluator", "evaluation_clip"]


def evaluation_clip(dp_policy: Mapping[str, float]) -> float | None:
    """The clip norm evaluators apply: the session's, when it requires noise at all."""
    if float(dp_policy.get("min_noise_multiplier", 0.0)) > 0:
        return float(dp_policy["clip"])
    return None


class HeldOutEvaluator:
    """``evaluator(client_weights, server_weights) -> accuracy`` on held-out windows."""

    def __init__(
        self,
        manifest: Manifest,
        *,
        data_dir: Path,
        max_windows: int | None = None,
        clip_norm: float | None = None,
    ) -> None:
        w = manifest.window
        cfg = WindowConfig(
            dataset=manifest.dataset,
            length=int(w.get("length", manifest.input_shape[1])),
            mode=w.get("mode", "pad"),
            per_window=bool(w.get("per_window", True)),
        )
        win = load_windows(cfg, data_dir=data_dir)
        x, y = win.x_test, win.y_test
        if max_windows is not None:
            x, y = x[:max_windows], y[:max_windows]
        self.client = ClientRuntime.from_manifest(manifest)
        self.server = ServerRuntime.from_manifest(manifest)
        self.x = self.client.normalise(x)
        self.y = np.asarray(y, np.int64)
        self.batch = manifest.max_batch
        self.clip_norm = clip_norm

    def __call__(
        self, client_weights: Sequence[np.ndarray], server_weights: Sequence[np.ndarray]
    ) -> float:
        self.client.set_weights(client_weights)
        self.server.set_weights(server_weights)
        correct = 0
        for i in range(0, len(self.x), self.batch):
            a = self.client.forward(self.x[i : i + self.batch])
            if self.clip_norm is not None:
                rows = clip_rows(a.reshape(a.shape[0], -1), clip_norm=self.clip_norm)
                a = rows.reshape(a.shape).astype(np.float32)
            p = self.server.predict(a)
            correct += int(np.sum(np.argmax(p, axis=1) == self.y[i : i + self.batch]))
        return correct / max(1, len(self.x))
