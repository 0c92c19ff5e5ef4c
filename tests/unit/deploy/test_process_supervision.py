"""ProcessGroup supervision with real child processes (each exits at once)."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

from deploy.stack.procs import ProcessGroup, listen_port, wait_until
from deploy.stack.supervise import RestartEvent, RestartPolicy

FAST = RestartPolicy(max_restarts=2, window_s=60, backoff_s=0.05, max_backoff_s=0.1)


def _supervise_until(group: ProcessGroup, done: Callable[[list[RestartEvent]], bool], *,
                     timeout: float = 20.0) -> list[RestartEvent]:
    events: list[RestartEvent] = []

    def step() -> bool:
        events.extend(group.supervise())
        return done(events)

    wait_until(step, timeout=timeout, what="supervisor", interval=0.02)
    return events


def test_failing_child_is_restarted_then_given_up(tmp_path: Path) -> None:
    group = ProcessGroup(log_dir=tmp_path)
    try:
        child = group.start("crasher", [sys.executable, "-c", "import sys; sys.exit(3)"],
                            restart=FAST)
        events = _supervise_until(group, lambda ev: any(e.gave_up for e in ev))
        assert [(e.attempt, e.gave_up) for e in events] == [(1, False), (2, False), (2, True)]
        assert all(e.exit_code == 3 for e in events)
        assert child.gave_up and group.dead_critical() == [child]
        log = (tmp_path / "crasher.log").read_text()
        assert log.count("--- supervisor: restart") == 2
    finally:
        group.close()


def test_clean_exit_is_not_restarted_and_a_pending_restart_is_not_fatal(tmp_path: Path) -> None:
    group = ProcessGroup(log_dir=tmp_path)
    try:
        ok = group.start("done", [sys.executable, "-c", "pass"], restart=FAST)
        bad = group.start("bad", [sys.executable, "-c", "import sys; sys.exit(1)"],
                          restart=RestartPolicy(backoff_s=30))
        wait_until(lambda: not ok.alive() and not bad.alive(), timeout=20, what="exits")
        events = group.supervise()
        assert [e.service for e in events] == ["bad"] and bad.restarting
        assert ok.proc.returncode == 0 and not ok.restarting
        # a clean exit of a critical service is fatal; a failure being restarted is not
        assert group.dead_critical() == [ok]
    finally:
        group.close()  # cancels the pending restart
    assert group.children == [] and bad.pending is None


def test_listening_ports_avoid_the_ephemeral_range_and_each_other() -> None:
    low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    taken: set[int] = set()
    ports = [listen_port(taken) for _ in range(20)]
    assert len(set(ports)) == 20 and taken == set(ports)
    assert all(10000 <= p < low for p in ports)
