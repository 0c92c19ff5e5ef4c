"""The stack's .ts writer round-trips through the project's loader."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from deploy.stack.tsfile import write_ts
from models.datasets.ucr import load_ts


def test_written_file_loads_back_identically(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    series = [rng.normal(size=(2, n)).astype(np.float32) for n in (5, 9, 7)]
    path = tmp_path / "X_TEST.ts"
    write_ts(path, name="X", series=series, labels=["b", "a", "b"], class_names=("a", "b"))
    ds = load_ts(path)
    assert ds.class_names == ("a", "b")
    assert list(ds.labels) == [1, 0, 1]
    for got, want in zip(ds.series, series, strict=True):
        np.testing.assert_array_equal(got, want)
