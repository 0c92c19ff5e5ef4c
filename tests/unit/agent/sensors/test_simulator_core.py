from __future__ import annotations

import random

import numpy as np
import pytest

from agent.sensors.device import CaptureLayout
from agent.sensors.registers import RegisterSpec, decode, decode_float32_array
from agent.simulator.core import FaultPlan, LiveLayout, SimulatorCore
from agent.simulator.signals import ArraySignal, RecordCaptures, StreamCaptures, resample


def test_live_tick_publishes_last_sample_counter_and_label() -> None:
    x = np.array([[1, 2, 3, 4], [10, 20, 30, 40]], dtype=np.float32)
    layout = LiveLayout(channels=(
        RegisterSpec(name="a", address=20, type="int32", word_order="little", scale=0.5),
        RegisterSpec(name="b", address=30, type="uint16", offset=5.0)))
    core = SimulatorCore(live=ArraySignal(x, [0, 1, 2, 3]), layout=layout)
    core.tick(3)
    a, b = layout.channels
    assert decode(a, core.read(a.address, 2)) == 3.0
    assert decode(b, core.read(b.address, 1)) == 30.0
    assert decode(layout.counter, core.read(0, 2)) == 3
    assert core.read(2, 1) == [2]
    core.tick(2)  # wraps around
    assert decode(a, core.read(a.address, 2)) == 1.0 and core.read(2, 1) == [0]


def test_capture_advances_on_ack_of_current_seq_only() -> None:
    recs = [np.arange(10, dtype=np.float32)[None], np.ones((1, 7), dtype=np.float32)]
    lay = CaptureLayout(base=500)
    core = SimulatorCore(captures=RecordCaptures(recs, [4, 6], length=8), capture_layout=lay)
    assert core.seq == 1 and core.read(500, 5) == [0, 1, 4, 1, 8]
    data = decode_float32_array(core.read(lay.data_address, 16))
    assert np.allclose(data, resample(recs[0], 8)[0])
    core.write(lay.ack_address, [0, 7], now=1.0)  # wrong seq: ignored
    assert core.seq == 1
    core.write(lay.ack_address, [0, 1], now=1.0)
    assert core.seq == 2 and core.read(502, 1) == [6]


def test_capture_period_advances_without_ack() -> None:
    core = SimulatorCore(captures=RecordCaptures([np.zeros((1, 4))], [0], length=4),
                         capture_period=2.0)
    core.maybe_advance(1.0)
    assert core.seq == 1
    core.maybe_advance(2.5)
    assert core.seq == 2


def test_fault_rates() -> None:
    core = SimulatorCore(live=ArraySignal(np.zeros((1, 3))),
                         faults=FaultPlan(fail_rate=0.3, silent_rate=0.2),
                         rng=random.Random(5))
    draws = [core.draw_fault() for _ in range(4000)]
    assert draws.count("exception") / 4000 == pytest.approx(0.3, abs=0.03)
    assert draws.count("silent") / 4000 == pytest.approx(0.2, abs=0.03)


def test_validation() -> None:
    with pytest.raises(ValueError):
        SimulatorCore()
    with pytest.raises(ValueError):
        FaultPlan(fail_rate=1.5)
    with pytest.raises(ValueError, match="overlap"):
        LiveLayout(channels=(RegisterSpec(name="a", address=1, type="float32"),))


def test_stream_captures_cut_consecutive_labelled_chunks() -> None:
    x = np.arange(12, dtype=np.float32)[None]
    src = StreamCaptures(ArraySignal(x, list(range(12))), length=5)
    a, la = src.next_capture()
    b, lb = src.next_capture()
    assert a.tolist() == [[0, 1, 2, 3, 4]] and la == 4
    assert b.tolist() == [[5, 6, 7, 8, 9]] and lb == 9


def test_non_looping_captures_serve_each_record_once_then_hold() -> None:
    from agent.sensors.device import CaptureLayout
    from agent.simulator.core import SimulatorCore
    from agent.simulator.signals import RecordCaptures

    series = [np.full((1, 8), float(i), np.float32) for i in range(3)]
    core = SimulatorCore(captures=RecordCaptures(series, [0, 1, 2], length=8, loop=False),
                         capture_layout=CaptureLayout())
    seqs = [(core.seq, core.capture_label)]  # the first capture is loaded at start
    for t in range(5):
        core.next_capture(float(t))
        seqs.append((core.seq, core.capture_label))
    # three distinct records, then the last one stays (no new sequence number)
    assert [label for _, label in seqs[:3]] == [0, 1, 2]
    assert len({s for s, _ in seqs}) == 3
    assert seqs[3:] == [seqs[2]] * 3
