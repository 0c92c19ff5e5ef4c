"""Outbox release path on real SQLite and state files (no broker needed)."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.mqtt import MqttConfig
from agent.outbox import Outbox
from agent.privacy import Accountant, AccountantStateError, GaussianRelease
from agent.spool import Spool, SpoolFull
from protocol.errors import BudgetExceeded, ConfigError


class CountingPublisher:
    def __init__(self) -> None:
        self.kicks = 0

        self.state_updates = 0

    def kick(self) -> None:
        self.kicks += 1

    def update_state(self) -> None:
        self.state_updates += 1


def _build(seq: int) -> tuple[str, bytes]:
    return "splitfed/v1/acme/dev1/up", f"envelope {seq}".encode()


def _parts(tmp: Path, *, budget: float = 100.0, **spool_kw: object
           ) -> tuple[Accountant, Spool, CountingPublisher]:
    acc = Accountant(epsilon_budget=budget, delta=1e-5, state_path=tmp / "privacy.json")
    return acc, Spool(tmp / "spool.db", **spool_kw), CountingPublisher()  # type: ignore[arg-type]


EV = [GaussianRelease(noise_multiplier=4.0)]


def test_release_spends_then_spools_with_consecutive_seq(tmp_path: Path) -> None:
    acc, spool, pub = _parts(tmp_path)
    outbox = Outbox(acc, spool, pub)
    claimed = acc.epsilon_after(EV)          # what the message states as epsilon_spent
    r = [outbox.release(_build, EV) for _ in range(3)]
    assert r[0].epsilon == claimed           # ... is exactly what was recorded
    assert [x.seq for x in r] == [0, 1, 2] and pub.kicks == 3
    assert [m.payload for m in spool.peek_batch(10)] == [b"envelope 0", b"envelope 1",
                                                          b"envelope 2"]
    assert acc.releases == 3 and r[-1].epsilon == pytest.approx(acc.epsilon)
    st = outbox.status()
    assert st["next_seq"] == 3 and st["spool_depth"] == 3 and not st["halted"]
    spool.close()


def test_halt_is_reported_and_nothing_is_spooled(tmp_path: Path) -> None:
    acc, spool, pub = _parts(tmp_path, budget=1.0)
    outbox = Outbox(acc, spool, pub)
    n = 0
    with pytest.raises(BudgetExceeded):
        while True:
            outbox.release(_build, EV)
            n += 1
    assert spool.depth == n and outbox.halted
    assert outbox.status()["halt_reason"] and pub.state_updates == 1
    assert outbox.state_detail()["halted"] == 1
    with pytest.raises(BudgetExceeded):
        outbox.release(_build, [GaussianRelease(noise_multiplier=1e6)])
    spool.close()


def test_full_spool_with_stop_sampling_does_not_spend(tmp_path: Path) -> None:
    acc, spool, pub = _parts(tmp_path, max_messages=2, overflow="stop_sampling")
    outbox = Outbox(acc, spool, pub)
    outbox.release(_build, EV)
    outbox.release(_build, EV)
    eps = acc.epsilon
    with pytest.raises(SpoolFull):
        outbox.release(_build, EV)
    assert acc.epsilon == eps and acc.releases == 2
    spool.close()


def test_reset_privacy_state_is_refused(tmp_path: Path) -> None:
    acc, spool, pub = _parts(tmp_path)
    Outbox(acc, spool, pub).release(_build, EV)
    acc.close()
    for f in tmp_path.glob("privacy.json*"):   # state, marker and record table all gone
        f.unlink()
    fresh = Accountant(epsilon_budget=100.0, delta=1e-5, state_path=tmp_path / "privacy.json")
    with pytest.raises(AccountantStateError, match="zero"):
        Outbox(fresh, spool, pub)
    # a privacy state from another device/spool is refused too
    other = Accountant(epsilon_budget=100.0, delta=1e-5, state_path=tmp_path / "other.json")
    with pytest.raises(AccountantStateError):
        Outbox(other, spool, pub)
    spool.close()


def test_mqtt_config_reports_every_problem() -> None:
    with pytest.raises(ConfigError) as info:
        MqttConfig(host="", port=0, org="acme", device="a/b", password_file=Path("x"),
                   cert_file=Path("c"), max_inflight=0)
    assert len(info.value.problems) >= 5
    ok = MqttConfig(host="broker", org="acme", device="dev1")
    assert ok.effective_client_id == "acme.dev1" and ok.port == 8883
