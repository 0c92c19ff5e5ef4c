"""Edge nodes never need TensorFlow: the runtime path must not import it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]

_SCRIPT = """
import json, sys
import numpy as np
from models.manifest import artifact_dir, list_artifacts, load_manifest
from models.runtime import ClientRuntime, ServerRuntime
from models.cli import main
m = load_manifest(artifact_dir("cnn1d", 1))
c = ClientRuntime.from_manifest(m)
s = ServerRuntime.from_manifest(m)
x = c.normalise(np.random.default_rng(0).standard_normal((4, *m.input_shape)))
loss, g = s.train(c.forward(x), np.array([0, 1, 2, 3]), lr=1e-3)
c.backward(x, g, lr=0.01)
c.apply([p.sum(0) for p in c.grads(x, g)], lr=0.01)
rc = main(["inspect", str(artifact_dir("mlp", 1))])
from models.full_runtime import FullRuntime
from models.manifest import full_artifact_dir
f = FullRuntime.from_manifest(full_artifact_dir("mlp_dp"))
f.apply([p.sum(0) for p in f.per_example_grads(f.normalise(
    np.random.default_rng(1).standard_normal((3, *f.manifest.input_shape))),
    np.array([0, 1, 2]))], lr=0.01)
rc += main(["inspect", str(full_artifact_dir("mlp_dp"))])
heavy = sorted(k for k in sys.modules if k.split(".")[0] in ("tensorflow", "keras", "tf_keras"))
print(json.dumps({"heavy": heavy, "loss": loss, "rc": rc}))
"""


def test_runtime_step_does_not_import_tensorflow() -> None:
    proc = subprocess.run([sys.executable, "-c", _SCRIPT], cwd=REPO, capture_output=True,
                          text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["heavy"] == []
    assert result["rc"] == 0
    assert result["loss"] > 0
