"""Wiring of a full node: storage + engine + orderer + loopback API.

``LedgerApp(config).start()`` opens the node, picks the orderer the genesis
names (solo or etcd), starts the API and writes ``<data_dir>/api.url`` (the
URL actually bound, useful with port 0). ``stop()`` stops the API, then the
orderer, then closes the database.
"""

from __future__ import annotations

import logging
import signal
import threading
from types import FrameType

from ledger_node.api import LedgerApi
from ledger_node.config import NodeConfig
from ledger_node.errors import LedgerError
from ledger_node.etcd_client import EtcdClient
from ledger_node.etcd_orderer import EtcdOrderer
from ledger_node.node import LedgerNode
from ledger_node.ordering import Orderer
from ledger_node.solo import SoloOrderer
from protocol.errors import ConfigError
from protocol.keys import load_signing_key
from service.notify import SystemdNotifier

__all__ = ["LedgerApp"]

log = logging.getLogger(__name__)


class LedgerApp:
    def __init__(self, config: NodeConfig) -> None:
        self.config = config
        # sd_notify(3): a no-op outside systemd (the socket comes from the config's environment)
        self.notifier = SystemdNotifier({"NOTIFY_SOCKET": config.notify_socket or ""})
        keys = {vid: load_signing_key(p) for vid, p in config.validator_keys.items()}
        self.node = LedgerNode(config.data_dir, validator_keys=keys)
        self.orderer: Orderer
        if self.node.genesis.ordering == "etcd":
            if not config.etcd_endpoints:
                self.node.close()
                raise ConfigError("genesis says ordering = etcd but etcd.endpoints is empty")
            client = EtcdClient(config.etcd_endpoints, timeout=config.etcd_timeout_s)
            self.etcd_orderer: EtcdOrderer | None = EtcdOrderer(
                self.node, client, node_id=config.node_id, evidence_keys=keys)
            self.orderer = self.etcd_orderer
        else:
            self.etcd_orderer = None
            self.orderer = SoloOrderer(self.node, proposer=config.node_id)
        try:
            self.api = LedgerApi(self.node, self.orderer, host=config.host, port=config.port,
                                 settings=config.http)
        except OSError as exc:
            self.node.close()
            raise LedgerError(f"cannot listen on {config.host}:{config.port}: {exc}") from exc

    @property
    def url(self) -> str:
        return self.api.url

    def start(self) -> None:
        if self.etcd_orderer is not None:
            try:
                self.etcd_orderer.republish_own()
            except LedgerError as exc:
                log.warning("could not republish signatures yet: %s", exc)
        self.orderer.start()
        self.api.start()
        (self.config.data_dir / "api.url").write_text(self.api.url + "\n")
        log.info("ledger node %s serving %s at height %d (%s ordering)", self.config.node_id,
                 self.api.url, self.node.height, self.node.genesis.ordering)

    def stop(self) -> None:
        self.api.stop()
        self.orderer.stop()
        self.node.close()

    def run_forever(self) -> None:
        """Start, then block until SIGTERM/SIGINT; stop cleanly."""
        done = threading.Event()

        def _on_signal(signum: int, frame: FrameType | None) -> None:
            done.set()

        old = {s: signal.signal(s, _on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
        self.start()
        self.notifier.ready(status=f"serving {self.url} at height {self.node.height}")
        tick = self.config.watchdog_s or 0.5
        try:
            while not done.wait(min(tick, 0.5)):
                if self.config.watchdog_s:
                    self.notifier.watchdog()
        finally:
            self.notifier.stopping()
            for s, h in old.items():
                signal.signal(s, h)
            self.stop()

