"""The built wheel installs on a board with only the ``[agent]`` extra, and provisions it.

What an operator does with the output of ``make dist`` (docs/agent.md step 1):
a fresh venv, ``pip install 'iiot_splitfed-<v>-py3-none-any.whl[agent]'``
(downloaded from PyPI, no TensorFlow, no plotting), then ``splitfed-agent
--help``, ``keys generate`` and ``sensors read`` against a ``splitfed-agent
simulate`` meter, all from the installed copy (nothing of the checkout on
``sys.path``). The wheel is built here from the current tree through its
sdist, so ``MANIFEST.in`` and the package discovery are tested too.

About 60-90 s (the venv and the download): marked slow, run by ``.ci/run``.
"""

from __future__ import annotations

import json
import os
import select
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import DATA_DIR

pytestmark = [pytest.mark.slow, pytest.mark.integration]

REPO = Path(__file__).resolve().parents[2]
TIMEOUT_S = 600


def _run(argv: list[str], **kw: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=TIMEOUT_S,
                          check=False, **kw)  # type: ignore[call-overload]


def _clean_env() -> dict[str, str]:
    """No PYTHONPATH or venv of the checkout: only the installed copy is importable."""
    drop = {"PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME"}
    return {k: v for k, v in os.environ.items() if k not in drop and not k.startswith("SPLITFED_")}


def _ready_line(proc: subprocess.Popen[str], timeout: float = 60.0) -> dict[str, object]:
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        r, _, _ = select.select([proc.stdout], [], [], 0.2)
        if r:
            line = proc.stdout.readline()
            if line.startswith("{"):
                return dict(json.loads(line))
        if proc.poll() is not None:
            break
    raise AssertionError("simulator did not print its ready line")


@pytest.fixture(scope="module")
def agent_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("wheel")
    built = _run([sys.executable, "-m", "build", "--no-isolation", "--outdir", str(tmp / "dist"),
                  str(REPO)])
    assert built.returncode == 0, built.stdout[-2000:] + built.stderr[-2000:]
    assert "would be ignored" not in built.stdout + built.stderr  # package discovery is clean
    wheels = sorted((tmp / "dist").glob("iiot_splitfed-*-py3-none-any.whl"))
    assert len(wheels) == 1 and sorted((tmp / "dist").glob("iiot_splitfed-*.tar.gz"))
    venv = tmp / "venv"
    base = getattr(sys, "_base_executable", sys.executable)
    made = _run([base, "-m", "venv", str(venv)], env=_clean_env())
    assert made.returncode == 0, made.stderr
    inst = _run([str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet",
                 f"{wheels[0]}[agent]"], env=_clean_env(), cwd=tmp)
    assert inst.returncode == 0, inst.stdout[-3000:] + inst.stderr[-3000:]
    return venv


def test_only_the_agent_runtime_is_installed(agent_venv: Path) -> None:
    py = str(agent_venv / "bin" / "python")
    probe = _run([py, "-c", "import importlib.util as u, json, agent, models.runtime; print("
                  "json.dumps({m: u.find_spec(m) is not None for m in ('tensorflow', "
                  "'matplotlib', 'ai_edge_litert', 'paho', 'pymodbus', 'dp_accounting')}));"
                  "print(agent.__file__)"], env=_clean_env(), cwd=agent_venv)
    assert probe.returncode == 0, probe.stderr
    found, agent_file = probe.stdout.splitlines()
    assert json.loads(found) == {"tensorflow": False, "matplotlib": False, "ai_edge_litert": True,
                                 "paho": True, "pymodbus": True, "dp_accounting": True}
    assert Path(agent_file).is_relative_to(agent_venv)
    # the unit's Documentation= target and the unit itself ship with the wheel
    assert (agent_venv / "share/doc/iiot-splitfed/operations.md").is_file()
    site = Path(agent_file).parent.parent
    assert (site / "deploy/systemd/splitfed-agent.service").is_file()
    assert (site / "models/artifacts/cnn1d/cut1/manifest.json").is_file()


def test_help_keys_and_sensors_read_from_the_wheel(agent_venv: Path, tmp_path: Path) -> None:
    agent = str(agent_venv / "bin" / "splitfed-agent")
    env = _clean_env()
    res = _run([agent, "--help"], env=env)
    assert res.returncode == 0 and "keys" in res.stdout and "sensors" in res.stdout

    state = tmp_path / "state"
    res = _run([agent, "keys", "generate", "--state-dir", str(state)], env=env)
    assert res.returncode == 0, res.stderr
    info = json.loads(res.stdout)
    assert len(info["public_key"]) == 64
    assert stat.S_IMODE((state / "device.key").stat().st_mode) == 0o600

    proc = subprocess.Popen([agent, "simulate", "--dataset", str(DATA_DIR / "PLAID_TEST.ts"),
                             "--tcp-port", "0", "--unit", "3", "--length", "64"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        ready = _ready_line(proc)
        cfg = tmp_path / "sensors.toml"
        cfg.write_text(f'[[sensors.devices]]\nname = "meter"\ntransport = "tcp"\n'
                       f'host = "127.0.0.1"\nport = {ready["tcp_port"]}\nunit = 3\n'
                       f'mode = "capture"\nwindow = {{ length = 64 }}\n')
        res = _run([agent, "sensors", "read", "--config", str(cfg), "--timeout", "5"], env=env)
        assert res.returncode == 0, res.stdout + res.stderr
        out = json.loads(res.stdout.splitlines()[0])
        assert out["device"] == "meter" and out["ok"] and out["shape"] == [1, 64]
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate(timeout=30)
    assert proc.returncode == 0
