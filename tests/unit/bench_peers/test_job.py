"""The Flower side gets the stack's split, budget and a noise multiplier at matched epsilon."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bench.peers.job import (
    FlowerJob,
    flower_epsilon,
    flower_job,
    flower_noise_multiplier,
    rdp_epsilon,
)
from deploy.stack.plan import StackOptions, make_plan
from models.datasets.ucr import load_split
from protocol.errors import ConfigError, SplitfedError


@settings(max_examples=25, deadline=None)
@given(epsilon=st.floats(0.5, 16.0), rounds=st.integers(1, 60))
def test_noise_multiplier_spends_exactly_the_budget(epsilon: float, rounds: int) -> None:
    z = flower_noise_multiplier(epsilon=epsilon, delta=1e-5, rounds=rounds)
    spent = flower_epsilon(noise_multiplier=z, delta=1e-5, rounds=rounds)
    assert spent <= epsilon * (1 + 1e-9)
    assert spent >= epsilon * 0.999            # not over-noised either
    # Google's RDP accountant is an upper bound on the same composition
    assert rdp_epsilon(noise_multiplier=z, delta=1e-5, rounds=rounds) >= spent * 0.999


def test_more_rounds_need_more_noise() -> None:
    zs = [flower_noise_multiplier(epsilon=4.0, delta=1e-5, rounds=r) for r in (1, 10, 100)]
    assert zs[0] < zs[1] < zs[2]


def test_job_mirrors_the_stack_plan(data_dir: Path, tmp_path: Path) -> None:
    train, test = load_split(data_dir, "PLAID")
    opts = StackOptions(run_dir=tmp_path, data_dir=data_dir, orgs=2, devices_per_org=4,
                        rounds=7, epsilon=None)
    plan = make_plan(opts, train_labels=np.asarray(train.labels),
                     test_labels=np.asarray(test.labels), num_classes=len(train.class_names))
    job = flower_job(plan, name="t", data_dir=data_dir, server_lr=5e-3, epsilon=8.0)
    assert job.partitions == tuple(d.indices for d in plan.devices)
    assert job.eval_indices == plan.server_eval
    assert (job.rounds, job.steps_per_round, job.batch_size, job.client_lr) == (
        7, opts.steps_per_round, opts.batch_size, opts.lr)
    assert job.noise_multiplier == pytest.approx(
        flower_noise_multiplier(epsilon=8.0, delta=opts.delta, rounds=7))
    assert FlowerJob.from_json(job.to_json()) == job
    assert flower_job(plan, name="t", data_dir=data_dir, server_lr=5e-3,
                      epsilon=None).noise_multiplier is None


def test_bad_job_reports_every_problem() -> None:
    with pytest.raises(ConfigError) as err:
        FlowerJob(name="x", dataset="PLAID", data_dir="/d", model="cnn1d", cut=1,
                  window_length=256, window_mode="pad", per_window=True, devices=("a",),
                  partitions=((),), eval_indices=(1,), rounds=0, steps_per_round=1,
                  batch_size=1, client_lr=0.1, server_lr=0.1, seed=0, epsilon=1.0)
    assert isinstance(err.value, SplitfedError)
    text = str(err.value)
    assert "at least one record" in text and "rounds" in text and "noise_multiplier" in text
