"""Helpers to run `splitfed-ledger run` as a real child process."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from ledger_node.errors import LedgerError
from service.ledger_client import LedgerClient

REPO = Path(__file__).resolve().parents[3]


def write_config(path: Path, *, data_dir: Path, node_id: str, keys: dict[str, Path],
                 etcd: list[str] | None = None, port: int = 0) -> Path:
    lines = [f'data_dir = "{data_dir}"', f'listen = "127.0.0.1:{port}"',
             f'node_id = "{node_id}"',
             "validator_keys = { " + ", ".join(f'{k} = "{v}"' for k, v in keys.items()) + " }"]
    if etcd:
        lines += ["[etcd]", "endpoints = [" + ", ".join(f'"{e}"' for e in etcd) + "]",
                  "timeout_s = 1.0"]
    path.write_text("\n".join(lines) + "\n")
    return path


class NodeProcess:
    """One ledger node child process; ``start`` waits until its API answers."""

    def __init__(self, config: Path, data_dir: Path, log: Path,
                 env: dict[str, str] | None = None) -> None:
        self.config, self.data_dir, self.log = config, data_dir, log
        self.env = env or {}
        self.proc: subprocess.Popen[bytes] | None = None
        self.url = ""

    def start(self, timeout: float = 20.0) -> LedgerClient:
        url_file = self.data_dir / "api.url"
        url_file.unlink(missing_ok=True)
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "ledger_node.cli", "run", "--config", str(self.config)],
                cwd=REPO, stdout=out, stderr=subprocess.STDOUT,
                env={**os.environ, "PYTHONPATH": str(REPO), **self.env})
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"ledger node exited: {self.log.read_text()[-2000:]}")
            if url_file.exists() and url_file.read_text().strip():
                self.url = url_file.read_text().strip()
                client = LedgerClient(self.url, timeout=5)
                try:
                    client.height()
                    return client
                except LedgerError:
                    pass
            time.sleep(0.05)
        raise RuntimeError("ledger node did not come up")

    def client(self) -> LedgerClient:
        return LedgerClient(self.url, timeout=5)

    def kill9(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(timeout=10)
            self.proc = None

    def signal(self, sig: int) -> None:
        if self.proc is not None:
            self.proc.send_signal(sig)

    def stop(self) -> None:
        if self.proc is None:
            return
        self.proc.send_signal(signal.SIGCONT)
        self.proc.terminate()
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)
        self.proc = None
