"""Every shipped systemd unit verifies, is hardened, and claims only what its service does.

``systemd-analyze verify`` runs on each unit twice: as shipped (on a host
without the install it may report only that ``ExecStart``'s binary is
missing) and as a copy whose binary is ``/bin/true`` (it must then report
nothing). ``Type=notify`` is checked against the code: a unit may claim it
only if its service sends ``READY=1``, and a ``Type=exec`` unit whose service
starts notifying fails here, so the unit is switched over.
"""

from __future__ import annotations

import configparser
import re
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]
UNITS = sorted([*(REPO / "deploy" / "systemd").glob("*.service"),
                *(REPO / "deploy" / "etcd").glob("*.service")])
# unit -> the package whose code runs in it (None: a third-party binary)
SERVICE_CODE = {"splitfed-agent.service": "agent", "splitfed-gateway.service": "gateway",
                "splitfed-server.service": "server", "splitfed-ledger.service": "ledger_node",
                "splitfed-etcd.service": None}
HARDENING = {"NoNewPrivileges": "yes", "ProtectSystem": "strict", "ProtectHome": "yes",
             "PrivateTmp": "yes", "ProtectKernelTunables": "yes", "ProtectKernelModules": "yes",
             "ProtectControlGroups": "yes", "CapabilityBoundingSet": ""}
VENV_DOC = "file:///opt/splitfed/venv/share/doc/iiot-splitfed/"
ANALYZE = shutil.which("systemd-analyze")
NO_ANALYZE = ("systemd-analyze is missing: deploy/install-system-deps.sh installs the Debian "
              "package systemd (make setup runs it)")


def _service(unit: Path) -> dict[str, list[str]]:
    """The [Service]/[Unit] settings (repeatable keys keep every value)."""
    out: dict[str, list[str]] = {}
    section = ""
    for line in unit.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("["):
            section = line.strip("[]")
            continue
        key, _, value = line.partition("=")
        out.setdefault(f"{section}.{key}", []).append(value)
    return out


# sd_notify is shared code (service.notify, service.lifecycle): a package notifies when its
# code sends the datagram itself or calls the shared notifier
_READY = ("READY=1", "notifier.ready(", "serve(app")
_WATCHDOG = ("WATCHDOG=1", "notifier.watchdog(", "_watchdog.tick(")


def _code(package: str) -> list[str]:
    return [p.read_text() for p in (REPO / package).rglob("*.py")]


def _sends_ready(package: str) -> bool:
    return any(m in text for text in _code(package) for m in _READY)


def test_every_service_has_a_unit() -> None:
    assert {u.name for u in UNITS} == set(SERVICE_CODE)


@pytest.mark.parametrize("unit", UNITS, ids=lambda u: u.name)
def test_unit_is_hardened_with_its_own_state_directory(unit: Path) -> None:
    s = _service(unit)
    for key, value in HARDENING.items():
        assert s.get(f"Service.{key}") == [value], (unit.name, key)
    states = [_service(u)["Service.StateDirectory"][0] for u in UNITS]
    assert len(set(states)) == len(states)  # no two services share a state directory
    assert s["Service.StateDirectoryMode"] == ["0700"]
    assert s["Service.User"][0] != "root"


@pytest.mark.parametrize("unit", UNITS, ids=lambda u: u.name)
def test_type_matches_what_the_service_does(unit: Path) -> None:
    s = _service(unit)
    kind = s["Service.Type"][0]
    package = SERVICE_CODE[unit.name]
    if package is None:  # etcd sends READY=1 itself; it has no watchdog pings
        assert kind == "notify" and "Service.WatchdogSec" not in s
        return
    if _sends_ready(package):
        assert kind == "notify", f"{package} sends READY=1: use Type=notify + WatchdogSec"
        assert s["Service.NotifyAccess"] == ["main"] and "Service.WatchdogSec" in s
        assert any(m in text for text in _code(package) for m in _WATCHDOG)
    else:
        assert kind == "exec" and "Service.WatchdogSec" not in s
        assert "does not send sd_notify" in unit.read_text()  # the reason is stated


@pytest.mark.parametrize("unit", UNITS, ids=lambda u: u.name)
def test_documentation_points_at_an_installed_file(unit: Path) -> None:
    docs = _service(unit)["Unit.Documentation"]
    cfg = configparser.ConfigParser()
    cfg.read(REPO / "setup.cfg")
    installed = {Path(p.strip()).name for p in
                 cfg["options.data_files"]["share/doc/iiot-splitfed"].split() if p.strip()}
    for doc in docs:
        assert doc.startswith(VENV_DOC), doc
        name = doc.removeprefix(VENV_DOC)
        assert name in installed, f"{name} is not in setup.cfg data_files"
        assert (REPO / "docs" / name).is_file() or (REPO / name).is_file()


@pytest.mark.skipif(ANALYZE is None, reason=NO_ANALYZE)
@pytest.mark.parametrize("unit", UNITS, ids=lambda u: u.name)
def test_systemd_analyze_verify(unit: Path, tmp_path: Path) -> None:
    assert ANALYZE is not None
    res = subprocess.run([ANALYZE, "verify", str(unit)], capture_output=True, text=True,
                         timeout=60, check=False)
    exec_start = _service(unit)["Service.ExecStart"][0]
    binary = exec_start.split()[0]
    problems = [ln for ln in (res.stdout + res.stderr).splitlines() if ln.strip()]
    if Path(binary).exists():
        assert problems == [] and res.returncode == 0, problems
    else:
        assert problems == [f"{unit.name}: Command {binary} is not executable: "
                            "No such file or directory"], problems
    # the same unit with a binary that exists: nothing at all to report
    copy = tmp_path / unit.name
    copy.write_text(re.sub(r"^ExecStart=\S+", "ExecStart=/bin/true", unit.read_text(),
                           flags=re.M))
    res = subprocess.run([ANALYZE, "verify", str(copy)], capture_output=True, text=True,
                         timeout=60, check=False)
    assert res.returncode == 0 and not (res.stdout + res.stderr).strip(), res.stderr
