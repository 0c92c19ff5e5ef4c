"""``splitfed-agent simulate`` as a real process; ``sensors read`` against it."""

from __future__ import annotations

import json
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from agent.cli import main

pytestmark = pytest.mark.integration

AGENT = str(Path(sys.executable).with_name("splitfed-agent"))


def ready_line(proc: subprocess.Popen[str], timeout: float = 30.0) -> dict[str, object]:
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


def test_simulate_then_sensors_read(tmp_path: Path, data_dir: Path,
                                    capsys: pytest.CaptureFixture[str]) -> None:
    idx = tmp_path / "idx.txt"
    idx.write_text("4, 9\n")
    proc = subprocess.Popen(
        [AGENT, "simulate", "--dataset", str(data_dir / "PLAID_TEST.ts"), "--indices", str(idx),
         "--tcp-port", "0", "--pty", "--unit", "2", "--length", "64"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        ready = ready_line(proc)
        assert ready["ready"] is True and ready["mode"] == "capture" and ready["channels"] == 1
        cfg = tmp_path / "sensors.toml"
        cfg.write_text(f"""
[[sensors.devices]]
name = "pq-tcp"
transport = "tcp"
host = "127.0.0.1"
port = {ready["tcp_port"]}
unit = 2
mode = "capture"
window = {{ length = 64 }}

[[sensors.devices]]
name = "pq-rtu"
transport = "rtu"
serial = "{ready["serial"]}"
baudrate = 115200
unit = 2
mode = "capture"

[[sensors.devices]]
name = "absent"
transport = "rtu"
serial = "{ready["serial"]}"
baudrate = 115200
unit = 9
timeout = 0.2
retries = 0
mode = "capture"
""")
        code = main(["sensors", "read", "--config", str(cfg), "--timeout", "1"])
        out = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
        assert code == 1  # one device is absent
        by = {o["device"]: o for o in out}
        assert by["pq-tcp"]["ok"] and by["pq-tcp"]["shape"] == [1, 64]
        assert by["pq-rtu"]["ok"] and by["pq-rtu"]["shape"] == [1, 64]
        # the first device acked capture 1, so the second one sees the next record
        assert (by["pq-tcp"]["seq"], by["pq-rtu"]["seq"]) == (1, 2)
        assert not by["absent"]["ok"] and "SensorTimeoutError" in by["absent"]["error"]
        assert by["absent"]["counters"]["timeouts"] >= 1
        code = main(["sensors", "read", "--config", str(cfg), "--device", "pq-tcp"])
        assert code == 0
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            rc = proc.wait(timeout=15)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            assert proc.stdout is not None and proc.stderr is not None
            proc.stdout.close()
            proc.stderr.close()
    assert rc == 0


def test_bad_config_exits_2_and_lists_every_problem(tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    cfg = tmp_path / "bad.toml"
    cfg.write_text('[[sensors.devices]]\nname = "x"\ntransport = "tcp"\n'
                   'registers = [{ address = 1, type = "int8" }]\n')
    assert main(["sensors", "read", "--config", str(cfg)]) == 2
    err = capsys.readouterr().err
    assert "sensors.devices[0].host: required" in err
    assert "sensors.devices[0].registers[0].name: required" in err
    assert "sensors.devices[0].registers[0].type: must be one of" in err


def test_simulate_usage_errors() -> None:
    assert main(["simulate", "--dataset", "synthetic-vibration"]) == 2
