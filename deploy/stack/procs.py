"""Child processes of the stack: start, wait until ready, stop for certain.

Every process writes stdout+stderr to ``<run>/logs/<name>.log``. Readiness is
a predicate polled against a deadline (a port accepting connections, a line
in the log, a file appearing), never a fixed sleep. :meth:`ProcessGroup.close`
sends SIGTERM to every live child in reverse start order, waits, then
SIGKILLs what is left, so an interrupted demo leaves nothing running.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from protocol.errors import SplitfedError

log = logging.getLogger(__name__)

__all__ = ["ProcessGroup", "StackError", "port_open", "wait_until"]


class StackError(SplitfedError):
    """A stack process failed to start or died."""


def wait_until(pred: Callable[[], bool], *, timeout: float, what: str,
               alive: Callable[[], bool] | None = None, interval: float = 0.05) -> None:
    """Poll ``pred`` until true; :class:`StackError` on timeout or when ``alive`` turns false."""
    deadline = time.monotonic() + timeout
    while not pred():
        if alive is not None and not alive():
            raise StackError(f"{what}: the process exited")
        if time.monotonic() > deadline:
            raise StackError(f"{what}: not ready after {timeout:.0f} s")
        time.sleep(interval)


def port_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.2):
            return True
    except OSError:
        return False


@dataclass
class Child:
    name: str
    argv: Sequence[str]
    proc: subprocess.Popen[bytes]
    log_path: Path
    critical: bool = True

    def alive(self) -> bool:
        return self.proc.poll() is None

    def log_tail(self, lines: int = 15) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])


@dataclass
class ProcessGroup:
    """All processes of one stack run."""

    log_dir: Path
    env: Mapping[str, str] = field(default_factory=dict)
    children: list[Child] = field(default_factory=list)

    def start(self, name: str, argv: Sequence[str], *, ready: Callable[[], bool] | None = None,
              timeout: float = 60.0, cwd: Path | None = None, critical: bool = True,
              extra_env: Mapping[str, str] | None = None) -> Child:
        """Start ``argv`` with output to ``logs/<name>.log``; wait for ``ready`` if given."""
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log_path = self.log_dir / f"{name}.log"
        env = {**os.environ, **self.env, **(extra_env or {})}
        with log_path.open("ab") as out:
            try:
                proc = subprocess.Popen(list(argv), stdout=out, stderr=subprocess.STDOUT,
                                        stdin=subprocess.DEVNULL, cwd=cwd, env=env,
                                        start_new_session=True, preexec_fn=_die_with_parent)
            except OSError as exc:
                raise StackError(f"cannot start {name} ({argv[0]}): {exc.strerror}") from exc
        child = Child(name=name, argv=argv, proc=proc, log_path=log_path, critical=critical)
        self.children.append(child)
        log.debug("started %s pid %d", name, proc.pid)
        if ready is not None:
            try:
                wait_until(ready, timeout=timeout, what=name, alive=child.alive)
            except StackError as exc:
                raise StackError(f"{exc}; last log lines:\n{child.log_tail()}") from None
        return child

    def dead_critical(self) -> list[Child]:
        """Critical children that exited on their own."""
        return [c for c in self.children if c.critical and not c.alive()]

    def stop(self, child: Child, *, timeout: float = 10.0) -> int | None:
        """SIGTERM, then SIGKILL after ``timeout``; returns the exit code."""
        if child.alive():
            _signal_group(child.proc, signal.SIGTERM)
            try:
                child.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                log.warning("%s ignored SIGTERM for %.0f s; killing", child.name, timeout)
                _signal_group(child.proc, signal.SIGKILL)
                child.proc.wait(timeout=5)
        return child.proc.returncode

    def close(self, *, timeout: float = 10.0) -> dict[str, int | None]:
        """Stop everything, newest first; returns exit codes by name."""
        codes: dict[str, int | None] = {}
        for child in reversed(self.children):
            codes[child.name] = self.stop(child, timeout=timeout)
        self.children.clear()
        return codes


def _die_with_parent() -> None:
    """In the child: get SIGTERM when the launcher dies, even by SIGKILL (Linux prctl)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM, 0, 0, 0)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass  # not Linux: ProcessGroup.close() still stops everything on a normal exit


def _signal_group(proc: subprocess.Popen[bytes], sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, sig)
