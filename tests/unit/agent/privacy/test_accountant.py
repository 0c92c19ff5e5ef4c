from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.privacy import (
    Accountant,
    AccountantStateError,
    DpSgdStep,
    GaussianRelease,
    LabelRelease,
    PoissonSampledGaussian,
    analytic_gaussian_epsilon,
)
from protocol.errors import BudgetExceeded, PrivacyError


def _acc(tmp_path: Path, budget: float = 10.0, **kw: object) -> Accountant:
    return Accountant(epsilon_budget=budget, delta=1e-5, state_path=tmp_path / "privacy.json", **kw)  # type: ignore[arg-type]


def test_replace_adjacency_doubles_sensitivity(tmp_path: Path) -> None:
    acc = _acc(tmp_path)
    eps = acc.spend([GaussianRelease(noise_multiplier=4.0)])
    assert eps == pytest.approx(analytic_gaussian_epsilon(mu=2 / 4.0, delta=1e-5))
    (tmp_path / "z").mkdir()
    z = _acc(tmp_path / "z", adjacency="zero_out")
    assert z.spend([GaussianRelease(noise_multiplier=4.0)]) == pytest.approx(
        analytic_gaussian_epsilon(mu=1 / 4.0, delta=1e-5)
    )


def test_per_record_accounting_charges_only_touched_records(tmp_path: Path) -> None:
    acc = _acc(tmp_path)
    # one epoch over 100 records in batches of 10: each record released once
    for b in range(10):
        acc.spend(
            [GaussianRelease(noise_multiplier=4.0, records=tuple(range(b * 10, b * 10 + 10)))]
        )
    one = analytic_gaussian_epsilon(mu=0.5, delta=1e-5)
    assert acc.epsilon == pytest.approx(one)
    # second epoch: each record twice -> sqrt(2) mu
    for b in range(10):
        acc.spend(
            [GaussianRelease(noise_multiplier=4.0, records=tuple(range(b * 10, b * 10 + 10)))]
        )
    assert acc.epsilon == pytest.approx(
        analytic_gaussian_epsilon(mu=0.5 * math.sqrt(2), delta=1e-5)
    )
    # the worst-case choice (records=None) charges everything to every record
    worst = Accountant(epsilon_budget=1e6, delta=1e-5, state_path=tmp_path / "w.json")
    for _ in range(20):
        worst.spend([GaussianRelease(noise_multiplier=4.0)])
    assert worst.epsilon == pytest.approx(
        analytic_gaussian_epsilon(mu=0.5 * math.sqrt(20), delta=1e-5)
    )
    assert worst.epsilon > acc.epsilon


def test_labels_and_global_steps_add(tmp_path: Path) -> None:
    acc = _acc(tmp_path)
    acc.spend(
        [
            GaussianRelease(noise_multiplier=4.0, records=(1,)),
            LabelRelease(epsilon=0.5, records=(1,)),
        ]
    )
    acc.spend([DpSgdStep(noise_multiplier=8.0)])  # records=None: every record
    expect = analytic_gaussian_epsilon(mu=math.sqrt(0.25 + 1 / 16), delta=1e-5) + 0.5
    assert acc.epsilon == pytest.approx(expect)


def test_dp_sgd_step_is_charged_to_its_batch_only(tmp_path: Path) -> None:
    """An audit found every DP-SGD step charged to every record (206 reported for a true 8)."""
    acc = _acc(tmp_path, 100.0)
    for batch in ((1, 2), (3, 4), (5, 6)):
        acc.spend([GaussianRelease(noise_multiplier=4.0, records=batch),
                   DpSgdStep(noise_multiplier=4.0, records=batch)])
    # each record: one row + one step at z=4 under replace (mu = 2/4 each)
    expect = analytic_gaussian_epsilon(mu=math.sqrt(2 * 0.25), delta=1e-5)
    assert acc.epsilon == pytest.approx(expect)
    (tmp_path / "w").mkdir()
    worst = _acc(tmp_path / "w", 100.0)
    for batch in ((1, 2), (3, 4), (5, 6)):
        worst.spend([GaussianRelease(noise_multiplier=4.0, records=batch),
                     DpSgdStep(noise_multiplier=4.0)])
    # all three steps on every record: mu^2 = 0.25 + 3 * 0.25
    assert worst.epsilon == pytest.approx(analytic_gaussian_epsilon(mu=1.0, delta=1e-5))


def test_unknown_adjacency_is_refused_everywhere(tmp_path: Path) -> None:
    from agent.privacy.calibrate import epsilon_for, noise_multiplier_for_budget

    with pytest.raises(PrivacyError, match="adjacency"):
        Accountant(epsilon_budget=1.0, delta=1e-5, state_path=tmp_path / "a.json",
                   adjacency="add_remove")  # type: ignore[arg-type]
    with pytest.raises(PrivacyError, match="adjacency"):
        epsilon_for(noise_multiplier=1.0, releases_per_record=1, delta=1e-5, adjacency="swap")
    with pytest.raises(PrivacyError, match="adjacency"):
        noise_multiplier_for_budget(epsilon=1.0, delta=1e-5, releases_per_record=1,
                                    adjacency="replace_one")


def test_budget_stops_at_the_right_step_and_survives_restart(tmp_path: Path) -> None:
    budget = 3.0
    acc = _acc(tmp_path, budget)
    expected_ok = max(
        k
        for k in range(1, 500)
        if analytic_gaussian_epsilon(mu=0.5 * math.sqrt(k), delta=1e-5) <= budget
    )
    released = 0
    while not acc.would_exceed([GaussianRelease(noise_multiplier=4.0)]):
        acc.spend([GaussianRelease(noise_multiplier=4.0)])
        released += 1
    assert released == expected_ok and not acc.halted
    with pytest.raises(BudgetExceeded, match="budget"):
        acc.spend([GaussianRelease(noise_multiplier=4.0)])
    assert acc.halted and acc.epsilon <= budget
    again = _acc(tmp_path, budget)
    assert again.halted and again.releases == expected_ok
    assert again.epsilon == pytest.approx(acc.epsilon)
    assert again.would_exceed([GaussianRelease(noise_multiplier=1e9)])
    with pytest.raises(BudgetExceeded):
        again.spend([GaussianRelease(noise_multiplier=1e9)])


def test_would_exceed_does_not_spend(tmp_path: Path) -> None:
    acc = _acc(tmp_path)
    acc.would_exceed([GaussianRelease(noise_multiplier=1.0, records=(1, 2))])
    acc.epsilon_after([GaussianRelease(noise_multiplier=1.0)])
    assert acc.epsilon == 0.0 and acc.releases == 0


def test_spend_is_on_disk_when_spend_returns(tmp_path: Path) -> None:
    acc = _acc(tmp_path)
    acc.spend([GaussianRelease(noise_multiplier=2.0, records=("w7",))])
    on_disk = json.loads((tmp_path / "privacy.json").read_text())
    assert on_disk["releases"] == 1 and on_disk["epsilon"] == pytest.approx(acc.epsilon)
    assert _acc(tmp_path).epsilon == pytest.approx(acc.epsilon)


def test_corrupt_or_deleted_state_is_never_reset(tmp_path: Path) -> None:
    acc = _acc(tmp_path)
    acc.spend([GaussianRelease(noise_multiplier=2.0)])
    path = tmp_path / "privacy.json"
    state = json.loads(path.read_text())
    state["rho_global"] = 0.0  # an edit that lowers the spend
    path.write_text(json.dumps(state))
    with pytest.raises(AccountantStateError, match="checksum"):
        _acc(tmp_path)
    path.write_text("{not json")
    with pytest.raises(AccountantStateError):
        _acc(tmp_path)
    path.unlink()
    with pytest.raises(AccountantStateError, match="missing"):
        _acc(tmp_path)


def test_config_validation(tmp_path: Path) -> None:
    for kw in ({"epsilon_budget": 0.0, "delta": 1e-5}, {"epsilon_budget": 1.0, "delta": 1.0}):
        with pytest.raises(PrivacyError):
            Accountant(state_path=tmp_path / "x.json", **kw)  # type: ignore[arg-type]
    with pytest.raises(PrivacyError):
        GaussianRelease(noise_multiplier=0.0)
    with pytest.raises(PrivacyError):
        GaussianRelease(noise_multiplier=1.0, records=())
    with pytest.raises(PrivacyError):
        PoissonSampledGaussian(noise_multiplier=1.0, sampling_prob=1.5)
    with pytest.raises(PrivacyError):
        PoissonSampledGaussian(noise_multiplier=1.0, sampling_prob=0.0)
    with pytest.raises(PrivacyError):
        DpSgdStep(noise_multiplier=1.0, records=())


@pytest.mark.parametrize("adjacency", ["zero_out", "replace"])
def test_poisson_sampled_steps_match_dp_accounting(tmp_path: Path, adjacency: str) -> None:
    from dp_accounting import dp_event
    from dp_accounting.pld import pld_privacy_accountant
    from dp_accounting.privacy_accountant import NeighboringRelation

    acc = _acc(tmp_path, 100.0, adjacency=adjacency)  # type: ignore[arg-type]
    eps = acc.spend([PoissonSampledGaussian(noise_multiplier=1.1, sampling_prob=0.01,
                                            count=100)])
    relation = (NeighboringRelation.REPLACE_ONE if adjacency == "replace"
                else NeighboringRelation.ADD_OR_REMOVE_ONE)
    ref = pld_privacy_accountant.PLDAccountant(neighboring_relation=relation)
    ref.compose(dp_event.SelfComposedDpEvent(
        dp_event.PoissonSampledDpEvent(0.01, dp_event.GaussianDpEvent(1.1)), 100))
    assert eps == pytest.approx(ref.get_epsilon(1e-5), rel=1e-9)
    s = 2.0 if adjacency == "replace" else 1.0
    assert 0 < eps < analytic_gaussian_epsilon(mu=math.sqrt(100) * s / 1.1, delta=1e-5) / 5
    assert _acc(tmp_path, 100.0, adjacency=adjacency).epsilon == pytest.approx(eps)  # type: ignore[arg-type]
    other = "replace" if adjacency == "zero_out" else "zero_out"
    with pytest.raises(AccountantStateError, match="adjacency"):
        _acc(tmp_path, 100.0, adjacency=other)  # type: ignore[arg-type]


def test_mixed_gaussian_and_sampled_parts_compose_under_one_relation(tmp_path: Path) -> None:
    """The non-sampled rho enters PLD with the relation's own sensitivity (not twice)."""
    from dp_accounting import dp_event
    from dp_accounting.pld import pld_privacy_accountant
    from dp_accounting.privacy_accountant import NeighboringRelation

    acc = _acc(tmp_path, 100.0)
    acc.spend([GaussianRelease(noise_multiplier=3.0, records=(1,))])
    eps = acc.spend([PoissonSampledGaussian(noise_multiplier=1.5, sampling_prob=0.05,
                                            count=20)])
    ref = pld_privacy_accountant.PLDAccountant(
        neighboring_relation=NeighboringRelation.REPLACE_ONE)
    ref.compose(dp_event.GaussianDpEvent(3.0))  # REPLACE_ONE: sensitivity 2, mu = 2/3
    ref.compose(dp_event.SelfComposedDpEvent(
        dp_event.PoissonSampledDpEvent(0.05, dp_event.GaussianDpEvent(1.5)), 20))
    assert eps == pytest.approx(ref.get_epsilon(1e-5), rel=1e-6)


def test_record_table_deleted_or_behind_is_refused(tmp_path: Path) -> None:
    acc = _acc(tmp_path)
    acc.spend([GaussianRelease(noise_multiplier=2.0, records=(1, 2))])
    acc.close()
    for f in tmp_path.glob("privacy.json.records.db*"):
        f.unlink()
    with pytest.raises(AccountantStateError, match="behind"):
        _acc(tmp_path)


def test_state_missing_but_record_table_present_is_refused(tmp_path: Path) -> None:
    acc = _acc(tmp_path)
    acc.spend([GaussianRelease(noise_multiplier=2.0, records=(1,))])
    acc.close()
    (tmp_path / "privacy.json").unlink()
    (tmp_path / "privacy.json.created").unlink()
    with pytest.raises(AccountantStateError, match=r"records\.db"):
        _acc(tmp_path)


def test_crash_between_record_table_and_summary_overcounts(tmp_path: Path) -> None:
    acc = _acc(tmp_path)
    acc.spend([GaussianRelease(noise_multiplier=4.0, records=(1,))])
    before = acc.epsilon
    # simulate a crash after the per-record rows of the next spend were committed
    acc._store.put_many({"1": (0.25 * 3, 0.0)})
    acc.close()
    again = _acc(tmp_path)
    assert again.epsilon == pytest.approx(
        analytic_gaussian_epsilon(mu=0.5 * math.sqrt(3), delta=1e-5)
    )
    assert again.epsilon > before
    again.close()
    assert _acc(tmp_path).epsilon == pytest.approx(again.epsilon)  # persisted upwards


def test_spend_cost_does_not_grow_with_history(tmp_path: Path) -> None:
    """records_tracked counts distinct records; only touched rows are read or written."""
    acc = _acc(tmp_path, 1e9)
    for b in range(50):
        acc.spend(
            [GaussianRelease(noise_multiplier=4.0, records=tuple(range(b * 20, b * 20 + 20)))]
        )
    acc.spend([GaussianRelease(noise_multiplier=4.0, records=(0, 5000))])
    assert acc.records_tracked == 1001
    assert acc.epsilon == pytest.approx(
        analytic_gaussian_epsilon(mu=0.5 * math.sqrt(2), delta=1e-5)
    )


_batches = st.lists(
    st.tuples(st.sampled_from([1.0, 2.0, 4.0, 8.0]),
              st.lists(st.integers(0, 30), min_size=1, max_size=8, unique=True)),
    min_size=1, max_size=15)


@settings(max_examples=25, deadline=None)
@given(batches=_batches)
def test_property_monotone_and_never_above_worst_case(
        tmp_path_factory: pytest.TempPathFactory, batches: list[tuple[float, list[int]]]) -> None:
    d = tmp_path_factory.mktemp("acc")
    per_record = Accountant(epsilon_budget=1e9, delta=1e-5, state_path=d / "r.json")
    worst = Accountant(epsilon_budget=1e9, delta=1e-5, state_path=d / "w.json")
    counts: dict[int, float] = {}
    last = 0.0
    for z, ids in batches:
        eps = per_record.spend([GaussianRelease(noise_multiplier=z, records=tuple(ids))])
        worst.spend([GaussianRelease(noise_multiplier=z)])
        for i in ids:
            counts[i] = counts.get(i, 0.0) + (2.0 / z) ** 2
        assert eps >= last
        last = eps
        assert eps <= worst.epsilon + 1e-12
    # exact: the most-released record determines epsilon
    expect = analytic_gaussian_epsilon(mu=math.sqrt(max(counts.values())), delta=1e-5)
    assert last == pytest.approx(expect)
    per_record.close()
    worst.close()


_mixed = st.lists(
    st.tuples(st.sampled_from(["row", "step", "label"]), st.floats(0.5, 8.0),
              st.lists(st.integers(0, 6), min_size=1, max_size=4, unique=True)),
    min_size=1, max_size=12)


@settings(max_examples=25, deadline=None)
@given(events=_mixed, adjacency=st.sampled_from(["replace", "zero_out"]))
def test_property_mixed_events_compose_per_record_and_in_any_order(
        tmp_path_factory: pytest.TempPathFactory, events: list[tuple[str, float, list[int]]],
        adjacency: str) -> None:
    """Rows and DP-SGD steps add mu^2 to exactly their records; labels add pure epsilon."""
    d = tmp_path_factory.mktemp("mixed")
    s = 2.0 if adjacency == "replace" else 1.0

    def make(kind: str, v: float, ids: list[int]) -> GaussianRelease | DpSgdStep | LabelRelease:
        if kind == "row":
            return GaussianRelease(noise_multiplier=v, records=tuple(ids))
        if kind == "step":
            return DpSgdStep(noise_multiplier=v, records=tuple(ids))
        return LabelRelease(epsilon=v / 8, records=tuple(ids))

    fwd = Accountant(epsilon_budget=1e9, delta=1e-5, state_path=d / "f.json",
                     adjacency=adjacency)  # type: ignore[arg-type]
    rev = Accountant(epsilon_budget=1e9, delta=1e-5, state_path=d / "r.json",
                     adjacency=adjacency)  # type: ignore[arg-type]
    rho: dict[int, float] = {}
    pure: dict[int, float] = {}
    for kind, v, ids in events:
        fwd.spend([make(kind, v, ids)])
        for i in ids:
            if kind == "label":
                pure[i] = pure.get(i, 0.0) + v / 8
            else:
                rho[i] = rho.get(i, 0.0) + (s / v) ** 2
    for kind, v, ids in reversed(events):
        rev.spend([make(kind, v, ids)])
    expect = (analytic_gaussian_epsilon(mu=math.sqrt(max(rho.values(), default=0.0)),
                                        delta=1e-5)
              + max(pure.values(), default=0.0))
    assert fwd.epsilon == pytest.approx(expect)
    assert rev.epsilon == pytest.approx(fwd.epsilon)
    fwd.close()
    rev.close()
