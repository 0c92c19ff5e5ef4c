"""Canary plans: reproducible from the seed, independent coins, secret file."""

from __future__ import annotations

import stat
from pathlib import Path

import numpy as np
import pytest

from audit.canaries import CanaryPlan, canaries_for_device, load_plan, new_plan, save_plan
from audit.errors import AuditInputError


def test_plan_is_a_function_of_its_seed(tmp_path: Path) -> None:
    a = new_plan(m=64, shape=(1, 256), num_classes=11, seed=42)
    save_plan(a, tmp_path / "plan.json")
    assert stat.S_IMODE((tmp_path / "plan.json").stat().st_mode) == 0o600
    b = load_plan(tmp_path / "plan.json")
    assert b == a
    assert np.array_equal(a.windows(), b.windows())
    assert np.array_equal(a.included, b.included)
    assert np.array_equal(a.labels(), b.labels())
    other = new_plan(m=64, shape=(1, 256), num_classes=11, seed=43)
    assert not np.array_equal(a.included, other.included)


def test_coins_are_fair_and_each_slot_gets_its_canary_or_its_decoy() -> None:
    p = new_plan(m=4000, shape=(1, 8), num_classes=3, kind="gaussian", seed=7)
    frac = p.included.mean()
    assert 0.47 < frac < 0.53  # 4000 fair coins: 5 sigma is 0.04
    sent = canaries_for_device(p)
    assert [rid for rid, _, _ in sent] == list(p.ids)  # one record per slot, always
    xs, ds = p.windows(), p.decoys()
    for i, (_, x, y) in enumerate(sent):
        assert np.array_equal(x, xs[i] if p.included[i] else ds[i]) and y == p.labels()[i]


def test_decoys_are_distinct_records_that_normalise_to_the_zero_input() -> None:
    from agent.records import record_digest
    from models.preprocess import standardise_per_window

    p = new_plan(m=32, shape=(1, 256), num_classes=11, seed=3)
    ds = p.decoys()
    assert len({record_digest(d, 0) for d in ds}) == 32  # the device keeps every slot
    assert not standardise_per_window(ds).any()


def test_spike_canaries_sit_at_distinct_positions() -> None:
    p = new_plan(m=256, shape=(1, 256), num_classes=11, seed=1)
    flat = p.windows().reshape(256, -1)
    assert (np.count_nonzero(flat, axis=1) == 1).all()
    assert sorted(p.positions().tolist()) == list(range(256))
    assert np.array_equal(np.abs(flat).argmax(axis=1), p.positions())


@pytest.mark.parametrize("kw", [
    {"m": 1}, {"m": 300}, {"num_classes": 1}, {"kind": "nope"}, {"seed": -1},
])
def test_bad_plans_are_refused(kw: dict[str, object]) -> None:
    args: dict[str, object] = {"m": 16, "seed": 1, "shape": (1, 256), "num_classes": 11}
    args.update(kw)
    with pytest.raises(AuditInputError):
        CanaryPlan(**args)  # type: ignore[arg-type]


def test_a_malformed_plan_file_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "p.json").write_text('{"version": 1, "m": "x"}')
    with pytest.raises(AuditInputError, match="malformed canary plan"):
        load_plan(tmp_path / "p.json")
    with pytest.raises(AuditInputError, match="cannot read"):
        load_plan(tmp_path / "missing.json")
