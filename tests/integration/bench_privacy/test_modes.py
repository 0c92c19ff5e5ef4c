"""The privacy benchmark's modes on PLAID (real LiteRT artifacts, the agent's mechanisms)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from agent.privacy.calibrate import epsilon_for
from agent.privacy.dpfedavg import PoissonSampledGaussian, epsilon_for_events
from bench.privacy import modes as pm
from bench.privacy.tasks import Task, plaid_task

pytestmark = pytest.mark.tf  # initial weights come from models.zoo (TensorFlow import)


@pytest.fixture(scope="module")
def task(data_dir: Path) -> Task:
    return plaid_task(data_dir)


def test_plaid_task_is_the_demo_split(task: Task) -> None:
    assert len(task.devices) == 4 and task.orgs == 2
    assert task.n_train == 537 and len(task.y_test) == 537
    assert all(x.shape[1:] == task.full.input_shape for x, _ in task.devices)
    assert 0.1 < task.majority_rate() < 0.3


def test_validation_is_carved_from_train_only(task: Task) -> None:
    val = task.validation(0.2, seed=0)
    assert val.n_train + len(val.y_test) == task.n_train
    train_rows = {r.tobytes() for x, _ in val.devices for r in x}
    assert not train_rows & {r.tobytes() for r in val.x_test}
    test_rows = {r.tobytes() for r in task.x_test}
    assert not {r.tobytes() for r in val.x_test} <= test_rows


def test_fl_dpsgd_noise_fits_the_budget_and_nonprivate_learns(task: Task) -> None:
    hp = pm.FlHp(q=1.0, rounds=10, local_steps=1, lr=1.0, clip=1.0)
    private = pm.run_fl_dpsgd(task, 8.0, 0, hp)
    z = private["noise_multiplier"]
    ev = [PoissonSampledGaussian(noise_multiplier=z, sampling_prob=1.0, count=10)]
    assert epsilon_for_events(ev, delta=pm.DELTA, value_discretization_interval=1e-3) <= 8.0
    plain = pm.run_fl_dpsgd(task, None, 0, hp)
    assert plain["noise_multiplier"] == 0.0
    assert plain["accuracy"] > task.majority_rate() + 0.05
    assert 0.0 <= private["accuracy"] <= 1.0


def test_split_modes_spend_within_the_budget(task: Task) -> None:
    frozen = pm.run_sl_frozen(task, 4.0, 0, pm.SlHp(releases=2, label_share=0.25, passes=2,
                                                   server_lr=5e-3))
    assert frozen["label_epsilon"] == pytest.approx(1.0)
    spent = epsilon_for(noise_multiplier=frozen["noise_multiplier"], releases_per_record=2,
                        delta=pm.DELTA, label_epsilon=0.5)
    assert spent <= 4.0 + 1e-6
    hp = pm.SlDpHp(epochs=1, batch=16, client_lr=0.1, clip=1.0, server_lr=5e-3, label_share=0.25)
    dpsgd = pm.run_sl_dpsgd(task, 4.0, 0, hp)
    spent = epsilon_for(noise_multiplier=dpsgd["noise_multiplier"], releases_per_record=2,
                        delta=pm.DELTA, label_epsilon=0.5)
    assert spent <= 4.0 + 1e-6
    plain = pm.run_sl_frozen(task, None, 0, pm.SlHp(releases=1, label_share=0.0, passes=10,
                                                   server_lr=2e-2))
    assert plain["accuracy"] > task.majority_rate() + 0.05
    assert np.isfinite(dpsgd["accuracy"])
