"""serve(): signals, start, READY, run, STOPPING, close - in that order, also on failure."""

from __future__ import annotations

import os
import signal
import socket
from pathlib import Path

import pytest

from protocol.errors import TransportError
from service.lifecycle import serve
from service.notify import SystemdNotifier, Watchdog


class _App:
    def __init__(self, notifier: SystemdNotifier, *, fail_start: bool = False) -> None:
        self.notifier, self.fail_start, self.calls = notifier, fail_start, list[str]()
        self.stopped = False

    def start(self) -> None:
        self.calls.append("start")
        if self.fail_start:
            raise TransportError("broker down")

    def run(self) -> None:
        self.calls.append("run")
        os.kill(os.getpid(), signal.SIGTERM)  # what systemctl stop does
        self.calls.append("stopped" if self.stopped else "still running")

    def stop(self) -> None:
        self.stopped = True

    def close(self) -> None:
        self.calls.append("close")


@pytest.fixture
def listener(tmp_path: Path) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(tmp_path / "notify"))
    sock.settimeout(5)
    yield sock
    sock.close()


def test_serve_order_and_notifications(listener: socket.socket, tmp_path: Path) -> None:
    app = _App(SystemdNotifier({"NOTIFY_SOCKET": str(tmp_path / "notify")}))
    before = signal.getsignal(signal.SIGTERM)
    serve(app, status="relaying")
    assert app.calls == ["start", "run", "stopped", "close"]
    assert listener.recv(100) == b"READY=1\nSTATUS=relaying"
    assert listener.recv(100) == b"STOPPING=1"
    assert signal.getsignal(signal.SIGTERM) is before


def test_failed_start_exits_1_and_still_closes(capsys: pytest.CaptureFixture[str]) -> None:
    app = _App(SystemdNotifier({}), fail_start=True)
    with pytest.raises(SystemExit) as info:
        serve(app)
    assert info.value.code == 1 and app.calls == ["start", "close"]
    assert "error: broker down" in capsys.readouterr().err


def test_watchdog_is_rate_limited(listener: socket.socket, tmp_path: Path) -> None:
    n = SystemdNotifier({"NOTIFY_SOCKET": str(tmp_path / "notify"), "WATCHDOG_USEC": "2000000"})
    w = Watchdog(n)
    assert w.period == 1.0
    assert [w.tick(t) for t in (10.0, 10.5, 10.99, 11.0, 11.2)] == [True, False, False, True,
                                                                   False]
    assert listener.recv(100) == b"WATCHDOG=1" and listener.recv(100) == b"WATCHDOG=1"
