"""The stack's restart rule (Restart=on-failure with backoff and a limit) and run pruning."""

from __future__ import annotations

from pathlib import Path

import pytest

from deploy.stack.runs import prune_runs, select_prunable
from deploy.stack.supervise import GiveUp, RestartAt, RestartPolicy, decide, failed
from protocol.errors import ConfigError


def test_only_a_failure_is_restarted() -> None:
    assert failed(1) and failed(-9)
    assert not failed(0) and not failed(None)


def test_backoff_doubles_up_to_the_cap_then_the_limit_gives_up() -> None:
    policy = RestartPolicy(max_restarts=5, window_s=300, backoff_s=1, max_backoff_s=8)
    restarts: list[float] = []
    now = 1000.0
    delays = []
    for _ in range(5):
        verdict = decide(policy, restarts, now)
        assert isinstance(verdict, RestartAt)
        delays.append(verdict.at - now)
        assert verdict.attempt == len(restarts) + 1
        restarts.append(verdict.at)
        now = verdict.at + 0.5  # it failed again half a second after the restart
    assert delays == [1, 2, 4, 8, 8]
    assert policy.worst_case_backoff_s == 23
    assert decide(policy, restarts, now) == GiveUp(5)


def test_restarts_older_than_the_window_are_forgotten() -> None:
    policy = RestartPolicy(max_restarts=2, window_s=60, backoff_s=1, max_backoff_s=8)
    assert isinstance(decide(policy, [0.0, 10.0], 20.0), GiveUp)
    verdict = decide(policy, [0.0, 10.0], 65.0)  # the restart at 0 s left the window
    assert isinstance(verdict, RestartAt) and verdict.attempt == 2 and verdict.at == 67.0


def test_bad_policy_is_refused() -> None:
    with pytest.raises(ConfigError):
        RestartPolicy(max_restarts=-1)
    with pytest.raises(ConfigError):
        RestartPolicy(backoff_s=float("nan"))


def test_prune_keeps_the_newest_runs_counting_the_new_one() -> None:
    names = ["20260101-000000", "20260102-000000", "20260103-000000", "notes", "x-run"]
    assert select_prunable(names, keep=2, new="20260104-000000") == [
        "20260101-000000", "20260102-000000"]
    assert select_prunable(names, keep=5, new="20260104-000000") == []
    assert select_prunable(names, keep=0, new="20260104-000000") == []


def test_prune_deletes_only_timestamped_directories(tmp_path: Path) -> None:
    for n in ("20260101-000000", "20260102-000000", "20260103-000000", "keep-me"):
        (tmp_path / n).mkdir()
        (tmp_path / n / "summary.json").write_text("{}")
    gone = prune_runs(tmp_path, keep=2, new="20260104-000000")
    assert [p.name for p in gone] == ["20260101-000000", "20260102-000000"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["20260103-000000", "keep-me"]
