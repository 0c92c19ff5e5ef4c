"""The shared MQTT rules: settings validation, the [mqtt] table, password file, backoff."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from protocol.errors import ConfigError, TransportError
from service.mqtt import Backoff, MqttSettings, make_client, read_password, settings_from_table


def test_settings_report_every_problem() -> None:
    with pytest.raises(ConfigError) as info:
        MqttSettings(host="", port=0, client_id="", password_file=Path("pw"),
                     cert_file=Path("c"), keepalive=1, backoff_initial=0)  # fmt: skip
    text = "\n".join(info.value.problems)
    for needle in ("host", "port", "client_id", "password_file needs", "key_file go together",
                   "needs mqtt.ca_file", "keepalive", "backoff"):  # fmt: skip
        assert needle in text, needle


def test_table_defaults_types_and_base(tmp_path: Path) -> None:
    s = settings_from_table({"username": "u", "password_file": "pw"}, client_id="gw",
                            base=tmp_path)  # fmt: skip
    assert (s.host, s.port, s.client_id, s.keepalive) == ("127.0.0.1", 1883, "gw", 30)
    assert s.password_file == tmp_path / "pw"
    with pytest.raises(ConfigError) as info:
        settings_from_table({"port": "1883", "keepalive": True, "host": 5}, client_id="x")
    text = "\n".join(info.value.problems)
    assert "mqtt.port must be an integer" in text and "mqtt.keepalive" in text
    assert "mqtt.host must be a string" in text


def test_password_file_rule(tmp_path: Path) -> None:
    pw = tmp_path / "pw"
    pw.write_text(" secret \r\n")
    assert read_password(pw) == " secret "  # only the line ending goes
    pw.write_text("secret")
    assert read_password(pw) == "secret"
    with pytest.raises(TransportError, match="password file"):
        read_password(tmp_path / "missing")


def test_factory_translates_missing_files(tmp_path: Path) -> None:
    s = MqttSettings(client_id="c", username="u", password_file=tmp_path / "nope")
    with pytest.raises(TransportError):
        make_client(s)
    s = MqttSettings(client_id="c", ca_file=tmp_path / "no-ca.crt")
    with pytest.raises(TransportError, match="TLS"):
        make_client(s)


def test_backoff_is_jittered_exponential_and_capped() -> None:
    b = Backoff(0.5, 8.0, random.Random(1))
    for failures, base in ((0, 0.5), (1, 1.0), (3, 4.0), (4, 8.0), (40, 8.0)):
        delays = {b.delay(failures) for _ in range(50)}
        assert all(base / 2 <= d <= base for d in delays)
        assert len(delays) > 1  # jittered, not a fixed schedule
