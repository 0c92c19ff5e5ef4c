"""A fresh ``git clone`` of HEAD runs the demo with nothing beside it.

The README's commands must work for someone who only cloned the repository:
no ``../shared`` folder, no ``SPLITFED_DATA_DIR``. The clone reuses this
interpreter's environment (installing a second venv would cost minutes and
1.5 GB): its code is put first on ``PYTHONPATH``, and a probe checks that the
clone's modules, not this checkout's, are the ones imported. The demo's quick
variant (2 rounds, non-private, the ``mlp`` model at lr 0.05) then has to
finish, verify its ledger and beat the majority class by a margin.

About 40 s on the development VM: marked slow, run by ``.ci/run``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from models.datasets.ucr import load_split

pytestmark = [pytest.mark.e2e, pytest.mark.integration, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
QUICK = ["--rounds", "2", "--non-private", "--model", "mlp", "--lr", "0.05",
         "--steps-per-round", "6", "--batch-size", "16", "--seed", "1"]


def _git(*args: str, cwd: Path) -> str:
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True,
                          timeout=120).stdout.strip()


def _clone_env(clone: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SPLITFED_")}
    env["PYTHONPATH"] = str(clone)
    return env


def test_fresh_clone_runs_the_quick_demo_and_learns(tmp_path: Path) -> None:
    head = _git("rev-parse", "HEAD", cwd=REPO)
    clone = tmp_path / "iiot-splitfed"
    _git("clone", "--quiet", "--no-checkout", str(REPO), str(clone), cwd=tmp_path)
    _git("checkout", "--quiet", head, cwd=clone)
    assert not (clone.parent / "shared").exists()
    env = _clone_env(clone)

    probe = subprocess.run(
        [sys.executable, "-c", "import deploy.stack_cli, models.data as d; "
         "print(deploy.stack_cli.__file__); print(d.default_data_dir())"],
        cwd=clone, env=env, check=True, capture_output=True, text=True, timeout=60)
    module_file, data_dir = probe.stdout.split()
    assert Path(module_file).is_relative_to(clone), module_file
    assert Path(data_dir) == clone / "data"

    summary_file = tmp_path / "summary.json"
    res = subprocess.run([str(BIN / "splitfed"), "demo", *QUICK, "--run-dir",
                          str(tmp_path / "run"), "--summary-json", str(summary_file)],
                         cwd=clone, env=env, capture_output=True, text=True, timeout=420)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert "== summary ==" in res.stdout
    summary = json.loads(summary_file.read_text())
    assert len(summary["per_round"]) == 2 and summary["final_version"] >= 1
    assert all(v["ok"] for v in summary["ledger_verify"].values())
    _, test = load_split(clone / "data", "PLAID")
    counts = np.bincount(test.labels)
    majority = float(counts.max() / counts.sum())
    assert summary["final_accuracy"] > majority + 0.1, (summary["final_accuracy"], majority)
    assert all(d["batches"] > 0 for d in summary["per_device"])
