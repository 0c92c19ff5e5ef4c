"""Shared-bus scheduling with a dead device, on a fake transport and a fake clock."""

from __future__ import annotations

import random

import pytest

from agent.sensors.device import RegisterMap, RegisterPoller
from agent.sensors.health import BackoffPolicy, DeviceHealth
from agent.sensors.modbus import ModbusBus
from agent.sensors.registers import RegisterSpec

from .fakes import FakeClock, FakeTransport

MAP = RegisterMap(channels=(RegisterSpec(name="v", address=0),))


def poller(unit: int, tr: FakeTransport, clock: FakeClock) -> RegisterPoller:
    pol = BackoffPolicy(retries=1, base_s=0.5, max_s=4.0, jitter=0.0)
    return RegisterPoller(name=f"u{unit}", unit=unit, timeout=0.2, register_map=MAP,
                          policy=pol, transport=tr, health=DeviceHealth(pol, rng=random.Random()),
                          clock=clock, sleep=clock.sleep)


@pytest.mark.parametrize("dead", [False, True])
def test_dead_device_does_not_starve_live_one(dead: bool) -> None:
    clock = FakeClock()
    tr = FakeTransport(clock)
    if dead:
        tr.dead.add(2)
    bus = ModbusBus(tr, sample_rate=10.0, clock=clock)
    live = bus.add(poller(1, tr, clock))
    other = bus.add(poller(2, tr, clock))
    t_end = clock.t + 60.0
    while clock.t < t_end:  # 60 simulated seconds at 10 Hz, bus time advanced by timeouts
        bus.poll_once()
        clock.t += 0.1
    c = bus.counters()
    # the live device is read in every turn of the bus ...
    assert live.queue.qsize() == c["u1"].reads_ok == bus.cycles
    if dead:
        # ... and a dead one is tried only when its backoff (0.5, 1, 2, 4, 4 ... s) expires,
        # about 60/4 + 4 times instead of 600, so its timeouts cost the bus little time
        assert c["u2"].reads_ok == 0 and 10 <= c["u2"].timeouts <= 25
        assert bus.cycles >= 0.9 * 600
    else:
        assert c["u2"].reads_ok == other.queue.qsize() == bus.cycles >= 599
