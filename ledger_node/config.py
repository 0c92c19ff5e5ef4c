"""Node configuration: TOML file, then environment, validated all at once.

Example ``/etc/splitfed/ledger.toml``::

    data_dir = "/var/lib/splitfed/ledger"      # holds ledger.sqlite
    listen = "127.0.0.1:7070"                  # loopback API
    node_id = "org1"                           # this node's name (logs, cut markers)
    validator_keys = { org1 = "/etc/splitfed/keys/org1-validator.key" }

    [etcd]                                     # only for a genesis with ordering = etcd
    endpoints = ["http://127.0.0.1:2379", "http://127.0.0.1:22379"]
    timeout_s = 2.0

    [http]                                     # optional: API worker pool (ledger_node.limits)
    threads = 16
    max_long_polls = 8
    connection_limit = 512

Under systemd (``Type=notify``) ``NOTIFY_SOCKET`` and ``WATCHDOG_USEC`` are
read here too. Environment overrides ``SPLITFED_LEDGER_<KEY>`` (``DATA_DIR``, ``LISTEN``,
``NODE_ID``) and ``SPLITFED_LEDGER_ETCD_ENDPOINTS`` (comma-separated), the same
``SPLITFED_<SERVICE>_...`` form as the agent, gateway and server. This
is the only module of ``ledger_node`` that reads the environment. Key files
are paths; the keys themselves are loaded by the app, never logged.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ledger_node.limits import HttpSettings
from protocol.errors import ConfigError

__all__ = ["NodeConfig", "load_config", "parse_config"]

ENV_PREFIX = "SPLITFED_LEDGER_"
_HTTP_KEYS = ("threads", "max_long_polls", "connection_limit")


@dataclass(frozen=True, slots=True, kw_only=True)
class NodeConfig:
    data_dir: Path
    host: str = "127.0.0.1"
    port: int = 7070
    node_id: str = "node"
    validator_keys: Mapping[str, Path] = field(default_factory=dict)
    etcd_endpoints: tuple[str, ...] = ()
    etcd_timeout_s: float = 2.0
    notify_socket: str | None = None  # $NOTIFY_SOCKET under systemd Type=notify
    watchdog_s: float | None = None  # half of $WATCHDOG_USEC: how often to ping
    http: HttpSettings = field(default_factory=HttpSettings)

    def __post_init__(self) -> None:
        problems = []
        if not 0 <= self.port <= 65535:
            problems.append("listen: port must be in [0, 65535]")
        if self.host not in ("127.0.0.1", "::1", "localhost"):
            problems.append("listen: the API has no authentication; bind it to loopback only")
        if not self.node_id or "/" in self.node_id:
            problems.append("node_id must be non-empty without '/'")
        if any(not e.startswith("http://") and not e.startswith("https://")
               for e in self.etcd_endpoints):
            problems.append("etcd.endpoints must be http(s):// URLs")
        if not 0 < self.etcd_timeout_s <= 60:
            problems.append("etcd.timeout_s must be in (0, 60]")
        if problems:
            raise ConfigError(problems)


def parse_config(raw: Mapping[str, Any], env: Mapping[str, str] | None = None) -> NodeConfig:
    env = os.environ if env is None else env
    problems: list[str] = []
    data = dict(raw)
    etcd = dict(data.get("etcd", {}))
    for k in ("DATA_DIR", "LISTEN", "NODE_ID"):
        if ENV_PREFIX + k in env:
            data[k.lower()] = env[ENV_PREFIX + k]
    if ENV_PREFIX + "ETCD_ENDPOINTS" in env:
        etcd["endpoints"] = [e for e in env[ENV_PREFIX + "ETCD_ENDPOINTS"].split(",") if e]
    known = {"data_dir", "listen", "node_id", "validator_keys", "etcd", "http"}
    problems += [f"unknown key {k!r}" for k in data if k not in known]
    if "data_dir" not in data:
        problems.append("data_dir is required")
    host, port = "127.0.0.1", 7070
    listen = str(data.get("listen", "127.0.0.1:7070"))
    h, sep, p = listen.rpartition(":")
    if not sep or not p.isdigit():
        problems.append(f"listen must be host:port, got {listen!r}")
    else:
        host, port = h.strip("[]"), int(p)
    vkeys = data.get("validator_keys", {})
    if not isinstance(vkeys, dict):
        problems.append("validator_keys must be a table validator-id = key path")
        vkeys = {}
    endpoints = etcd.get("endpoints", [])
    if not isinstance(endpoints, list):
        problems.append("etcd.endpoints must be a list of URLs")
        endpoints = []
    http = _http(data.get("http", {}), problems)
    if problems:
        raise ConfigError(problems)
    return NodeConfig(data_dir=Path(str(data["data_dir"])), host=host, port=port,
                      node_id=str(data.get("node_id", "node")),
                      validator_keys={str(k): Path(str(v)) for k, v in vkeys.items()},
                      etcd_endpoints=tuple(str(e) for e in endpoints),
                      etcd_timeout_s=float(etcd.get("timeout_s", 2.0)),
                      notify_socket=env.get("NOTIFY_SOCKET") or None,
                      watchdog_s=_watchdog(env), http=http)


def _http(raw: Any, problems: list[str]) -> HttpSettings:
    if not isinstance(raw, dict):
        problems.append("http must be a table")
        return HttpSettings()
    problems += [f"unknown key 'http.{k}'" for k in raw if k not in _HTTP_KEYS]
    vals: dict[str, int] = {}
    for k in _HTTP_KEYS:
        if k in raw:
            v = raw[k]
            if isinstance(v, bool) or not isinstance(v, int):
                problems.append(f"http.{k} must be an integer")
            else:
                vals[k] = v
    try:
        return HttpSettings(**vals)
    except ConfigError as exc:
        problems += exc.problems
        return HttpSettings()


def _watchdog(env: Mapping[str, str]) -> float | None:
    usec, pid = env.get("WATCHDOG_USEC", ""), env.get("WATCHDOG_PID")
    if usec.isdigit() and (not pid or pid == str(os.getpid())):
        return int(usec) / 2e6
    return None


def load_config(path: str | Path, env: Mapping[str, str] | None = None) -> NodeConfig:
    try:
        raw = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"cannot read config {path}: {exc}") from exc
    return parse_config(raw, env)
