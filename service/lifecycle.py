"""Run a long-lived role process: signals, start, READY, main loop, STOPPING, close.

Theory of operation
-------------------
:func:`serve` is the ``run`` command of the gateway and the server (the agent and
the ledger node have their own loops, built on the same :class:`SystemdNotifier`):

1. SIGTERM and SIGINT call ``app.stop()``, which only sets a flag: the main loop
   returns at its next iteration (signal handlers do no I/O);
2. ``app.start()`` (bind metrics, connect, resume); a
   :class:`protocol.errors.SplitfedError` here or later ends the process with
   exit code 1 and an ``error: ...`` line;
3. ``READY=1`` to systemd (``Type=notify`` units); the app's main loop pings
   ``WATCHDOG=1`` itself through :class:`service.notify.Watchdog`, so a hung
   loop is restarted;
4. ``app.run()`` until stopped or finished; then ``STOPPING=1``, ``app.close()``
   (always, also after a failed start) and the previous signal handlers back.
"""

from __future__ import annotations

import signal
from types import FrameType
from typing import Protocol

import click

from protocol.errors import SplitfedError
from service.cli import EXIT_FAILURE
from service.notify import SystemdNotifier

__all__ = ["Service", "serve"]


class Service(Protocol):
    notifier: SystemdNotifier

    def start(self) -> None: ...
    def run(self) -> None: ...
    def stop(self) -> None: ...
    def close(self) -> None: ...


def serve(app: Service, *, status: str = "running") -> None:
    """Run ``app`` to completion (see the module docstring); SystemExit(1) on failure."""

    def _stop(signum: int, frame: FrameType | None) -> None:
        app.stop()

    old = {s: signal.signal(s, _stop) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        app.start()
        app.notifier.ready(status=status)
        app.run()
    except SplitfedError as exc:
        click.echo(f"error: {exc}", err=True)
        raise SystemExit(EXIT_FAILURE) from exc
    finally:
        app.notifier.stopping()
        app.close()
        for s, h in old.items():
            signal.signal(s, h)
