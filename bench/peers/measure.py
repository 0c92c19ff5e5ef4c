"""Device cost of running processes, sampled from ``/proc`` and ``ss`` (Linux adapter).

Theory of operation: a :class:`ProcSampler` thread wakes every ``interval``
seconds, finds the processes whose command line matches (``select``), and
keeps per pid the last CPU time (``utime + stime`` of ``/proc/<pid>/stat``,
so a process's whole life up to its last sample; ``cutime + cstime`` for
the children it has already reaped), the peak resident set
(``VmHWM`` of ``/proc/<pid>/status``, the kernel's own high-water mark, so
no peak is missed between samples) and, per TCP connection it owns, the
largest ``bytes_sent`` (less ``bytes_retrans``) / ``bytes_received`` the
kernel reports in ``ss -tinp`` (real bytes on the loopback socket, TCP payload
including TLS/MQTT/gRPC framing, excluding TCP/IP headers and retransmissions).
What happens after the last sample before a process exits (< ``interval``) is not counted, and a
connection opened and closed between two samples is missed.
"""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["ProcSample", "ProcSampler"]

_CLK_TCK = os.sysconf("SC_CLK_TCK")
_SS_OWNER = re.compile(r"pid=(\d+)")
_SS_BYTES = re.compile(r"\b(bytes_sent|bytes_received|bytes_retrans):(\d+)")


@dataclass(slots=True, kw_only=True)
class ProcSample:
    """What was seen of one process."""

    pid: int
    cmdline: list[str]
    cpu_s: float = 0.0
    children_cpu_s: float = 0.0       # CPU of its exited, reaped children (cutime + cstime)
    peak_rss_mib: float = 0.0
    sockets: dict[str, tuple[int, int]] = field(default_factory=dict)  # "local peer" -> sent, recv

    def bytes_to(self, peer_port: int | None) -> tuple[int, int]:
        """Sum of (sent, received) over its connections to ``peer_port`` (all if None)."""
        sent = recv = 0
        for key, (s, r) in self.sockets.items():
            if peer_port is None or key.rsplit(":", 1)[-1] == str(peer_port):
                sent += s
                recv += r
        return sent, recv


def _cmdline(pid: int) -> list[str] | None:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return None
    return [a.decode(errors="replace") for a in raw.split(b"\0") if a]


def _cpu_and_rss(pid: int) -> tuple[float, float, float] | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()
    cpu = (int(fields[11]) + int(fields[12])) / _CLK_TCK  # utime, stime (fields 14, 15)
    children = (int(fields[13]) + int(fields[14])) / _CLK_TCK  # cutime, cstime (16, 17)
    rss = 0.0
    for line in status.splitlines():
        if line.startswith("VmHWM:"):
            rss = int(line.split()[1]) / 1024.0
    return cpu, rss, children


def _socket_bytes() -> dict[int, dict[str, tuple[int, int]]]:
    """pid -> {"local peer": (bytes_sent, bytes_received)} for connected TCP sockets."""
    try:
        out = subprocess.run(["ss", "-tinpH"], capture_output=True,
                             text=True, timeout=10, check=False).stdout
    except (OSError, subprocess.SubprocessError):
        return {}
    found: dict[int, dict[str, tuple[int, int]]] = {}
    lines = out.splitlines()
    for head, info in zip(lines[::2], lines[1::2], strict=False):
        owner = _SS_OWNER.search(head)
        cols = head.split()
        if owner is None or len(cols) < 5:
            continue
        counts = dict(_SS_BYTES.findall(info))
        key = f"{cols[3]} {cols[4]}"  # state, recv-q, send-q, local, peer
        # bytes_sent counts retransmitted segments again; payload = sent - retransmitted
        sent = int(counts.get("bytes_sent", 0)) - int(counts.get("bytes_retrans", 0))
        found.setdefault(int(owner.group(1)), {})[key] = (
            sent, int(counts.get("bytes_received", 0)))
    return found


class ProcSampler:
    """Samples matching processes until :meth:`stop`; use as a context manager."""

    def __init__(self, select: Callable[[list[str]], bool], *, interval: float = 0.5,
                 sockets: bool = True) -> None:
        self._select = select
        self._interval = interval
        self._sockets = sockets
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="proc-sampler", daemon=True)
        self.samples: dict[int, ProcSample] = {}

    def __enter__(self) -> ProcSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=30)

    def _run(self) -> None:
        while True:
            self.sample_once()
            if self._stop.wait(self._interval):
                self.sample_once()
                return

    def sample_once(self) -> None:
        pids = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            pid = int(entry.name)
            cmd = self.samples[pid].cmdline if pid in self.samples else _cmdline(pid)
            if cmd and (pid in self.samples or self._select(cmd)):
                pids.append((pid, cmd))
        sockets = _socket_bytes() if self._sockets and pids else {}
        for pid, cmd in pids:
            got = _cpu_and_rss(pid)
            if got is None:
                continue
            s = self.samples.setdefault(pid, ProcSample(pid=pid, cmdline=cmd))
            s.cpu_s = max(s.cpu_s, got[0])
            s.peak_rss_mib = max(s.peak_rss_mib, got[1])
            s.children_cpu_s = max(s.children_cpu_s, got[2])
            for key, (sent, recv) in sockets.get(pid, {}).items():
                old = s.sockets.get(key, (0, 0))
                s.sockets[key] = (max(old[0], sent), max(old[1], recv))


def config_value(path: str, section: str, key: str) -> object | None:
    """``[section] key`` of a TOML file, None if unreadable (for a process's --config)."""
    import tomllib

    with contextlib.suppress(OSError, tomllib.TOMLDecodeError):
        doc = tomllib.loads(Path(path).read_text())
        value: object = doc.get(section, {}).get(key)
        return value
    return None
