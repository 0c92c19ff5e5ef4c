"""SFL with the real LiteRT halves on real PLAID windows: the server half learns.

Devices are simulated in-process with the real client runtime (forward +
backward with the server's gradient), two groups, SFLV1 replicas averaged per
round; the held-out evaluator is the one validators and the server use.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from models.data import WindowConfig, load_windows
from models.evaluate import HeldOutEvaluator
from models.fedavg import WeightedUpdate, fedavg
from models.manifest import Manifest, list_artifacts
from models.runtime import ClientRuntime, ServerRuntime
from server.sfl import SflMode, SplitTrainer

pytestmark = pytest.mark.integration


def _manifest() -> Manifest:
    arts = [m for m in list_artifacts() if m.model_id == "cnn1d" and m.cut == 1]
    if not arts:
        pytest.fail("model artifacts are missing (models/artifacts is part of the package)")
    return arts[0]


@pytest.mark.parametrize("mode", [SflMode.SFLV1, SflMode.SFLV2])
def test_split_training_on_plaid_raises_heldout_accuracy(mode: SflMode, data_dir: Path) -> None:
    m = _manifest()
    w = m.window
    win = load_windows(
        WindowConfig(
            dataset=m.dataset,
            length=int(w["length"]),
            mode=w["mode"],
            per_window=bool(w["per_window"]),
        ),
        data_dir=data_dir,
    )
    groups = ("g1", "g2")
    clients = {g: ClientRuntime.from_manifest(m) for g in groups}
    trainer = SplitTrainer(
        mode=mode, groups=groups, make_half=lambda: ServerRuntime.from_manifest(m), lr=0.003
    )
    evaluate = HeldOutEvaluator(m, data_dir=data_dir, max_windows=400)
    start = clients["g1"].get_weights()
    for c in clients.values():
        c.set_weights(start)
    before = evaluate(start, trainer.weights())
    rng = np.random.default_rng(0)
    x_all = clients["g1"].normalise(win.x_train)
    shards = np.array_split(rng.permutation(len(x_all)), 2)
    b = m.max_batch
    for _round in range(3):
        for g, idx in zip(groups, shards, strict=True):
            for i in range(0, len(idx) - b + 1, b):
                sel = idx[i : i + b]
                a = clients[g].forward(x_all[sel])
                _, grad = trainer.train(g, a, win.y_train[sel].astype(np.int32))
                clients[g].backward(x_all[sel], grad, lr=0.003)
        server_w = trainer.end_round()
        client_w = fedavg(
            [
                WeightedUpdate(weights=clients[g].get_weights(), num_samples=len(s), source=g)
                for g, s in zip(groups, shards, strict=True)
            ]
        )
        for c in clients.values():
            c.set_weights(client_w)
    after = evaluate(client_w, server_w)
    assert 0.0 <= before <= 1.0
    print(f"{mode.value}: held-out accuracy {before:.3f} -> {after:.3f}")
    assert after > before + 0.2 and after > 0.5, (before, after)
