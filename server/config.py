"""Server configuration: TOML -> environment -> frozen :class:`ServerConfig`.

All problems are reported at once (:class:`ConfigError`). Environment
overrides: ``SPLITFED_SERVER_<SECTION>_<KEY>``; only this module reads the
environment. Example::

    [server]
    session = "s1"
    signing_key = "/etc/splitfed/server.key"
    data_dir = "/var/lib/splitfed/data"      # held-out set: <dataset>_TEST.ts
    manifest = "/usr/share/splitfed/models/cnn1d/cut1/manifest.json"   # optional
    lr = 0.001
    state_dir = "/var/lib/splitfed-server"   # finalised halves survive a restart
    proposal_deadline_s = 300   # no vote decision by then: drop the candidate, next round

    [round]
    min_devices = 2
    min_fraction = 0.8
    deadline_s = 120
    min_devices_to_commit = 1
    collect_deadline_s = 30

    [session]            # what `splitfed-server session create` writes to the ledger
    model_id = "cnn1d"
    cut = 1
    rounds = 5
    sfl_mode = "v1"
    groups = { org1 = ["org1"], org2 = ["org2"] }
    min_noise_multiplier = 1.0
    clip = 1.0
    max_epsilon = 8.0
    delta = 1e-5
    vote_quorum = 2

    [ledger]
    url = "http://127.0.0.1:7050"
    chain_id = "consortium-1"

    [mqtt]
    port = 1883

    [metrics]
    listen = "127.0.0.1:9109"
"""

from __future__ import annotations

import contextlib
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from protocol.errors import ConfigError, TopicError
from protocol.topics import validate_id
from protocol.training import PRIVACY_MODES
from server.round_policy import RoundPolicy
from service.mqtt import TABLE_KEYS as MQTT_KEYS
from service.mqtt import MqttSettings, settings_from_table

__all__ = ["ServerConfig", "SessionSpec", "load_config", "parse_config"]

_SECTIONS: dict[str, set[str]] = {
    "server": {
        "session",
        "signing_key",
        "data_dir",
        "manifest",
        "lr",
        "poll_interval_s",
        "state_dir",
        "replay_steps",
        "proposal_deadline_s",
    },
    "round": {
        "min_devices",
        "min_fraction",
        "deadline_s",
        "min_devices_to_commit",
        "collect_deadline_s",
        "steps_per_round",
    },
    "session": {
        "model_id",
        "cut",
        "rounds",
        "sfl_mode",
        "groups",
        "min_noise_multiplier",
        "clip",
        "max_epsilon",
        "delta",
        "vote_quorum",
        "require_dp_weights",
        "label_modes",
        "max_label_epsilon",
        "privacy_mode",
        "labels_public",
    },
    "ledger": {"url", "chain_id"},
    "mqtt": set(MQTT_KEYS),
    "metrics": {"listen"},
}


@dataclass(frozen=True, slots=True, kw_only=True)
class SessionSpec:
    """The ``session_create`` body fields (model hashes come from the manifest)."""

    model_id: str
    cut: int
    rounds: int
    sfl_mode: str
    groups: Mapping[str, list[str]]
    min_noise_multiplier: float
    clip: float
    max_epsilon: float
    delta: float
    vote_quorum: int | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True, kw_only=True)
class ServerConfig:
    session: str
    signing_key: Path
    data_dir: Path | None
    manifest: Path | None
    state_dir: Path | None
    lr: float
    poll_interval_s: float
    round_policy: RoundPolicy
    replay_steps: int
    collect_deadline_s: float
    steps_per_round: int | None = None
    session_spec: SessionSpec | None
    ledger_url: str
    chain_id: str
    mqtt: MqttSettings
    metrics_host: str
    metrics_port: int | None
    proposal_deadline_s: float = 300.0


def parse_config(data: Mapping[str, Any], env: Mapping[str, str] | None = None) -> ServerConfig:
    """Validate a parsed TOML mapping (plus environment overrides)."""
    problems: list[str] = []
    raw: dict[str, dict[str, Any]] = {}
    for section, body in data.items():
        if section not in _SECTIONS or not isinstance(body, Mapping):
            problems.append(f"unknown section or not a table: [{section}]")
            continue
        raw[section] = dict(body)
        problems += [f"unknown key {section}.{k}" for k in body if k not in _SECTIONS[section]]
    environ = os.environ if env is None else env
    for section, keys in _SECTIONS.items():
        for key in keys:
            name = f"SPLITFED_SERVER_{section}_{key}".upper()
            if name in environ:
                val: Any = environ[name]
                with contextlib.suppress(ValueError):  # else reported as a type problem
                    val = float(val) if "." in val or "e" in val.lower() else int(val)
                raw.setdefault(section, {})[key] = val
    s, r, led, mq, met = (raw.get(k, {}) for k in ("server", "round", "ledger", "mqtt", "metrics"))

    def text(sec: Mapping[str, Any], name: str, key: str) -> str:
        v = sec.get(key)
        if not isinstance(v, str) or not v:
            problems.append(f"{name}.{key} is required (a non-empty string)")
            return ""
        return v

    def num(sec: Mapping[str, Any], name: str, key: str, default: float) -> float:
        v = sec.get(key, default)
        if isinstance(v, bool) or not isinstance(v, int | float) or v <= 0:
            problems.append(f"{name}.{key} must be a number > 0")
            return default
        return float(v)

    session = text(s, "server", "session")
    if session:
        try:
            validate_id(session, what="server.session")
        except TopicError as exc:
            problems.append(str(exc))
    key = text(s, "server", "signing_key")
    url = text(led, "ledger", "url")
    chain = text(led, "ledger", "chain_id")
    lr = num(s, "server", "lr", 0.001)
    poll = num(s, "server", "poll_interval_s", 0.5)
    replay_steps = s.get("replay_steps", 0)
    if isinstance(replay_steps, bool) or not isinstance(replay_steps, int) or not (
            0 <= replay_steps <= 64):
        problems.append("server.replay_steps must be an integer in 0..64")
        replay_steps = 0
    proposal_deadline = num(s, "server", "proposal_deadline_s", 300.0)
    policy: RoundPolicy | None = None
    try:
        policy = RoundPolicy(
            min_devices=int(r.get("min_devices", 1)),
            min_fraction=float(r.get("min_fraction", 1.0)),
            deadline_s=float(r.get("deadline_s", 120.0)),
            min_devices_to_commit=int(r.get("min_devices_to_commit", 1)),
        )
    except (ConfigError, TypeError, ValueError) as exc:
        problems += exc.problems if isinstance(exc, ConfigError) else [f"[round]: {exc}"]
    collect = num(r, "round", "collect_deadline_s", 60.0)
    steps = r.get("steps_per_round")
    if steps is not None and (isinstance(steps, bool) or not isinstance(steps, int)
                              or not 1 <= steps <= 100_000):
        problems.append("round.steps_per_round must be an integer in 1..100000")
        steps = None
    spec = _session_spec(raw.get("session"), problems)
    host, port = "127.0.0.1", None
    if "listen" in met:
        h, _, p = str(met["listen"]).rpartition(":")
        if not h or not p.isdigit():
            problems.append("metrics.listen must be HOST:PORT")
        else:
            host, port = h, int(p)
    mqtt: MqttSettings | None = None
    try:
        mqtt = settings_from_table(mq, client_id="splitfed-server")
    except ConfigError as exc:
        problems.extend(exc.problems)
    if problems or mqtt is None or policy is None:
        raise ConfigError(problems or ["invalid configuration"])
    return ServerConfig(
        session=session,
        signing_key=Path(key),
        data_dir=Path(s["data_dir"]) if isinstance(s.get("data_dir"), str) else None,
        manifest=Path(s["manifest"]) if isinstance(s.get("manifest"), str) else None,
        state_dir=Path(s["state_dir"]) if isinstance(s.get("state_dir"), str) else None,
        lr=lr,
        poll_interval_s=poll,
        round_policy=policy,
        replay_steps=replay_steps,
        collect_deadline_s=collect,
        steps_per_round=steps,
        session_spec=spec,
        ledger_url=url,
        chain_id=chain,
        mqtt=mqtt,
        metrics_host=host,
        metrics_port=port,
        proposal_deadline_s=proposal_deadline,
    )


def _session_spec(sec: Mapping[str, Any] | None, problems: list[str]) -> SessionSpec | None:
    if sec is None:
        return None
    before = len(problems)
    groups = sec.get("groups")
    if (
        not isinstance(groups, Mapping)
        or not groups
        or not all(
            isinstance(v, list) and v and all(isinstance(o, str) for o in v)
            for v in groups.values()
        )
    ):
        problems.append("session.groups must map group id -> non-empty list of org ids")
        groups = {}
    mode = sec.get("sfl_mode", "v1")
    if mode not in ("v1", "v2"):
        problems.append("session.sfl_mode must be 'v1' or 'v2'")
    nums: dict[str, float] = {}
    for k, lo in (
        ("min_noise_multiplier", 0.0),
        ("clip", 0.0),
        ("max_epsilon", 0.0),
        ("delta", 0.0),
    ):
        v = sec.get(k)
        if (
            isinstance(v, bool)
            or not isinstance(v, int | float)
            or v < lo
            or (k != "min_noise_multiplier" and v == 0)
        ):
            problems.append(f"session.{k} must be a number > 0")
        else:
            nums[k] = float(v)
    if "delta" in nums and nums["delta"] >= 1:
        problems.append("session.delta must be < 1")
    for k in ("cut", "rounds"):
        if not isinstance(sec.get(k), int) or sec[k] < 1:
            problems.append(f"session.{k} must be an integer >= 1")
    if not isinstance(sec.get("model_id"), str):
        problems.append("session.model_id is required")
    vq = sec.get("vote_quorum")
    if vq is not None and (not isinstance(vq, int) or vq < 1):
        problems.append("session.vote_quorum must be an integer >= 1")
    if len(problems) > before:
        return None
    pm = sec.get("privacy_mode", "sl-frozen")
    if pm not in PRIVACY_MODES:
        problems.append(
            f"session.privacy_mode must be one of {', '.join(PRIVACY_MODES)}, got {pm!r}")
    if not isinstance(sec.get("labels_public", False), bool):
        problems.append("session.labels_public must be true or false")
    if len(problems) > before:
        return None
    extra = {
        k: sec[k]
        for k in ("require_dp_weights", "label_modes", "max_label_epsilon", "labels_public")
        if k in sec
    }
    extra["privacy_mode"] = pm
    return SessionSpec(
        model_id=str(sec["model_id"]),
        cut=int(sec["cut"]),
        rounds=int(sec["rounds"]),
        sfl_mode=str(mode),
        groups={str(g): list(v) for g, v in groups.items()},
        min_noise_multiplier=nums["min_noise_multiplier"],
        clip=nums["clip"],
        max_epsilon=nums["max_epsilon"],
        delta=nums["delta"],
        vote_quorum=vq,
        extra=extra,
    )


def load_config(path: str | Path, env: Mapping[str, str] | None = None) -> ServerConfig:
    """Read and validate a TOML config file."""
    try:
        with Path(path).open("rb") as f:
            data = tomllib.load(f)
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"cannot read config {path}: {exc}") from exc
    return parse_config(data, env)
