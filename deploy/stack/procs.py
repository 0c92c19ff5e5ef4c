"""Child processes of the stack: start, wait until ready, supervise, stop for certain.

Every process writes stdout+stderr to ``<run>/logs/<name>.log``. Readiness is
a predicate polled against a deadline (a port accepting connections, a line
in the log, a file appearing), never a fixed sleep; long waits report their
progress every ``report_every`` seconds.

Every child runs in its own session (``start_new_session``), hence its own
process group: a Ctrl-C in the terminal reaches only the launcher, which then
stops the children itself, in order, instead of the terminal killing them
all at once (Mosquitto first, say, so that the others log a misleading
"connection refused"). On Linux each child also gets SIGTERM if the launcher
dies (``PR_SET_PDEATHSIG``).

Supervision: a child started with a :class:`~deploy.stack.supervise.RestartPolicy`
is restarted by :meth:`ProcessGroup.supervise` (called from the launcher's
watch loop) when it fails, with backoff and a restart limit; see
:mod:`deploy.stack.supervise`. A restart appends to the same log file after a
``--- supervisor: restart N ---`` line.

:meth:`ProcessGroup.close` sends SIGTERM (and SIGCONT, for a stopped child)
to every live child in reverse start order, waits, then SIGKILLs what is
left, so an interrupted demo leaves nothing running.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import random
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from deploy.stack.supervise import GiveUp, RestartAt, RestartEvent, RestartPolicy, decide, failed
from protocol.errors import SplitfedError

log = logging.getLogger(__name__)

__all__ = ["ProcessGroup", "StackError", "listen_port", "port_open", "wait_until"]

_EPHEMERAL = Path("/proc/sys/net/ipv4/ip_local_port_range")
_LISTEN_FLOOR = 10000


class StackError(SplitfedError):
    """A stack process failed to start or died."""


def wait_until(pred: Callable[[], bool], *, timeout: float, what: str,
               alive: Callable[[], bool] | None = None, interval: float = 0.05,
               report: Callable[[str], None] | None = None, report_every: float = 15.0) -> None:
    """Poll ``pred`` until true; :class:`StackError` on timeout or when ``alive`` turns false.

    With ``report``, a line ``still waiting for <what>: N s of T s`` every ``report_every``.
    """
    start = time.monotonic()
    deadline = start + timeout
    next_report = start + report_every
    while not pred():
        if alive is not None and not alive():
            raise StackError(f"{what}: the process exited")
        now = time.monotonic()
        if now > deadline:
            raise StackError(f"{what}: not ready after {timeout:.0f} s")
        if report is not None and now >= next_report:
            report(f"still waiting for {what}: {now - start:.0f} s of {timeout:.0f} s")
            next_report = now + report_every
        time.sleep(interval)


def _ephemeral_low() -> int:
    try:
        return int(_EPHEMERAL.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def listen_port(taken: set[int], *, rng: random.Random | None = None) -> int:
    """A free loopback port *below* the kernel's ephemeral range, not in ``taken``.

    A port from ``bind(0)`` is an ephemeral port: between choosing it and the service
    binding it (tens of seconds for the server, and again at every restart) any outgoing
    connection on the machine (every HTTP poll of the ledger) may get it as its local
    port, and the service then fails with "address already in use". Below the range no
    outgoing connection takes it. The port is added to ``taken``.
    """
    rng = rng or random.Random()  # noqa: S311 - choosing a port, not a secret
    high = _ephemeral_low()
    for _ in range(200):
        port = rng.randrange(_LISTEN_FLOOR, high)
        if port in taken:
            continue
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        taken.add(port)
        return port
    raise StackError(f"no free port in {_LISTEN_FLOOR}..{high} after 200 tries")


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
    restart: RestartPolicy | None = None
    env: Mapping[str, str] = field(default_factory=dict)
    cwd: Path | None = None
    restarts: list[float] = field(default_factory=list)   # monotonic times of restarts
    pending: RestartAt | None = None                      # a restart is scheduled
    gave_up: bool = False

    def alive(self) -> bool:
        return self.proc.poll() is None

    @property
    def restarting(self) -> bool:
        """Failed, with a restart scheduled (not yet due)."""
        return self.pending is not None

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
              extra_env: Mapping[str, str] | None = None,
              restart: RestartPolicy | None = None) -> Child:
        """Start ``argv`` with output to ``logs/<name>.log``; wait for ``ready`` if given.

        With ``restart``, :meth:`supervise` restarts the child when it fails.
        """
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log_path = self.log_dir / f"{name}.log"
        env = {**os.environ, **self.env, **(extra_env or {})}
        proc = _spawn(name, argv, log_path, env, cwd)
        child = Child(name=name, argv=argv, proc=proc, log_path=log_path, critical=critical,
                      restart=restart, env=env, cwd=cwd)
        self.children.append(child)
        log.debug("started %s pid %d", name, proc.pid)
        if ready is not None:
            try:
                wait_until(ready, timeout=timeout, what=name, alive=child.alive)
            except StackError as exc:
                raise StackError(f"{exc}; last log lines:\n{child.log_tail()}") from None
        return child

    def get(self, name: str) -> Child:
        for c in self.children:
            if c.name == name:
                return c
        raise KeyError(name)

    def dead_critical(self) -> list[Child]:
        """Critical children that exited and will not be restarted."""
        return [c for c in self.children
                if c.critical and not c.alive() and not c.restarting
                and (c.gave_up or c.restart is None or not failed(c.proc.returncode))]

    def supervise(self, *, now: float | None = None,
                  started: float = 0.0) -> list[RestartEvent]:
        """Schedule restarts of failed children and perform those that are due.

        Returns what was decided (a restart scheduled, or giving up) for the caller to
        report; ``started`` is the run's start (monotonic) for the events' timestamps.
        """
        now = time.monotonic() if now is None else now
        events: list[RestartEvent] = []
        for c in self.children:
            if c.restart is None or c.gave_up or c.alive():
                continue
            code = c.proc.returncode
            if c.pending is None:
                if not failed(code):
                    continue
                assert code is not None
                verdict = decide(c.restart, c.restarts, now)
                if isinstance(verdict, GiveUp):
                    c.gave_up = True
                    events.append(RestartEvent(service=c.name, exit_code=code,
                                               attempt=verdict.restarts_in_window, delay_s=0.0,
                                               at_s=now - started, gave_up=True))
                    log.error("%s failed (%s); restart limit reached", c.name, code)
                    continue
                c.pending = verdict
                events.append(RestartEvent(service=c.name, exit_code=code,
                                           attempt=verdict.attempt, delay_s=verdict.at - now,
                                           at_s=now - started))
                log.warning("%s failed (%s); restart %d at +%.1f s", c.name, code,
                            verdict.attempt, verdict.at - now)
            if c.pending is not None and now >= c.pending.at:
                with c.log_path.open("ab") as out:
                    out.write(f"--- supervisor: restart {c.pending.attempt} after exit "
                              f"{code} ---\n".encode())
                try:
                    c.proc = _spawn(c.name, c.argv, c.log_path, c.env, c.cwd)
                except StackError:
                    log.exception("restart of %s failed", c.name)
                    c.gave_up = True
                c.restarts.append(now)
                c.pending = None
        return events

    def stop(self, child: Child, *, timeout: float = 10.0) -> int | None:
        """SIGTERM, then SIGKILL after ``timeout``; returns the exit code."""
        child.pending = None
        if child.alive():
            _signal_group(child.proc, signal.SIGTERM)
            _signal_group(child.proc, signal.SIGCONT)  # a stopped child cannot act on TERM
            try:
                child.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                log.warning("%s ignored SIGTERM for %.0f s; killing", child.name, timeout)
                _signal_group(child.proc, signal.SIGKILL)
                child.proc.wait(timeout=5)
        return child.proc.returncode

    def close(self, *, timeout: float = 10.0,
              only: Callable[[Child], bool] | None = None) -> dict[str, int | None]:
        """Stop every child (or those ``only`` selects), newest first; exit codes by name."""
        codes: dict[str, int | None] = {}
        for child in reversed(list(self.children)):
            if only is not None and not only(child):
                continue
            codes[child.name] = self.stop(child, timeout=timeout)
            self.children.remove(child)
        return codes


def _spawn(name: str, argv: Sequence[str], log_path: Path, env: Mapping[str, str],
           cwd: Path | None) -> subprocess.Popen[bytes]:
    """Start ``argv`` in its own session, output appended to ``log_path``."""
    with log_path.open("ab") as out:
        try:
            return subprocess.Popen(list(argv), stdout=out, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, cwd=cwd, env=dict(env),
                                    start_new_session=True, preexec_fn=_die_with_parent)
        except OSError as exc:
            raise StackError(f"cannot start {name} ({argv[0]}): {exc.strerror}") from exc


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
