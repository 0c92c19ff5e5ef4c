from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.sensors.errors import MalformedLineError, SensorTimeoutError
from agent.sensors.serial_line import LineFormat, SerialLineReader, parse_line

CSV = LineFormat(format="csv", channels=("a", "b"), label_key="label")
KV = LineFormat(format="kv", channels=("ch0", "ch1"), label_key="label")


def test_csv_and_kv() -> None:
    v, lab = parse_line("1.5, -2e3,4\r\n", CSV)
    assert np.array_equal(v, [1.5, -2000.0]) and lab == 4
    v, lab = parse_line(b"ch1=3.4 label=2 ch0=1.2\n", KV)
    assert np.array_equal(v, [1.2, 3.4]) and lab == 2
    v, lab = parse_line("ch0=1,ch1=2", KV)
    assert lab is None
    v, lab = parse_line("7", LineFormat(channels=("x",)))
    assert v.tolist() == [7.0] and lab is None


@pytest.mark.parametrize("line,fmt", [
    ("1.5,2", CSV), ("1,2,3,4", CSV), ("a,2,3", CSV), ("1,nan,3", CSV), ("1,2,-1", CSV),
    ("1,2,1.5", CSV), ("", CSV), ("ch0=1", KV), ("ch0=1 ch0=2 ch1=3", KV), ("ch0 ch1=2", KV),
    (b"\xff\xfe", CSV)])
def test_malformed(line: str | bytes, fmt: LineFormat) -> None:
    with pytest.raises(MalformedLineError):
        parse_line(line, fmt)


@settings(deadline=None)  # timing varies on a shared 2-core machine
@given(st.one_of(st.text(max_size=40), st.binary(max_size=40)))
def test_parser_never_raises_anything_else(line: str | bytes) -> None:
    try:
        v, _ = parse_line(line, KV if len(line) % 2 else CSV)
    except MalformedLineError:
        return
    assert v.shape == (2,) and np.all(np.isfinite(v))


class Lines:
    def __init__(self, lines: list[bytes]) -> None:
        self.lines = lines
        self.closed = False

    def readline(self) -> bytes:
        return self.lines.pop(0) if self.lines else b""

    def close(self) -> None:
        self.closed = True


def test_reader_skips_and_counts_malformed_lines() -> None:
    t = [0.0]

    def clock() -> float:
        t[0] += 0.01
        return t[0]

    src = Lines([b"garbage\n", b"1,2,3\n", b"1,2", b"4,5,1\n"])
    r = SerialLineReader(src, CSV, timeout=1.0, clock=clock)
    s = r.read()
    assert s.values.tolist() == [1.0, 2.0] and s.label == 3
    s = r.read()  # the partial line "1,2" (no newline: a timeout) is not used
    assert s.values.tolist() == [4.0, 5.0] and s.label == 1
    assert (r.malformed, r.reads_ok) == (1, 2)
    with pytest.raises(SensorTimeoutError):
        r.read()
    r.close()
    assert src.closed
