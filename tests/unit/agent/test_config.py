"""Agent configuration: every problem reported at once; env overrides; `config check` exit codes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from agent.cli import main
from agent.config import load_config
from protocol.errors import ConfigError


def _valid(tmp: Path) -> str:
    (tmp / "manifest.json").write_text("{}")
    (tmp / "server.pub").write_text("00" * 32)
    (tmp / "genesis.json").write_text("{}")
    return f"""
[device]
org = "acme"
id = "press-07"
state_dir = "{tmp / 'state'}"

[mqtt]
host = "127.0.0.1"
port = 1883

[model]
manifest = "manifest.json"
server_key = "server.pub"
genesis = "genesis.json"

[privacy]
epsilon_budget = 8.0
noise_multiplier = 1.1
label_epsilon = 2.0

[[sensors.devices]]
name = "meter"
transport = "tcp"
host = "127.0.0.1"
port = 5020
mode = "capture"
"""


def _write(tmp: Path, text: str) -> Path:
    p = tmp / "agent.toml"
    p.write_text(text)
    return p


def test_valid_file_loads_with_defaults_and_relative_paths(tmp_path: Path) -> None:
    cfg = load_config(_write(tmp_path, _valid(tmp_path)), environ={})
    assert cfg.device.key_file == tmp_path / "state" / "device.key"
    assert cfg.model.manifest == (tmp_path / "manifest.json").resolve()
    assert cfg.privacy.delta == 1e-5 and cfg.privacy.labels == "randomized_response"
    assert cfg.privacy.mode == "sl-frozen" and cfg.privacy.label_epsilon == 2.0
    assert cfg.spool.overflow == "drop_oldest"


def test_environment_overrides_keep_types(tmp_path: Path) -> None:
    cfg = load_config(_write(tmp_path, _valid(tmp_path)),
                      environ={"SPLITFED_AGENT_MQTT_PORT": "8883",
                               "SPLITFED_AGENT_PRIVACY_EPSILON_BUDGET": "2.5",
                               "SPLITFED_AGENT_MQTT_HOST": "broker.acme"})
    assert cfg.mqtt.port == 8883 and cfg.mqtt.host == "broker.acme"
    assert cfg.privacy.epsilon_budget == 2.5


def test_every_problem_is_reported_at_once(tmp_path: Path) -> None:
    text = _valid(tmp_path)
    text = text.replace('id = "press-07"', 'id = "press/07"')
    text = text.replace("port = 1883", "port = 99999")
    text = text.replace('server_key = "server.pub"', 'server_key = "missing.pub"')
    text = text.replace("epsilon_budget = 8.0", "epsilon_budget = -1.0\ndelta = 2.0\ncolour = 1")
    text += '\n[spool]\noverflow = "explode"\n'
    with pytest.raises(ConfigError) as info:
        load_config(_write(tmp_path, text), environ={"SPLITFED_AGENT_BAD": "1"})
    problems = "\n".join(info.value.problems)
    for expected in ("device.id", "missing.pub", "privacy.epsilon_budget", "privacy.delta",
                     "privacy.colour: unknown key", "spool.overflow", "SPLITFED_AGENT_BAD"):
        assert expected in problems, f"{expected!r} not reported in:\n{problems}"
    assert len(info.value.problems) >= 7


def test_config_check_cli_lists_all_problems_exit_2(tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    bad = _write(tmp_path, "[device]\norg = 3\n[privacy]\nepsilon_budget = 0\n")
    assert main(["config", "check", str(bad)]) == 2
    err = capsys.readouterr().err
    for expected in ("device.org: expected str", "device.id: required", "mqtt.host: required",
                     "model.manifest: required", "privacy.epsilon_budget: must be > 0",
                     "sensors.devices"):
        assert expected in err, f"{expected!r} missing from:\n{err}"


def test_config_check_cli_ok_and_unreadable(tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    good = _write(tmp_path, _valid(tmp_path))
    assert main(["config", "check", str(good)]) == 0
    assert json.loads(capsys.readouterr().out)["device"] == "press-07"
    assert main(["config", "check", str(tmp_path / "nope.toml")]) == 2
    assert "cannot read" in capsys.readouterr().err


@pytest.mark.parametrize(("privacy", "expected"), [
    ('weights = "unprotected"', "privacy.weights was removed"),
    ("enabled = false", 'privacy.mode = "none"'),
    ('labels = "plain"', 'now "public"'),
    ('mode = "sl-plain-sgd"', "privacy.mode: must be one of"),
    ('mode = "fl-dpsgd"', "not supported by this agent yet"),
])
def test_modes_without_a_bound_are_refused_with_the_fix(tmp_path: Path, privacy: str,
                                                        expected: str) -> None:
    text = _valid(tmp_path).replace("label_epsilon = 2.0", f"label_epsilon = 2.0\n{privacy}")
    with pytest.raises(ConfigError, match=expected):
        load_config(_write(tmp_path, text), environ={})


def test_randomized_response_is_the_default_and_needs_its_epsilon(tmp_path: Path) -> None:
    text = _valid(tmp_path).replace("label_epsilon = 2.0\n", "")
    with pytest.raises(ConfigError, match="label_epsilon: required"):
        load_config(_write(tmp_path, text), environ={})
    text = text.replace("noise_multiplier = 1.1", 'noise_multiplier = 1.1\nlabels = "public"')
    public = load_config(_write(tmp_path, text), environ={})
    assert public.privacy.labels == "public"


def test_explicit_non_private_mode(tmp_path: Path) -> None:
    text = _valid(tmp_path).replace("epsilon_budget = 8.0\nnoise_multiplier = 1.1\n"
                                    "label_epsilon = 2.0", 'mode = "none"')
    cfg = load_config(_write(tmp_path, text), environ={})
    assert cfg.privacy.mode == "none" and not cfg.privacy.enabled
    assert cfg.privacy.labels == "public"


def test_config_check_fails_naming_each_missing_secret_file(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    text = _valid(tmp_path).replace("port = 1883\n", "port = 1883\nusername = \"press-07\"\n"
                                    "password_file = \"mqtt.password\"\nca_file = \"ca.crt\"\n")
    cfg = _write(tmp_path, text)
    assert main(["config", "check", str(cfg)]) == 2
    err = capsys.readouterr().err
    assert f"mqtt.password_file: {tmp_path / 'mqtt.password'} does not exist" in err
    assert f"mqtt.ca_file: {tmp_path / 'ca.crt'} does not exist" in err
    (tmp_path / "mqtt.password").write_text("secret\n")
    (tmp_path / "ca.crt").write_text("-----BEGIN CERTIFICATE-----\n")
    assert main(["config", "check", str(cfg)]) == 0
