"""Agent configuration: one frozen object built from TOML, then environment, then CLI.

The file is ``/etc/splitfed/agent.toml`` on a board. Every value can be
overridden from the environment as ``SPLITFED_AGENT_<SECTION>_<KEY>``
(e.g. ``SPLITFED_AGENT_MQTT_HOST=10.0.0.5``; values are parsed as TOML
scalars, so numbers and booleans keep their type). This module is the only
place in ``agent/`` that reads the environment.

Validation collects every problem before failing: :func:`load_config` raises
one :class:`~protocol.errors.ConfigError` whose ``problems`` list names each
key path, so ``splitfed-agent config check`` shows them all at once.
Secrets (MQTT password, TLS key) are file paths, never values.

Sections: ``[device]`` org, id, state_dir, key_file; ``[mqtt]`` (see
:class:`agent.mqtt.MqttConfig`); ``[model]`` manifest, server_key,
genesis; ``[privacy]``; ``[training]``; ``[spool]``; ``[[sensors.devices]]``
(see :mod:`agent.sensors.config`). docs/agent.md has a commented example.
"""

from __future__ import annotations

import math
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

from agent.mqtt import MqttConfig
from agent.sensors.config import SensorsConfig, parse_sensors_config
from protocol.errors import ConfigError, SplitfedError
from protocol.topics import validate_id
from service.mqtt import TABLE_KEYS as MQTT_TABLE_KEYS

__all__ = ["AgentConfig", "DeviceSection", "ModelSection", "PrivacySection", "SpoolSection",
           "TrainingSection", "load_config", "parse_config"]

ENV_PREFIX = "SPLITFED_AGENT_"
_SECTIONS = ("device", "mqtt", "model", "privacy", "training", "spool")


@dataclass(frozen=True, slots=True, kw_only=True)
class DeviceSection:
    org: str
    id: str
    state_dir: Path
    key_file: Path


@dataclass(frozen=True, slots=True, kw_only=True)
class ModelSection:
    manifest: Path                # client/server manifest of the model half this board runs
    server_key: Path              # server's Ed25519 public key (hex): verifies gradients
    genesis: Path | None = None   # ledger genesis: trust anchor for model proofs (light client)
    require_proof: bool = True    # refuse a model announcement without a valid ledger proof


PrivacyMode = Literal["sl-frozen", "sl-dpsgd", "none"]
LabelPolicy = Literal["randomized_response", "public"]


@dataclass(frozen=True, slots=True, kw_only=True)
class PrivacySection:
    """Local DP settings: the session's privacy ``mode`` and its parameters.

    ``mode`` (docs/privacy.md has the guarantee of each):

    * ``sl-frozen`` (default): the client half is never updated and never
      uploaded; every activation row is charged to its record.
    * ``sl-dpsgd``: the client half changes only through DP-SGD steps, each
      charged to the records of its batch; round-end weights are then
      post-processing and cost nothing more.
    * ``none``: explicitly non-private; rows leave unclipped and un-noised,
      every message says ``mechanism = "none"``, epsilon is reported as
      infinite, and gateways reject it unless the session says ``none`` too.

    ``labels``: ``randomized_response`` (default, needs ``label_epsilon``) or
    ``public`` (the session declares labels public; every epsilon shown says so).
    """

    epsilon_budget: float
    mode: PrivacyMode = "sl-frozen"
    delta: float = 1e-5
    clip_norm: float = 1.0
    noise_multiplier: float = 1.0
    labels: LabelPolicy = "randomized_response"
    label_epsilon: float | None = None
    dp_sgd_clip_norm: float = 1.0
    dp_sgd_noise_multiplier: float = 1.0
    adjacency: Literal["replace", "zero_out"] = "replace"

    @property
    def enabled(self) -> bool:
        """False only in the explicit non-private mode ``none``."""
        return self.mode != "none"


@dataclass(frozen=True, slots=True, kw_only=True)
class TrainingSection:
    record_capacity: int = 4096
    max_pending: int = 4
    gradient_timeout_s: float = 30.0
    wire_dtype: Literal["float16", "float32"] = "float16"
    inference_batch: int = 8
    steps_per_round: int = 8          # local batches per round unless start_round says otherwise
    batch_size: int = 16              # records per batch (capped at the model's max_batch)


@dataclass(frozen=True, slots=True, kw_only=True)
class SpoolSection:
    max_messages: int = 100_000
    max_bytes: int = 256 * 1024 * 1024
    overflow: Literal["drop_oldest", "stop_sampling"] = "drop_oldest"


@dataclass(frozen=True, slots=True, kw_only=True)
class AgentConfig:
    device: DeviceSection
    mqtt: MqttConfig
    model: ModelSection
    privacy: PrivacySection
    training: TrainingSection
    spool: SpoolSection
    sensors: SensorsConfig

    @property
    def spool_path(self) -> Path:
        return self.device.state_dir / "spool.sqlite"

    @property
    def accountant_path(self) -> Path:
        return self.device.state_dir / "privacy.json"

    @property
    def status_path(self) -> Path:
        return self.device.state_dir / "status.json"


class _Problems:
    def __init__(self) -> None:
        self.items: list[str] = []

    def take(self, table: Mapping[str, Any], key: str, path: str, kinds: tuple[type, ...],
             default: Any = ...) -> Any:
        if key not in table:
            if default is ...:
                self.items.append(f"{path}.{key}: required")
            return None if default is ... else default
        value = table[key]
        if float in kinds and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if (isinstance(value, bool) and bool not in kinds) or not isinstance(value, kinds):
            want = "/".join(k.__name__ for k in kinds)
            self.items.append(f"{path}.{key}: expected {want}, got {type(value).__name__}")
            return None if default is ... else default
        return value

    def check(self, ok: bool, message: str) -> None:
        if not ok:
            self.items.append(message)

    def unknown(self, table: Mapping[str, Any], path: str, known: set[str]) -> None:
        for key in sorted(set(table) - known):
            self.items.append(f"{path}.{key}: unknown key")


def _section(raw: Mapping[str, Any], name: str, p: _Problems) -> Mapping[str, Any]:
    value = raw.get(name, {})
    if not isinstance(value, Mapping):
        p.items.append(f"{name}: must be a table")
        return {}
    return value


def _path(v: Any, base: Path) -> Path | None:
    """A configured path; relative paths are relative to the config file's directory."""
    if v is None:
        return None
    return Path(v) if Path(v).is_absolute() else (base / Path(v)).resolve()


def _device(t: Mapping[str, Any], p: _Problems, base: Path) -> DeviceSection | None:
    p.unknown(t, "device", {"org", "id", "state_dir", "key_file"})
    org = p.take(t, "org", "device", (str,))
    dev = p.take(t, "id", "device", (str,))
    for what, v in (("org", org), ("id", dev)):
        if isinstance(v, str):
            try:
                validate_id(v, what=what)
            except SplitfedError as exc:
                p.items.append(f"device.{what}: {exc}")
    state = _path(p.take(t, "state_dir", "device", (str,), "/var/lib/splitfed-agent"), base)
    key = _path(p.take(t, "key_file", "device", (str,), None), base)
    if org is None or dev is None or state is None:
        return None
    return DeviceSection(org=org, id=dev, state_dir=state, key_file=key or state / "device.key")


def _mqtt(t: Mapping[str, Any], dev: DeviceSection | None, p: _Problems,
          base: Path) -> MqttConfig | None:
    # the shared [mqtt] keys (service.mqtt.TABLE_KEYS, as in the gateway and server configs)
    # plus the agent's own
    files = ("password_file", "ca_file", "cert_file", "key_file")
    known = {*MQTT_TABLE_KEYS, "max_inflight", "sparkplug"}
    p.unknown(t, "mqtt", known)
    kw: dict[str, Any] = {}
    kw["host"] = p.take(t, "host", "mqtt", (str,))
    for key in ("port", "keepalive", "session_expiry", "max_inflight"):
        if (v := p.take(t, key, "mqtt", (int,), None)) is not None:
            kw[key] = v
    for key in ("client_id", "username"):
        kw[key] = p.take(t, key, "mqtt", (str,), None)
    kw["sparkplug"] = bool(p.take(t, "sparkplug", "mqtt", (bool,), False))
    for key in files:
        kw[key] = _path(p.take(t, key, "mqtt", (str,), None), base)
    # read at each connect: a missing file would only show up as a failed connection later
    for key in files:
        if kw[key] is not None and not kw[key].is_file():
            p.items.append(f"mqtt.{key}: {kw[key]} does not exist")
    if dev is None or kw["host"] is None:
        return None
    try:
        return MqttConfig(org=dev.org, device=dev.id, **kw)
    except ConfigError as exc:
        p.items.extend(f"mqtt: {m}" for m in exc.problems)
        return None


def _model(t: Mapping[str, Any], p: _Problems, base: Path) -> ModelSection | None:
    p.unknown(t, "model", {"manifest", "server_key", "genesis", "require_proof"})
    manifest = _path(p.take(t, "manifest", "model", (str,)), base)
    server_key = _path(p.take(t, "server_key", "model", (str,)), base)
    genesis = _path(p.take(t, "genesis", "model", (str,), None), base)
    require = p.take(t, "require_proof", "model", (bool,), True)
    for what, path in (("manifest", manifest), ("server_key", server_key), ("genesis", genesis)):
        if path is not None and not path.is_file():
            p.items.append(f"model.{what}: {path} does not exist")
    if require and genesis is None:
        p.items.append("model.genesis: required when model.require_proof is true")
    if manifest is None or server_key is None:
        return None
    return ModelSection(manifest=manifest, server_key=server_key, genesis=genesis,
                        require_proof=require)


def _positive(p: _Problems, path: str, v: float | None, *, upper: float | None = None) -> None:
    if v is not None and not (math.isfinite(v) and v > 0 and (upper is None or v < upper)):
        bound = f" and < {upper}" if upper is not None else ""
        p.items.append(f"{path}: must be > 0{bound}, got {v}")


_REMOVED_PRIVACY_KEYS = {
    "enabled": 'privacy.enabled was removed: say privacy.mode = "none" for an explicit '
               "non-private run (epsilon is then reported as infinite)",
    "weights": 'privacy.weights was removed: "unprotected" uploads had no bound; choose '
               'privacy.mode = "sl-frozen" (client half never uploaded) or "sl-dpsgd"',
}


def _privacy(t: Mapping[str, Any], p: _Problems) -> PrivacySection | None:
    floats = ("epsilon_budget", "delta", "clip_norm", "noise_multiplier", "label_epsilon",
              "dp_sgd_clip_norm", "dp_sgd_noise_multiplier")
    choices = {"mode": ("sl-frozen", "sl-dpsgd", "none"),
               "labels": ("randomized_response", "public"),
               "adjacency": ("replace", "zero_out")}
    for key, why in _REMOVED_PRIVACY_KEYS.items():
        if key in t:
            p.items.append(why)
    p.unknown(t, "privacy", set(floats) | set(choices) | set(_REMOVED_PRIVACY_KEYS))
    kw: dict[str, Any] = {}
    for key, allowed in choices.items():
        v = p.take(t, key, "privacy", (str,), None)
        if v is not None:
            if key == "labels" and v == "plain":
                p.items.append('privacy.labels = "plain" is now "public": labels sent in '
                               "clear are declared public on the ledger and are not protected")
                continue
            if key == "mode" and v == "fl-dpsgd":
                p.items.append('privacy.mode = "fl-dpsgd" is not supported by this agent '
                               'yet; use "sl-frozen" or "sl-dpsgd"')
                continue
            p.check(v in allowed, f"privacy.{key}: must be one of {', '.join(allowed)}, got {v!r}")
            kw[key] = v
    private = kw.get("mode", "sl-frozen") != "none"
    for key in floats:
        required = key == "epsilon_budget" and private
        v = p.take(t, key, "privacy", (float,), ... if required else None)
        _positive(p, f"privacy.{key}", v, upper=1.0 if key == "delta" else None)
        if v is not None:
            kw[key] = v
    if private and kw.get("labels", "randomized_response") == "randomized_response":
        p.check("label_epsilon" in kw,
                "privacy.label_epsilon: required with labels = \"randomized_response\" (the "
                'default); or declare labels = "public"')
    if not private:
        # nothing is charged; the budget only sizes an accountant that stays at zero, and
        # every place that shows epsilon says "inf" for this mode (agent.outbox)
        kw.setdefault("epsilon_budget", 1.0)
        kw.setdefault("labels", "public")
        if kw.get("labels") == "randomized_response":
            p.items.append('privacy: labels = "randomized_response" needs a private mode')
    if "epsilon_budget" not in kw:
        return None
    try:
        return PrivacySection(**kw)
    except TypeError as exc:  # only reachable with a bad choice already reported
        p.items.append(f"privacy: {exc}")
        return None


def _simple(t: Mapping[str, Any], name: str, cls: type[Any], p: _Problems) -> Any:
    kinds: dict[str, tuple[type, ...]] = {}
    defaults = cls()
    for f in cls.__dataclass_fields__.values():
        value = getattr(defaults, f.name)
        kinds[f.name] = (float,) if isinstance(value, float) else (type(value),)
    p.unknown(t, name, set(kinds))
    kw = {}
    for key, k in kinds.items():
        v = p.take(t, key, name, k, None)
        if v is None:
            continue
        if isinstance(v, int | float) and not isinstance(v, bool):
            _positive(p, f"{name}.{key}", float(v))
        kw[key] = v
    return cls(**kw)


def parse_config(raw: Mapping[str, Any], *, base_dir: Path) -> AgentConfig:
    """Validate a parsed TOML document; :class:`ConfigError` lists every problem."""
    p = _Problems()
    p.unknown(raw, "", {"device", "mqtt", "model", "privacy", "training", "spool", "sensors"})
    dev = _device(_section(raw, "device", p), p, base_dir)
    mqtt = _mqtt(_section(raw, "mqtt", p), dev, p, base_dir)
    model = _model(_section(raw, "model", p), p, base_dir)
    privacy = _privacy(_section(raw, "privacy", p), p)
    training = _simple(_section(raw, "training", p), "training", TrainingSection, p)
    p.check(training.wire_dtype in ("float16", "float32"),
            f"training.wire_dtype: must be float16 or float32, got {training.wire_dtype!r}")
    spool = _simple(_section(raw, "spool", p), "spool", SpoolSection, p)
    p.check(spool.overflow in ("drop_oldest", "stop_sampling"),
            f"spool.overflow: must be drop_oldest or stop_sampling, got {spool.overflow!r}")
    sensors, problems = parse_sensors_config(_section(raw, "sensors", p))
    p.items.extend(problems)
    if p.items or None in (dev, mqtt, model, privacy, sensors):
        raise ConfigError(p.items or ["incomplete configuration"])
    assert dev and mqtt and model and privacy and sensors  # for the type checker
    if mqtt.sparkplug:  # one Sparkplug device (DBIRTH/DDEATH) per sensor device
        mqtt = replace(mqtt, sparkplug_devices=tuple(d.name for d in sensors.devices))
    return AgentConfig(device=dev, mqtt=mqtt, model=model, privacy=privacy,
                       training=training, spool=spool, sensors=sensors)


def _apply_env(raw: dict[str, Any], environ: Mapping[str, str], p: list[str]) -> None:
    for name, text in environ.items():
        if not name.startswith(ENV_PREFIX):
            continue
        parts = name[len(ENV_PREFIX):].lower().split("_", 1)
        if len(parts) != 2 or not all(parts) or parts[0] not in _SECTIONS:
            p.append(f"{name}: expected {ENV_PREFIX}<SECTION>_<KEY> with SECTION one of "
                     f"{', '.join(s.upper() for s in _SECTIONS)}")
            continue
        try:
            value = tomllib.loads(f"v = {text}")["v"]
        except tomllib.TOMLDecodeError:
            value = text  # a bare string
        section = raw.setdefault(parts[0], {})
        if isinstance(section, dict):
            section[parts[1]] = value


def load_config(path: str | os.PathLike[str], *,
                environ: Mapping[str, str] | None = None) -> AgentConfig:
    """Read ``path`` (TOML), apply environment overrides, validate everything."""
    file = Path(path)
    try:
        raw = tomllib.loads(file.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"{file}: cannot read: {exc.strerror}") from exc
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{file}: not valid TOML: {exc}") from exc
    env_problems: list[str] = []
    _apply_env(raw, os.environ if environ is None else environ, env_problems)
    try:
        config = parse_config(raw, base_dir=file.resolve().parent)
    except ConfigError as exc:
        raise ConfigError(env_problems + exc.problems) from None
    if env_problems:
        raise ConfigError(env_problems)
    return config
