"""A two-org training stack for fault tests: real ledger API, Mosquitto, apps, devices.

The same parts as ``test_two_orgs_training`` (whose :class:`Device` it uses):
a solo ledger node behind its real HTTP API, real Mosquitto, the real
gateway and server apps on their own threads, and simulated devices running
the real LiteRT client half. :meth:`Stack.restart_server` replaces the
server app by a fresh one on the same config (its in-memory state is gone,
its state directory stays), as a crashed and restarted process would.
"""

from __future__ import annotations

import threading
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from deploy.broker import MosquittoBroker
from gateway.app import GatewayApp
from gateway.config import parse_config as gateway_config
from models.data import WindowConfig, load_windows
from protocol import topics
from protocol.keys import save_signing_key
from protocol.messages import Command, DeviceState
from server.app import ServerApp
from server.cli import main as server_main
from server.config import parse_config as server_config
from server.core import Phase
from service.ledger_client import LedgerClient
from tests.integration.server.test_two_orgs_training import _GW_KEYS, Device, _manifest, _wait
from tests.unit.ledger_node.conftest import Consortium

ORGS = ("org1", "org2")
STEPS = 2


class Stack:
    """Build with :meth:`start`; always :meth:`close` (threads, sockets, brokers)."""

    def __init__(
        self,
        *,
        tmp_path: Path,
        data_dir: Path,
        client: LedgerClient,
        consortium: Consortium,
        broker: MosquittoBroker,
        rounds: int,
        server_extra: str = "",
        gateway_ledger_url: dict[str, str] | None = None,
    ) -> None:
        self.tmp, self.client, self.c, self.rounds = tmp_path, client, consortium, rounds
        m = _manifest()
        self.m = m
        keys = tmp_path / "keys"
        server_key = save_signing_key(consortium.keys["server"], keys / "server.key")
        self.cfg_text = (
            f'[server]\nsession = "s1"\nsigning_key = "{server_key}"\ndata_dir = "{data_dir}"\n'
            f"lr = 0.003\npoll_interval_s = 0.05\n{server_extra}\n"
            f"[round]\nmin_devices = 4\ndeadline_s = 60\ncollect_deadline_s = 30\n"
            f'[session]\nmodel_id = "cnn1d"\ncut = 1\nrounds = {rounds}\nsfl_mode = "v1"\n'
            'groups = { org1 = ["org1"], org2 = ["org2"] }\nmin_noise_multiplier = 0.5\n'
            "clip = 1.0\nmax_epsilon = 50.0\ndelta = 1e-5\nvote_quorum = 2\n"
            # simulated devices upload DP-SGD client halves and send labels in clear
            "privacy_mode = \"sl-dpsgd\"\nlabels_public = true\n"
            f'[ledger]\nurl = "{client.base_url}"\nchain_id = "{consortium.genesis.chain_id}"\n'
            f'[mqtt]\nport = {broker.port}\nclient_id = "server"\n'
        )
        cfg_path = tmp_path / "server.toml"
        cfg_path.write_text(self.cfg_text)
        assert server_main(["session", "create", "--config", str(cfg_path)]) == 0
        for org in ORGS:
            for d in ("d1", "d2"):
                assert client.submit_and_wait(consortium.register(org, d)).valid
            _GW_KEYS[org] = consortium.keys[f"{org}/gateway"].verify_key
        win = load_windows(
            WindowConfig(
                dataset=m.dataset,
                length=int(m.window["length"]),
                mode=m.window["mode"],
                per_window=bool(m.window["per_window"]),
            ),
            data_dir=data_dir,
        )
        shards = np.array_split(np.random.default_rng(1).permutation(len(win.x_train)), 4)
        urls = gateway_ledger_url or {}
        self.gateway_cfg: dict[str, dict[str, Any]] = {}
        for org in ORGS:
            gw_key = save_signing_key(consortium.keys[f"{org}/gateway"], keys / f"{org}-gw.key")
            val_key = save_signing_key(
                consortium.keys[f"{org}/validator"], keys / f"{org}-val.key"
            )
            self.gateway_cfg[org] = {
                "gateway": {
                    "org": org,
                    "session": "s1",
                    "signing_key": str(gw_key),
                    "state_dir": str(tmp_path / f"{org}-state"),
                },
                "ledger": {
                    "url": urls.get(org, client.base_url),
                    "chain_id": consortium.genesis.chain_id,
                    "poll_interval_s": 0.05,
                },
                "mqtt": {"port": broker.port, "client_id": f"gw-{org}"},
                "validator": {
                    "signing_key": str(val_key),
                    "data_dir": str(data_dir),
                    "max_drop": 0.5,
                    "max_windows": 200,
                },
            }
        self.gateways = [GatewayApp(gateway_config(self.gateway_cfg[o], env={})) for o in ORGS]
        self._gw_threads: dict[str, threading.Thread] = {}
        validators = client.validators()
        self.devices = [
            Device(
                org,
                d,
                consortium.devices[f"{org}/{d}"],
                m,
                win.x_train[shards[i]],
                win.y_train[shards[i]],
                broker.port,
                consortium.keys["server"].verify_key,
                validators,
            )
            for i, (org, d) in enumerate((o, d) for o in ORGS for d in ("d1", "d2"))
        ]
        self.server = self._new_server()
        self.threads: list[threading.Thread] = []
        self.servers = [self.server]

    def _new_server(self) -> ServerApp:
        return ServerApp(server_config(tomllib.loads(self.cfg_text), env={}))

    def _spawn(self, app: GatewayApp | ServerApp) -> threading.Thread:
        t = threading.Thread(target=app.run, name=f"app-{len(self.threads)}")
        self.threads.append(t)
        t.start()
        return t

    def start(self) -> None:
        for gw in self.gateways:
            gw.start()
        for dev in self.devices:
            dev.link.connect()
            birth = DeviceState(org=dev.org, device=dev.name, online=True, bd_seq=0)
            dev.link.publish(topics.state(dev.org, dev.name), birth.to_json(), retain=True)
        for org, gw in zip(ORGS, self.gateways, strict=True):
            self._gw_threads[org] = self._spawn(gw)
        _wait(lambda: all(g.core.policy is not None for g in self.gateways), "session loaded")
        self.server.start()
        self._spawn(self.server)

    def restart_server(self) -> ServerApp:
        """Stop the running server (as a crash would: nothing saved on the way out), start anew."""
        self.server.stop()
        self.threads[-1].join(timeout=15)
        assert not self.threads[-1].is_alive()
        self.server.close()
        self.server = self._new_server()
        self.servers.append(self.server)
        self.server.start()
        self._spawn(self.server)
        return self.server

    def restart_gateway(self, org: str, *, ledger_url: str | None = None) -> GatewayApp:
        """Stop ``org``'s gateway (its in-memory state is lost) and start a new one."""
        i = ORGS.index(org)
        old = self.gateways[i]
        old.stop()
        self._gw_threads[org].join(timeout=15)
        old.close()
        if ledger_url is not None:
            self.gateway_cfg[org]["ledger"]["url"] = ledger_url
        gw = GatewayApp(gateway_config(self.gateway_cfg[org], env={}))
        self.gateways[i] = gw
        gw.start()
        self._gw_threads[org] = self._spawn(gw)
        return gw

    def train_round(self, rnd: int) -> None:
        """Devices train round ``rnd`` once the server started it, then upload."""
        for dev in self.devices:
            dev.take(Command, lambda msg, r=rnd: msg.kind == "start_round" and msg.round == r)  # type: ignore[misc]
        for _ in range(STEPS):
            for dev in self.devices:
                dev.train_step(rnd, lr=0.003)
        for dev in self.devices:
            dev.upload(rnd)

    def wait_decided(self, rnd: int, timeout: float = 60.0) -> None:
        _wait(
            lambda: self.server.core.round > rnd or self.server.core.phase is Phase.DONE,
            f"round {rnd} decided",
            timeout=timeout,
        )

    def wait(self, pred: Callable[[], bool], what: str, timeout: float = 60.0) -> None:
        _wait(pred, what, timeout=timeout)

    def invalid_txs(self) -> list[tuple[int, str, Any]]:
        return [
            (h, t["kind"], t["reason"])
            for h in range(1, self.client.height() + 1)
            for t in self.client.block(h)["txs"]
            if not t["valid"]
        ]

    def close(self) -> None:
        apps: list[GatewayApp | ServerApp] = [*self.gateways, self.server]
        for a in apps:
            a.stop()
        for t in self.threads:
            if t.is_alive():
                t.join(timeout=15)
        for dev in self.devices:
            dev.link.close()
        for a in apps:
            a.close()
