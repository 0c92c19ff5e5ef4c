"""`splitfed demo` option handling and the lines it prints (pure parts)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from deploy.stack_cli import _options, _progress_line
from protocol.errors import ConfigError
from tests.chaos.faults import Logs, phase_reached


def _kw(**over: Any) -> dict[str, Any]:
    kw: dict[str, Any] = {"run_dir": Path("/tmp/x"), "non_private": False, "orgs": None,
                          "ledger": "solo", "data_dir": Path("/tmp/data")}
    kw.update(over)
    return kw


def test_etcd_defaults_to_three_organisations_solo_to_two() -> None:
    assert _options(**_kw(ledger="etcd")).orgs == 3
    assert _options(**_kw()).orgs == 2
    with pytest.raises(ConfigError, match="at least 3 organisations"):
        _options(**_kw(ledger="etcd", orgs=2))


def test_progress_line_shows_epsilon_and_restarts() -> None:
    h = {"round": 2, "accuracy": 0.5, "epsilon_max": 6.732, "epsilon_mean": 5.043,
         "accepted": 30, "rejected": 0, "ledger_height": 18,
         "version": 3, "finalised": True, "finalised_version": 3, "elapsed_s": 17.0,
         "restarts": 2}
    line = _progress_line(h)
    assert "eps max 6.73 mean 5.04 " in line
    assert line.endswith("restarts 2")
    assert "restarts" not in _progress_line({**h, "restarts": 0})


SERVER = ("round 0 closes (all_done): 2 of 2 devices finished\n"
          "model_propose submitted: aa\nmodel_finalise submitted: bb\n"
          "round 1 closes (all_done): 2 of 2 devices finished\n"
          "model_propose submitted: cc\n")


def test_chaos_phases_are_detected_in_the_target_round_only() -> None:
    first = SERVER.split("round 1 closes")[0]
    logs = Logs(server=first, gateways={"org1": "voted accept on version 1 (x)", "org2": ""},
                releases=5)
    assert phase_reached("mid_round", logs, steps_per_round=4)
    assert not phase_reached("after_propose", logs, steps_per_round=4)
    assert not phase_reached("between_votes", logs, steps_per_round=4)
    assert not phase_reached("after_finalise", logs, steps_per_round=4)
    logs = Logs(server=SERVER, gateways={"org1": "voted accept on version 2 (x)", "org2": ""},
                releases=8)
    assert not phase_reached("mid_round", logs, steps_per_round=4)  # round 1 closed
    assert phase_reached("after_propose", logs, steps_per_round=4)
    assert phase_reached("between_votes", logs, steps_per_round=4)
    assert not phase_reached("after_finalise", logs, steps_per_round=4)
    assert not phase_reached("announcement", logs, steps_per_round=4)
    logs.server += "model_finalise submitted: dd\n"
    logs.gateways["org2"] = "published finalised model version 2\n"
    assert phase_reached("after_finalise", logs, steps_per_round=4)
    assert phase_reached("announcement", logs, steps_per_round=4)
