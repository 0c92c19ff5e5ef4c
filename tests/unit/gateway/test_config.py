from __future__ import annotations

from pathlib import Path

import pytest

from gateway.cli import main
from gateway.config import load_config, parse_config
from protocol.errors import ConfigError

GOOD = {
    "gateway": {"org": "acme", "session": "s1", "signing_key": "/k/gw.key", "state_dir": "/var/x"},
    "ledger": {"url": "http://127.0.0.1:7050", "chain_id": "c1"},
    "mqtt": {"port": 1883},
}


def test_defaults_and_environment_override() -> None:
    cfg = parse_config(
        GOOD,
        env={
            "SPLITFED_GATEWAY_MQTT_PORT": "1999",
            "SPLITFED_GATEWAY_LEDGER_POLL_INTERVAL_S": "0.25",
        },
    )
    assert cfg.group == "acme" and cfg.mqtt.port == 1999 and cfg.poll_interval_s == 0.25
    assert cfg.mqtt.client_id == "splitfed-gateway-acme" and cfg.metrics_port is None
    assert cfg.validator is None


def test_every_problem_reported_at_once() -> None:
    bad = {
        "gateway": {
            "org": "ac/me",
            "signing_key": "",
            "state_dir": "/x",
            "bogus": 1,
            "max_message_bytes": -5,
        },
        "ledger": {"url": "ftp://x"},
        "mqtt": {"port": 70000},
        "metrics": {"listen": "nope"},
        "validator": {"signing_key": "/v.key", "max_drop": 3},
        "extra": {},
    }
    with pytest.raises(ConfigError) as ei:
        parse_config(bad, env={})
    text = "\n".join(ei.value.problems)
    for needle in (
        "unknown section [extra]",
        "gateway.bogus",
        "gateway.session",
        "gateway.signing_key",
        "max_message_bytes",
        "ledger.url",
        "ledger.chain_id",
        "metrics.listen",
        "mqtt.port",
        "validator.data_dir",
        "validator.max_drop",
        "gateway.org",
    ):
        assert needle in text, needle


def test_cli_exit_codes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    p = tmp_path / "gw.toml"
    p.write_text('[gateway]\norg = "acme"\n')
    assert main(["run", "--config", str(p)]) == 2
    assert "gateway.session" in capsys.readouterr().err
    p.write_text(
        '[gateway]\norg = "acme"\nsession = "s1"\nsigning_key = "/k"\nstate_dir = "/s"\n'
        '[ledger]\nurl = "http://127.0.0.1:1"\nchain_id = "c"\n'
    )
    assert main(["run", "--config", str(p), "--check"]) == 0
    assert load_config(p, env={}).org == "acme"
    # the key file does not exist: a runtime failure, not a config error
    assert main(["run", "--config", str(p)]) == 1
    assert main(["bogus"]) == 2
