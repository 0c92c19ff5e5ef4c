"""The loader on the real UCR/UEA files in ../shared/data."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from models.datasets.ucr import available_splits, load_split, load_ts
from models.datasets.windows import to_fixed_length


def test_every_shared_file_loads(data_dir: Path) -> None:
    files = sorted(data_dir.glob("*.ts"))
    assert len(files) >= 4
    for f in files:
        ds = load_ts(f)
        assert len(ds) > 0
        assert all(s.dtype == np.float32 and s.shape[0] == ds.dimensions for s in ds.series)
        assert all(np.isfinite(s).all() for s in ds.series)
        assert ds.labels.min() >= 0 and ds.labels.max() < len(ds.class_names)


def test_plaid_split(data_dir: Path) -> None:
    train, test = load_split(data_dir, "PLAID")
    assert (len(train), len(test)) == (537, 537)
    assert train.name == "PLAID" and train.dimensions == 1
    assert train.class_names == tuple(str(i) for i in range(11))
    assert test.class_names == train.class_names
    assert not train.equal_length and not test.equal_length
    assert train.lengths.min() == 100 and train.lengths.max() == 1344
    assert set(np.unique(train.labels)) == set(range(11))
    # the first TRAIN series ends with label 0, the last TEST series with label 10
    assert train.labels[0] == 0 and test.labels[-1] == 10
    assert test.series[-1][0, -1] == pytest.approx(0.4609)


def test_acsf1_split(data_dir: Path) -> None:
    train, test = load_split(data_dir, "ACSF1")
    assert (len(train), len(test)) == (100, 100)
    assert len(train.class_names) == 10 and train.equal_length and test.equal_length
    assert set(train.lengths.tolist()) == {1460} == set(test.lengths.tolist())
    assert np.bincount(train.labels).tolist() == [10] * 10
    assert train.series[0][0, :3] == pytest.approx([-0.58475375, -0.58475375, 1.730991])


def test_available_splits_and_fixed_length(data_dir: Path) -> None:
    assert {"ACSF1", "PLAID"} <= set(available_splits(data_dir))
    train, _ = load_split(data_dir, "PLAID")
    for mode in ("crop", "pad", "resample"):
        x = to_fixed_length(train.series, length=256, mode=mode)
        assert x.shape == (537, 1, 256) and x.dtype == np.float32
