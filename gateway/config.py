"""Gateway configuration: TOML file -> environment -> frozen :class:`GatewayConfig`.

Every problem is collected and reported at once (:class:`ConfigError` with
``problems``). Secrets are file paths. Environment overrides:
``SPLITFED_GATEWAY_<SECTION>_<KEY>`` (e.g. ``SPLITFED_GATEWAY_MQTT_PORT=1884``);
only this module reads the environment. Example::

    [gateway]
    org = "acme"
    session = "s1"                 # the ledger session this gateway serves
    group = "acme"                 # default: org
    signing_key = "/etc/splitfed/acme-gateway.key"
    state_dir = "/var/lib/splitfed-gateway"
    manifest = "/usr/share/splitfed/models/cnn1d/cut1/manifest.json"
    max_message_bytes = 4194304

    [ledger]
    url = "http://127.0.0.1:7050"
    chain_id = "consortium-1"
    poll_interval_s = 1.0

    [mqtt]
    host = "127.0.0.1"
    port = 1883
    username = "acme-gateway"
    password_file = "/etc/splitfed/mqtt-gateway.pw"

    [metrics]
    listen = "127.0.0.1:9108"

    [validator]                    # only in validator organisations
    signing_key = "/etc/splitfed/acme-validator.key"
    data_dir = "/var/lib/splitfed/heldout"   # own <dataset>_TEST.ts
    max_drop = 0.05                # reject a version this much worse than the last accepted
"""

from __future__ import annotations

import contextlib
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from protocol import envelope
from protocol.errors import ConfigError, TopicError
from protocol.topics import validate_id
from service.mqtt import TABLE_KEYS as MQTT_KEYS
from service.mqtt import MqttSettings, settings_from_table

__all__ = ["GatewayConfig", "ValidatorSettings", "load_config", "parse_config"]

_SECTIONS = {
    "gateway": {
        "org",
        "session",
        "group",
        "signing_key",
        "state_dir",
        "manifest",
        "max_message_bytes",
        "server_pubkey",
        "log_interval_s",
    },
    "ledger": {"url", "chain_id", "poll_interval_s"},
    "mqtt": set(MQTT_KEYS),
    "metrics": {"listen"},
    "validator": {"signing_key", "data_dir", "max_drop", "min_accuracy", "max_windows"},
}
_INTS = {"max_message_bytes", "port", "keepalive", "session_expiry"}
_FLOATS = {"poll_interval_s", "log_interval_s"}


@dataclass(frozen=True, slots=True, kw_only=True)
class GatewayConfig:
    org: str
    session: str
    group: str
    signing_key: Path
    state_dir: Path
    manifest: Path | None
    max_message_bytes: int
    server_pubkey: str | None  # hex; default: the ledger's genesis server key
    log_interval_s: float
    ledger_url: str
    chain_id: str
    poll_interval_s: float
    mqtt: MqttSettings
    metrics_host: str
    metrics_port: int | None
    validator: ValidatorSettings | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class ValidatorSettings:
    """Present when this organisation is a validator: how it votes on proposals."""

    signing_key: Path  # the <org>/validator key
    data_dir: Path  # its own held-out <dataset>_TEST.ts
    max_drop: float = 0.05
    min_accuracy: float = 0.0
    max_windows: int | None = None


def _env_overrides(raw: dict[str, dict[str, Any]], env: Mapping[str, str]) -> None:
    for section, keys in _SECTIONS.items():
        for key in keys:
            name = f"SPLITFED_GATEWAY_{section}_{key}".upper()
            if name in env:
                val: Any = env[name]
                if key in _INTS:
                    with contextlib.suppress(ValueError):  # else reported below as a type problem
                        val = int(val)
                elif key in _FLOATS:
                    with contextlib.suppress(ValueError):
                        val = float(val)
                raw.setdefault(section, {})[key] = val


def parse_config(data: Mapping[str, Any], env: Mapping[str, str] | None = None) -> GatewayConfig:
    """Validate a parsed TOML mapping (plus environment overrides)."""
    problems: list[str] = []
    raw: dict[str, dict[str, Any]] = {}
    for section, body in data.items():
        if section not in _SECTIONS:
            problems.append(f"unknown section [{section}]")
        elif not isinstance(body, Mapping):
            problems.append(f"[{section}] must be a table")
        else:
            raw[section] = dict(body)
            for k in body:
                if k not in _SECTIONS[section]:
                    problems.append(f"unknown key {section}.{k}")
    _env_overrides(raw, os.environ if env is None else env)
    g, led, mq, met, val = (
        raw.get(s, {}) for s in ("gateway", "ledger", "mqtt", "metrics", "validator")
    )

    def req_str(sec: Mapping[str, Any], name: str, key: str, default: str | None = None) -> str:
        v = sec.get(key, default)
        if not isinstance(v, str) or not v:
            problems.append(f"{name}.{key} is required (a non-empty string)")
            return ""
        return v

    def num(sec: Mapping[str, Any], name: str, key: str, default: float, kind: type) -> Any:
        v = sec.get(key, default)
        if (
            isinstance(v, bool)
            or not isinstance(v, int | float)
            or (kind is int and not isinstance(v, int))
        ):
            problems.append(f"{name}.{key} must be a{'n integer' if kind is int else ' number'}")
            return default
        if v <= 0:
            problems.append(f"{name}.{key} must be > 0")
            return default
        return v

    org = req_str(g, "gateway", "org")
    for what, ident in (
        ("gateway.org", org),
        ("gateway.session", g.get("session")),
        ("gateway.group", g.get("group", org)),
    ):
        if isinstance(ident, str) and ident:
            try:
                validate_id(ident, what=what)
            except TopicError as exc:
                problems.append(str(exc))
    session = req_str(g, "gateway", "session")
    group = g.get("group", org)
    key = req_str(g, "gateway", "signing_key")
    state_dir = req_str(g, "gateway", "state_dir")
    manifest = g.get("manifest")
    if manifest is not None and not isinstance(manifest, str):
        problems.append("gateway.manifest must be a path")
    server_pub = g.get("server_pubkey")
    if server_pub is not None and (not isinstance(server_pub, str) or len(server_pub) != 64):
        problems.append("gateway.server_pubkey must be 64 hex characters")
    max_bytes = num(g, "gateway", "max_message_bytes", envelope.MAX_ENVELOPE_BYTES, int)
    log_int = num(g, "gateway", "log_interval_s", 60.0, float)
    url = req_str(led, "ledger", "url")
    if url and not url.startswith(("http://", "https://")):
        problems.append("ledger.url must start with http:// or https://")
    chain = req_str(led, "ledger", "chain_id")
    poll = num(led, "ledger", "poll_interval_s", 1.0, float)
    metrics_host, metrics_port = "127.0.0.1", None
    listen = met.get("listen")
    if listen is not None:
        host, _, port = str(listen).rpartition(":")
        if not host or not port.isdigit() or not 0 <= int(port) < 65536:
            problems.append("metrics.listen must be HOST:PORT")
        else:
            metrics_host, metrics_port = host, int(port)
    mqtt: MqttSettings | None = None
    try:
        mqtt = settings_from_table(mq, client_id=f"splitfed-gateway-{org}")
    except ConfigError as exc:
        problems.extend(exc.problems)
    validator: ValidatorSettings | None = None
    if val:
        vkey = req_str(val, "validator", "signing_key")
        vdata = req_str(val, "validator", "data_dir")
        drop = val.get("max_drop", 0.05)
        min_acc = val.get("min_accuracy", 0.0)
        mw = val.get("max_windows")
        if not isinstance(drop, int | float) or not 0 <= drop <= 1:
            problems.append("validator.max_drop must be in [0, 1]")
        if not isinstance(min_acc, int | float) or not 0 <= min_acc <= 1:
            problems.append("validator.min_accuracy must be in [0, 1]")
        if mw is not None and (not isinstance(mw, int) or mw < 1):
            problems.append("validator.max_windows must be an integer >= 1")
        if vkey and vdata:
            validator = ValidatorSettings(
                signing_key=Path(vkey),
                data_dir=Path(vdata),
                max_drop=float(drop),
                min_accuracy=float(min_acc),
                max_windows=mw,
            )
    if problems or mqtt is None:
        raise ConfigError(problems)
    return GatewayConfig(
        org=org,
        session=session,
        group=str(group),
        signing_key=Path(key),
        state_dir=Path(state_dir),
        manifest=None if manifest is None else Path(manifest),
        max_message_bytes=int(max_bytes),
        server_pubkey=server_pub,
        log_interval_s=float(log_int),
        ledger_url=url,
        chain_id=chain,
        poll_interval_s=float(poll),
        mqtt=mqtt,
        metrics_host=metrics_host,
        metrics_port=metrics_port,
        validator=validator,
    )


def load_config(path: str | Path, env: Mapping[str, str] | None = None) -> GatewayConfig:
    """Read and validate a TOML config file."""
    try:
        with Path(path).open("rb") as f:
            data = tomllib.load(f)
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"cannot read config {path}: {exc}") from exc
    return parse_config(data, env)
