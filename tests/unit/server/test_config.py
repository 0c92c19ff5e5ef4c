from __future__ import annotations

import pytest

from protocol.errors import ConfigError
from server.config import parse_config

BASE = {
    "server": {"session": "s1", "signing_key": "/k/server.key", "data_dir": "/d"},
    "ledger": {"url": "http://127.0.0.1:7050", "chain_id": "c1"},
    "round": {"min_devices": 2, "min_fraction": 0.5, "deadline_s": 30},
    "session": {
        "model_id": "cnn1d",
        "cut": 1,
        "rounds": 3,
        "groups": {"g": ["o1", "o2"]},
        "min_noise_multiplier": 1.0,
        "clip": 1.0,
        "max_epsilon": 8.0,
        "delta": 1e-5,
    },
}


def test_parses_round_policy_and_session_spec() -> None:
    cfg = parse_config(BASE, env={"SPLITFED_SERVER_SERVER_LR": "0.05"})
    assert cfg.lr == 0.05 and cfg.round_policy.min_devices == 2
    assert cfg.session_spec is not None and cfg.session_spec.groups == {"g": ["o1", "o2"]}
    assert cfg.session_spec.sfl_mode == "v1"


def test_every_problem_reported_at_once() -> None:
    bad = {
        "server": {"session": "a b"},
        "ledger": {},
        "round": {"min_fraction": 2.0, "deadline_s": -1},
        "session": {"groups": {}, "sfl_mode": "v9", "clip": 0, "delta": 2, "cut": 0},
    }
    with pytest.raises(ConfigError) as ei:
        parse_config(bad, env={})
    text = "\n".join(ei.value.problems)
    for needle in (
        "server.signing_key",
        "ledger.url",
        "ledger.chain_id",
        "min_fraction",
        "deadline_s",
        "session.groups",
        "session.sfl_mode",
        "session.clip",
        "session.delta",
        "session.cut",
        "session.rounds",
        "session.model_id",
        "server.session",
    ):
        assert needle in text, needle


def test_proposal_deadline_default_and_override() -> None:
    assert parse_config(BASE, env={}).proposal_deadline_s == 300.0
    env = {"SPLITFED_SERVER_SERVER_PROPOSAL_DEADLINE_S": "45"}
    assert parse_config(BASE, env=env).proposal_deadline_s == 45.0
    bad = {**BASE, "server": {**BASE["server"], "proposal_deadline_s": 0}}
    with pytest.raises(ConfigError, match="proposal_deadline_s must be a number > 0"):
        parse_config(bad, env={})
