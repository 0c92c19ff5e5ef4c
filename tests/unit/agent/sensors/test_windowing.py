from __future__ import annotations

import numpy as np
import pytest

from agent.sensors.base import Sample, Window
from agent.sensors.windowing import LiveWindowSource, SampleWindower


def s(i: int, label: int | None = None, seq: int | None = None) -> Sample:
    return Sample(values=np.array([i, -i], dtype=np.float64), label=label, t_mono=float(i),
                  seq=seq)


def test_windows_have_length_and_hop() -> None:
    w = SampleWindower(length=4, hop=2)
    out = [w.push(s(i, label=i % 3)) for i in range(10)]
    wins = [o for o in out if o is not None]
    assert [o is not None for o in out] == [False, False, False, True, False, True, False, True,
                                            False, True]
    assert np.array_equal(wins[0].x, np.array([[0, 1, 2, 3], [0, -1, -2, -3]], np.float32))
    assert np.array_equal(wins[1].x[0], [2, 3, 4, 5])
    assert wins[1].label == 5 % 3
    assert [x.source_seq for x in wins] == [0, 1, 2, 3]


def test_duplicates_dropped_and_gaps_counted() -> None:
    w = SampleWindower(length=3, hop=3)
    for seq in (1, 1, 2, 5, 5, 6):
        w.push(s(seq, seq=seq))
    assert (w.duplicates, w.missed) == (2, 2)


def test_window_validation() -> None:
    with pytest.raises(ValueError):
        Window(x=np.zeros((2, 3)), label=None, source_seq=0)  # float64
    with pytest.raises(ValueError):
        SampleWindower(length=0, hop=1)


class ListReader:
    def __init__(self) -> None:
        self.i = 0
        self.closed = False

    def read(self) -> Sample:
        self.i += 1
        return s(self.i)

    def close(self) -> None:
        self.closed = True


def test_live_window_source_reads_until_window() -> None:
    r = ListReader()
    src = LiveWindowSource(r, length=5, hop=5)
    assert np.array_equal(src.next_window(timeout=1.0).x[0], [1, 2, 3, 4, 5])
    assert np.array_equal(src.next_window(timeout=1.0).x[0], [6, 7, 8, 9, 10])
    src.close()
    assert r.closed
