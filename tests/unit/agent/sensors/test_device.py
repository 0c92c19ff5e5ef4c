from __future__ import annotations

import random

import numpy as np
import pytest

from agent.sensors.device import CaptureLayout, CaptureReader, RegisterMap, RegisterPoller
from agent.sensors.errors import (
    CaptureChangedError,
    DeviceUnavailableError,
    ModbusExceptionError,
    SensorTimeoutError,
)
from agent.sensors.health import BackoffPolicy, DeviceHealth
from agent.sensors.registers import ReadBlock, RegisterSpec, encode, encode_float32_array

from .fakes import FakeClock, FakeTransport

MAP = RegisterMap(
    channels=(RegisterSpec(name="t", address=10, type="int16", scale=0.1),
              RegisterSpec(name="p", address=11, type="float32", word_order="little")),
    label=RegisterSpec(name="label", address=2),
    counter=RegisterSpec(name="n", address=0, type="uint32"))


DEFAULT_POLICY = BackoffPolicy(retries=2, base_s=1.0, max_s=8.0, jitter=0.0)


def make(policy: BackoffPolicy = DEFAULT_POLICY,
         unit: int = 1) -> tuple[RegisterPoller, FakeTransport, FakeClock]:
    clock = FakeClock()
    tr = FakeTransport(clock)
    p = RegisterPoller(name="dev", unit=unit, timeout=0.5, register_map=MAP, policy=policy,
                       transport=tr, health=DeviceHealth(policy, rng=random.Random(1)),
                       clock=clock, sleep=clock.sleep)
    return p, tr, clock


def fill(tr: FakeTransport, unit: int = 1, *, t: float = 21.5, p: float = 1013.25,
         label: int = 3, n: int = 77) -> None:
    img = tr.image(unit)
    for spec, v in ((MAP.channels[0], t), (MAP.channels[1], p), (MAP.label, label),
                    (MAP.counter, n)):
        assert spec is not None
        img[spec.address:spec.end] = encode(spec, v)


def test_read_decodes_channels_label_counter_in_one_request() -> None:
    p, tr, _ = make()
    fill(tr)
    s = p.read()
    assert s.values == pytest.approx([21.5, 1013.25])
    assert (s.label, s.seq) == (3, 77)
    assert tr.requests == [(1, ReadBlock(function="holding", address=0, count=3)),
                           (1, ReadBlock(function="holding", address=10, count=3))]
    assert p.health.snapshot().reads_ok == 1


def test_label_none_value_maps_to_none() -> None:
    p, tr, _ = make()
    fill(tr, label=0xFFFF)
    assert p.read().label is None


def test_exception_then_success_is_retried_and_counted() -> None:
    p, tr, clock = make()
    fill(tr)
    tr.failing[1] = 2
    t0 = clock.t
    s = p.read()
    assert s.seq == 77
    c = p.health.snapshot()
    assert (c.exceptions, c.retries, c.reads_ok, c.consecutive_failures) == (2, 2, 1, 0)
    assert clock.t - t0 == pytest.approx(1.0 + 2.0)  # waited base, then 2*base


def test_dead_device_raises_after_retries_and_backs_off_exponentially() -> None:
    p, tr, clock = make()
    tr.dead.add(1)
    with pytest.raises(SensorTimeoutError):
        p.read()
    c = p.health.snapshot()
    assert (c.timeouts, c.retries, c.reads_ok) == (3, 2, 0)
    assert p.health.next_attempt - clock.t == pytest.approx(4.0)
    with pytest.raises(DeviceUnavailableError):
        p.attempt()
    for expected in (8.0, 8.0):  # capped at max_s
        clock.t = p.health.next_attempt
        with pytest.raises(SensorTimeoutError):
            p.attempt()
        assert p.health.next_attempt - clock.t == pytest.approx(expected)


def test_jitter_stays_within_bounds() -> None:
    pol = BackoffPolicy(base_s=1.0, max_s=100.0, jitter=0.25)
    rng = random.Random(0)
    for streak in range(1, 8):
        d = pol.delay(streak, rng)
        nominal = min(100.0, 2.0 ** (streak - 1))
        assert 0.75 * nominal <= d <= 1.25 * nominal


def test_other_errors_propagate_unchanged() -> None:
    p, tr, _ = make(BackoffPolicy(retries=0))
    tr.failing[1] = 1
    with pytest.raises(ModbusExceptionError) as ei:
        p.read()
    assert ei.value.code == 4


def capture_setup(x: np.ndarray, *, label: int | None, seq: int,
                  layout: CaptureLayout) -> tuple[CaptureReader, FakeTransport]:
    p, tr, _ = make(BackoffPolicy(retries=0))
    img = tr.image(1)
    head = layout.header_registers(seq=seq, label=label, channels=x.shape[0], length=x.shape[1])
    img[layout.base:layout.base + 8] = head
    data = encode_float32_array(x, word_order=layout.word_order, byte_order=layout.byte_order)
    img[layout.data_address:layout.data_address + data.size] = data
    return CaptureReader(p, layout), tr


@pytest.mark.parametrize("wo,bo", [("big", "big"), ("little", "little"), ("little", "big")])
def test_capture_read_in_chunks_and_acknowledged(wo: str, bo: str) -> None:
    layout = CaptureLayout(base=2000, word_order=wo, byte_order=bo)  # type: ignore[arg-type]
    x = np.random.default_rng(0).normal(size=(3, 100)).astype(np.float32)
    cap, tr = capture_setup(x, label=5, seq=70000, layout=layout)
    w = cap.poll()
    assert w is not None
    assert np.array_equal(w.x, x) and (w.label, w.source_seq) == (5, 70000)
    assert all(b is not None and b.count <= 125 for _, b in tr.requests)
    assert tr.writes == [(1, layout.ack_address, [70000 >> 16, 70000 & 0xFFFF])]
    assert cap.poll() is None  # same seq: nothing new


def test_capture_changed_mid_read_is_restarted() -> None:
    layout = CaptureLayout()
    x = np.ones((1, 300), dtype=np.float32)
    cap, tr = capture_setup(x, label=None, seq=1, layout=layout)
    bumps = [2]

    def bump_once(unit: int, block: ReadBlock) -> None:
        if block.address == layout.data_address + 125 and bumps:
            tr.image(1)[layout.base + 1] = bumps.pop()

    tr.on_read = bump_once
    w = cap.poll()
    assert w is not None and w.source_seq == 2 and w.label is None
    assert cap.poller.health.snapshot().capture_restarts == 1


def test_capture_that_keeps_changing_fails() -> None:
    layout = CaptureLayout()
    cap, tr = capture_setup(np.ones((1, 10), dtype=np.float32), label=1, seq=1, layout=layout)

    def always(unit: int, block: ReadBlock) -> None:
        if block.address == layout.data_address:
            tr.image(1)[layout.base + 1] += 1

    tr.on_read = always
    with pytest.raises(CaptureChangedError):
        cap.poll()
    assert tr.writes == []
