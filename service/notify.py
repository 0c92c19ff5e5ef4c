"""sd_notify(3) without libsystemd: one unix datagram per state change.

systemd (``Type=notify``) passes ``NOTIFY_SOCKET`` to the service: a path, or
an abstract socket name starting with ``@``.  :class:`SystemdNotifier` sends
``READY=1`` once start-up is done, ``WATCHDOG=1`` from the main loop (at least
every ``WatchdogSec/2``; :attr:`SystemdNotifier.watchdog_interval` reads
``WATCHDOG_USEC`` for that), ``STATUS=...`` for ``systemctl status`` and
``STOPPING=1`` on shutdown.  When ``NOTIFY_SOCKET`` is unset (not under
systemd) every call is a no-op.  Send failures are logged, never raised: a
missing notification makes systemd restart us, which is the right outcome.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Mapping

__all__ = ["SystemdNotifier", "Watchdog"]

log = logging.getLogger(__name__)


class SystemdNotifier:
    """Sends sd_notify messages to ``$NOTIFY_SOCKET`` (read once, at construction)."""

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        raw = env.get("NOTIFY_SOCKET") or None
        self._address: str | bytes | None
        if raw is None:
            self._address = None
        elif raw.startswith("@"):
            self._address = b"\0" + raw[1:].encode()
        else:
            self._address = raw
        usec = env.get("WATCHDOG_USEC")
        pid = env.get("WATCHDOG_PID")
        self.watchdog_interval: float | None = None
        if usec and usec.isdigit() and (not pid or pid == str(os.getpid())):
            self.watchdog_interval = int(usec) / 2e6

    @property
    def enabled(self) -> bool:
        return self._address is not None

    def notify(self, *lines: str) -> bool:
        """Send ``lines`` (e.g. ``"READY=1"``) as one datagram; False if not sent."""
        if self._address is None:
            return False
        data = "\n".join(lines).encode()
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
                # never block the agent's main loop on a full or unread notify socket
                sock.sendto(data, socket.MSG_DONTWAIT, self._address)
        except OSError as exc:
            log.warning("sd_notify failed: %s", exc)
            return False
        return True

    def ready(self, status: str | None = None) -> bool:
        return self.notify("READY=1", *([f"STATUS={status}"] if status else []))

    def watchdog(self) -> bool:
        return self.notify("WATCHDOG=1")

    def status(self, text: str) -> bool:
        return self.notify(f"STATUS={text}")

    def stopping(self) -> bool:
        return self.notify("STOPPING=1")


class Watchdog:
    """Rate-limited ``WATCHDOG=1`` from a main loop: call :meth:`tick` on every iteration.

    Pings at most every ``watchdog_interval`` (half of ``WatchdogSec``), or every
    ``default_period`` seconds when systemd did not say. Only the loop that does the
    work should tick, so a hung loop stops the pings and systemd restarts the service.
    """

    def __init__(self, notifier: SystemdNotifier, *, default_period: float = 5.0) -> None:
        self.notifier = notifier
        self.period = notifier.watchdog_interval or default_period
        self._last: float | None = None

    def tick(self, now: float | None = None) -> bool:
        """Ping if the period has passed; True if a ping was sent."""
        t = time.monotonic() if now is None else now
        if self._last is not None and t - self._last < self.period:
            return False
        self._last = t
        return self.notifier.watchdog()
