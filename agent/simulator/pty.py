"""A linked pair of pseudo-terminals made with ``os.openpty`` (no socat needed).

pymodbus' serial server opens a device *path*, and the master side of one
``os.openpty`` pair has none. So :class:`PtyLink` opens two pairs and a
thread copies bytes between the two masters: the simulator serves on
``device_path`` and the agent opens ``agent_path``, as if a null-modem cable
joined two serial ports. Baud rate settings are accepted and ignored by
ptys (bytes move as fast as the kernel copies them). When nobody reads one
end and its buffer is full, further bytes are dropped (counted in
``bytes_dropped``), as on a serial line with nothing attached; the copying
thread never blocks, so ``stop()`` always returns.
"""

from __future__ import annotations

import contextlib
import os
import select
import threading
import tty


class PtyLink:
    """Two pty pairs joined back to back; ``start()``/``stop()`` own one thread."""

    def __init__(self) -> None:
        self._m1, self._s1 = os.openpty()
        self._m2, self._s2 = os.openpty()
        for fd in (self._s1, self._s2):
            tty.setraw(fd)
        for fd in (self._m1, self._m2):
            os.set_blocking(fd, False)
        self.device_path = os.ttyname(self._s1)
        self.agent_path = os.ttyname(self._s2)
        self._wake_r, self._wake_w = os.pipe()
        self._thread: threading.Thread | None = None
        self.bytes_copied = 0
        self.bytes_dropped = 0

    def _run(self) -> None:
        peers = {self._m1: self._m2, self._m2: self._m1}
        while True:
            ready, _, _ = select.select([self._m1, self._m2, self._wake_r], [], [])
            if self._wake_r in ready:
                return
            for fd in ready:
                try:
                    data = os.read(fd, 4096)
                except OSError:
                    continue
                try:
                    n = os.write(peers[fd], data)
                except BlockingIOError:
                    n = 0
                self.bytes_copied += n
                self.bytes_dropped += len(data) - n

    def start(self) -> PtyLink:
        """Start copying; returns self."""
        self._thread = threading.Thread(target=self._run, name="pty-link", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop the thread and close every descriptor (idempotent)."""
        if self._thread is not None:
            os.write(self._wake_w, b"x")
            self._thread.join()
            self._thread = None
        for fd in (self._m1, self._s1, self._m2, self._s2, self._wake_r, self._wake_w):
            with contextlib.suppress(OSError):
                os.close(fd)
        self._m1 = self._s1 = self._m2 = self._s2 = self._wake_r = self._wake_w = -1

    def __enter__(self) -> PtyLink:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
