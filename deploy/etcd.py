"""Run real etcd members on loopback (tests, benchmarks, the one-machine stack).

Theory of operation
-------------------
:class:`EtcdCluster` owns one working directory with a data directory per
member (mode 0700, as etcd demands). ``start()`` picks two free loopback ports
per member (client, peer), starts every member with a static
``--initial-cluster`` and polls each member's ``/health`` until it reports
``"health": "true"`` or a deadline passes. Ports are kept for the life of the
object, so ``kill(i)`` + ``restart(i)`` brings a member back at the same
address with its data (it rejoins the Raft group as itself).
``leader()`` asks every live member for ``/v3/maintenance/status`` and
returns the index of the Raft leader. ``stop()`` terminates every member
(SIGTERM, then SIGKILL after a grace period) and is safe to call twice.

Production members use ``deploy/etcd/etcd.conf.yml`` (one per organisation,
TLS between peers and clients) instead of these flags.
"""

from __future__ import annotations

import json
import logging
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import TracebackType

from protocol.errors import TransportError

__all__ = ["ETCD", "EtcdCluster", "EtcdRunnerError", "free_port"]

log = logging.getLogger(__name__)
ETCD = "etcd"


class EtcdRunnerError(TransportError):
    """An etcd member could not be started, queried or stopped."""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _get_json(url: str, *, body: bytes | None = None, timeout: float = 1.0) -> dict[str, object]:
    if not url.startswith("http://127.0.0.1:"):
        raise EtcdRunnerError(f"refusing non-loopback URL {url}")
    req = urllib.request.Request(url, data=body, method="POST" if body is not None else "GET")  # noqa: S310
    with urllib.request.urlopen(req, timeout=timeout) as resp:  # noqa: S310
        out: dict[str, object] = json.loads(resp.read())
        return out


class EtcdCluster:
    """``n`` etcd members on 127.0.0.1 under ``workdir``."""

    def __init__(self, workdir: str | Path, *, n: int = 3, cluster_name: str = "splitfed-test",
                 binary: str = ETCD) -> None:
        if n < 1:
            raise EtcdRunnerError("an etcd cluster needs at least one member")
        self.workdir = Path(workdir)
        self.n = n
        self.cluster_name = cluster_name
        self.binary = binary
        self.names = [f"m{i}" for i in range(n)]
        self.client_ports = [free_port() for _ in range(n)]
        self.peer_ports = [free_port() for _ in range(n)]
        self._procs: list[subprocess.Popen[bytes] | None] = [None] * n

    @property
    def client_urls(self) -> list[str]:
        return [f"http://127.0.0.1:{p}" for p in self.client_ports]

    def _cmd(self, i: int) -> list[str]:
        cluster = ",".join(f"{name}=http://127.0.0.1:{p}"
                           for name, p in zip(self.names, self.peer_ports, strict=True))
        data = self.workdir / self.names[i]
        return [
            self.binary, "--name", self.names[i], "--data-dir", str(data),
            "--listen-client-urls", self.client_urls[i],
            "--advertise-client-urls", self.client_urls[i],
            "--listen-peer-urls", f"http://127.0.0.1:{self.peer_ports[i]}",
            "--initial-advertise-peer-urls", f"http://127.0.0.1:{self.peer_ports[i]}",
            "--initial-cluster", cluster, "--initial-cluster-state", "new",
            "--initial-cluster-token", self.cluster_name, "--log-level", "warn", "--logger", "zap",
            "--heartbeat-interval", "50", "--election-timeout", "500",
        ]

    def _spawn(self, i: int) -> None:
        data = self.workdir / self.names[i]
        data.mkdir(parents=True, exist_ok=True)
        data.chmod(0o700)
        log_path = self.workdir / f"{self.names[i]}.log"
        try:
            with log_path.open("ab") as out:
                self._procs[i] = subprocess.Popen(self._cmd(i), stdout=out,
                                                  stderr=subprocess.STDOUT)
        except OSError as exc:
            raise EtcdRunnerError(f"cannot start {self.binary}: {exc}") from exc

    def start(self, timeout: float = 30.0) -> None:
        for i in range(self.n):
            self._spawn(i)
        self.wait_healthy(range(self.n), timeout=timeout)

    def healthy(self, i: int) -> bool:
        try:
            out = _get_json(self.client_urls[i] + "/health", timeout=1.0)
        except (urllib.error.URLError, OSError, ValueError):
            return False
        return str(out.get("health")) == "true"

    def wait_healthy(self, members: range | list[int], timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        todo = set(members)
        while todo:
            for i in list(todo):
                p = self._procs[i]
                if p is not None and p.poll() is not None:
                    raise EtcdRunnerError(f"etcd member {i} exited with {p.returncode}; see "
                                          f"{self.workdir / (self.names[i] + '.log')}")
                if self.healthy(i):
                    todo.discard(i)
            if todo and time.monotonic() > deadline:
                raise EtcdRunnerError(f"etcd members {sorted(todo)} not healthy in {timeout} s")
            if todo:
                time.sleep(0.1)

    def leader(self, timeout: float = 10.0) -> int:
        """Index of the current Raft leader (polls while an election is running)."""
        deadline = time.monotonic() + timeout
        while True:
            ids: dict[str, int] = {}
            leader = None
            for i in range(self.n):
                if self._procs[i] is None:
                    continue
                try:
                    st = _get_json(self.client_urls[i] + "/v3/maintenance/status", body=b"{}")
                except (urllib.error.URLError, OSError, ValueError):
                    continue
                header = st.get("header")
                if isinstance(header, dict):
                    ids[str(header.get("member_id"))] = i
                if st.get("leader"):
                    leader = str(st.get("leader"))
            if leader in ids:
                return ids[leader]
            if time.monotonic() > deadline:
                raise EtcdRunnerError("no etcd leader found")
            time.sleep(0.1)

    def kill(self, i: int) -> None:
        """SIGKILL member ``i`` (a crash)."""
        p = self._procs[i]
        if p is not None:
            p.kill()
            p.wait(timeout=10)
            self._procs[i] = None

    def restart(self, i: int, timeout: float = 30.0) -> None:
        self.kill(i)
        self._spawn(i)
        self.wait_healthy([i], timeout=timeout)

    def stop(self) -> None:
        for p in self._procs:
            if p is not None:
                p.terminate()
        for i, p in enumerate(self._procs):
            if p is None:
                continue
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(timeout=10)
            self._procs[i] = None

    def __enter__(self) -> EtcdCluster:
        self.start()
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()
