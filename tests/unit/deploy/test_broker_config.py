"""The generated and the shipped Mosquitto configs carry the same hardening settings."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from deploy.broker import BrokerError, BrokerLimits
from protocol.envelope import ENDORSEMENT_OVERHEAD, MAX_ENVELOPE_BYTES, MAX_MQTT_PAYLOAD

TEMPLATE = Path(__file__).resolve().parents[3] / "deploy/mosquitto/splitfed.conf"


def _settings(text: str) -> dict[str, str]:
    out = {}
    for line in text.splitlines():
        m = re.fullmatch(r"([a-z_]+) (\S+)", line.strip())
        if m:
            out[m.group(1)] = m.group(2)
    return out


def test_production_template_limits_equal_the_computed_ones() -> None:
    conf = _settings(TEMPLATE.read_text())
    for line in BrokerLimits().config_lines():
        key, value = line.split()
        assert conf.get(key) == value, key
    assert conf["use_username_as_clientid"] == "true"
    assert conf["allow_anonymous"] == "false"


def test_size_limit_is_just_above_the_largest_legal_message() -> None:
    lim = BrokerLimits()
    assert lim.message_size_limit == MAX_MQTT_PAYLOAD == MAX_ENVELOPE_BYTES + ENDORSEMENT_OVERHEAD
    assert MAX_MQTT_PAYLOAD < lim.max_packet_size <= MAX_MQTT_PAYLOAD + 4096


def test_inconsistent_limits_are_refused() -> None:
    with pytest.raises(BrokerError):
        BrokerLimits(message_size_limit=10, max_packet_size=5)
    with pytest.raises(BrokerError):
        BrokerLimits(max_queued_bytes=0)
