"""Configuration files for every process of a stack run (pure: values in, TOML text out).

The files written here are the same kind an operator writes on real hosts
(see docs/agent.md, docs/gateway.md, docs/server.md, docs/ledger.md); the
stack only fills in loopback ports and run-directory paths.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from deploy.stack.plan import DevicePlan, StackPlan


def vote_quorum(orgs: int) -> int:
    """Validator votes a proposal needs in the stack's sessions (a strict majority)."""
    return max(1, orgs // 2 + 1)

__all__ = ["Ports", "acl_text", "agent_toml", "gateway_toml", "ledger_toml", "mqtt_user",
           "server_toml"]

SESSION = "s1"


@dataclass(frozen=True, slots=True, kw_only=True)
class Ports:
    mqtt: int
    ledger: Mapping[str, int]          # per org (etcd) or {"solo": port}
    gateway_metrics: Mapping[str, int]
    server_metrics: int


def _q(value: object) -> str:
    """A TOML value (strings quoted and escaped like JSON, which TOML accepts)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    return json.dumps(str(value))


def _table(name: str, values: Mapping[str, object]) -> str:
    lines = [f"[{name}]"] + [f"{k} = {_q(v)}" for k, v in values.items() if v is not None]
    return "\n".join(lines) + "\n"


def mqtt_user(org: str, role: str) -> str:
    """Broker username: ``<org>.<device>``, ``<org>.gateway``, ``server``, ``monitor``."""
    return role if org == "" else f"{org}.{role}"


def acl_text(plan: StackPlan) -> str:
    """Per-user Mosquitto ACL: each device writes only its own topics."""
    lines: list[str] = []
    for d in plan.devices:
        base = f"splitfed/v1/{d.org}/{d.device}"
        lines += [f"user {mqtt_user(d.org, d.device)}", f"topic write {base}/up",
                  f"topic readwrite {base}/state", f"topic write {base}/predictions",
                  f"topic read {base}/down", f"topic read splitfed/v1/{d.org}/model", ""]
    for org in plan.orgs:
        lines += [f"user {mqtt_user(org, 'gateway')}", f"topic readwrite splitfed/v1/{org}/#",
                  f"topic readwrite splitfed/v1/central/{org}/#", ""]
    lines += ["user server", "topic readwrite splitfed/v1/central/#", "",
              "user monitor", "topic read splitfed/v1/+/events", "topic read splitfed/v1/+/+/state",
              "topic read splitfed/v1/+/+/predictions", ""]
    return "\n".join(lines)


def ledger_toml(*, data_dir: Path, port: int, node_id: str, validator_keys: Mapping[str, Path],
                etcd_endpoints: Sequence[str] = ()) -> str:
    text = (f"data_dir = {_q(data_dir)}\nlisten = {_q(f'127.0.0.1:{port}')}\n"
            f"node_id = {_q(node_id)}\n")
    text += "validator_keys = { " + ", ".join(
        f"{org} = {_q(path)}" for org, path in validator_keys.items()) + " }\n"
    if etcd_endpoints:
        text += "\n[etcd]\nendpoints = [" + ", ".join(_q(e) for e in etcd_endpoints) + "]\n"
    return text


def server_toml(plan: StackPlan, *, signing_key: Path, data_dir: Path, manifest: Path,
                ledger_url: str,
                chain_id: str, mqtt_port: int, password_file: Path, metrics_port: int,
                state_dir: Path) -> str:
    o = plan.options
    groups = ", ".join(f"{org} = [{_q(org)}]" for org in plan.orgs)
    z = plan.noise_multiplier
    return "\n".join([
        _table("server", {"session": SESSION, "signing_key": signing_key, "data_dir": data_dir,
                          "manifest": manifest, "lr": o.lr, "poll_interval_s": 0.1,
                          "replay_steps": o.server_replay_steps,
                          # the candidate is re-announced at half of it (a restarted validator
                          # gateway votes then), and a proposal undecided by then expires
                          "proposal_deadline_s": o.decide_s,
                          "state_dir": state_dir}),
        # every device is expected; one that dropped out (or halted at its budget with
        # nothing left to send) costs the round at most the deadline
        _table("round", {"min_devices": len(plan.devices), "deadline_s": o.round_deadline_s,
                         "collect_deadline_s": o.collect_deadline_s,
                         "steps_per_round": o.steps_per_round}),
        _table("session", {"model_id": o.model, "cut": o.cut, "rounds": o.rounds,
                           "sfl_mode": o.sfl,
                           "min_noise_multiplier": (z * 0.999 if z is not None else 0.0),
                           "clip": 1.0,
                           "max_epsilon": o.epsilon if o.epsilon is not None else 1e9,
                           "delta": o.delta, "vote_quorum": vote_quorum(len(plan.orgs)),
                           "privacy_mode": "none" if o.epsilon is None else o.privacy_mode,
                           "labels_public": o.labels_public or o.epsilon is None})
        + f"groups = {{ {groups} }}\n",
        _table("ledger", {"url": ledger_url, "chain_id": chain_id}),
        _table("mqtt", {"port": mqtt_port, "client_id": "server", "username": "server",
                        "password_file": password_file}),
        _table("metrics", {"listen": f"127.0.0.1:{metrics_port}"}),
    ])


def gateway_toml(plan: StackPlan, org: str, *, signing_key: Path, validator_key: Path,
                 manifest: Path,
                 state_dir: Path, eval_dir: Path, ledger_url: str, chain_id: str,
                 mqtt_port: int, password_file: Path, metrics_port: int) -> str:
    return "\n".join([
        _table("gateway", {"org": org, "session": SESSION, "signing_key": signing_key,
                           "state_dir": state_dir, "manifest": manifest}),
        _table("ledger", {"url": ledger_url, "chain_id": chain_id, "poll_interval_s": 0.2}),
        _table("mqtt", {"port": mqtt_port, "client_id": mqtt_user(org, "gateway"),
                        "username": mqtt_user(org, "gateway"), "password_file": password_file}),
        _table("metrics", {"listen": f"127.0.0.1:{metrics_port}"}),
        _table("validator", {"signing_key": validator_key, "data_dir": eval_dir,
                             "max_drop": 0.15}),
    ])


def agent_toml(plan: StackPlan, d: DevicePlan, *, state_dir: Path, manifest: Path,
               server_pub: Path, genesis: Path, mqtt_port: int, password_file: Path,
               meter: Mapping[str, object], window_length: int) -> str:
    """Agent config; ``meter`` holds the sensor transport keys (tcp host/port or rtu serial)."""
    o = plan.options
    z = plan.noise_multiplier
    privacy: dict[str, object] = {"mode": o.privacy_mode, "epsilon_budget": o.epsilon,
                                  "delta": o.delta, "clip_norm": 1.0, "noise_multiplier": z}
    if o.epsilon is None:
        privacy = {"mode": "none"}
    elif o.labels_public:
        privacy["labels"] = "public"
    else:
        privacy.update(labels="randomized_response", label_epsilon=plan.label_epsilon)
    if o.epsilon is not None and o.privacy_mode == "sl-dpsgd":
        privacy.update(dp_sgd_clip_norm=1.0, dp_sgd_noise_multiplier=z)
    sensor = {"name": "meter", "unit": 1, "mode": "capture", "timeout": 2.0, **meter}
    sensor_lines = "\n".join(f"{k} = {_q(v)}" for k, v in sensor.items())
    return "\n".join([
        _table("device", {"org": d.org, "id": d.device, "state_dir": state_dir}),
        _table("mqtt", {"host": "127.0.0.1", "port": mqtt_port,
                        "username": mqtt_user(d.org, d.device), "password_file": password_file,
                        "keepalive": 10}),
        _table("model", {"manifest": manifest, "server_key": server_pub, "genesis": genesis,
                         "require_proof": True}),
        _table("privacy", privacy),
        _table("training", {"record_capacity": 4096, "max_pending": 2, "gradient_timeout_s": 60.0,
                            "steps_per_round": o.steps_per_round, "batch_size": o.batch_size}),
        f"[[sensors.devices]]\n{sensor_lines}\nwindow = {{ length = {window_length} }}\n",
    ])
