"""Synthetic bearing vibration: kinematics, physics in the spectrum, learnability, streams."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from models.datasets.bearing import BEARING_6203, BEARING_6205
from models.datasets.envelope import envelope_spectrum
from models.datasets.errors import DatasetError
from models.datasets.vibration import (
    CLASSES,
    BearingGeometry,
    MachineProfile,
    VibrationDataset,
    VibrationStream,
    defect_frequencies,
    envelope_band,
    generate,
    make_vibration_split,
    random_profile,
)


def test_defect_frequencies_match_published_6205_orders() -> None:
    # CWRU bearing data centre, 6205-2RS JEM: multiples of running speed
    f = defect_frequencies(BEARING_6205, shaft_hz=1.0)
    assert f["BPFI"] == pytest.approx(5.4152, rel=2e-3)
    assert f["BPFO"] == pytest.approx(3.5848, rel=2e-3)
    assert f["FTF"] == pytest.approx(0.39828, rel=2e-3)
    assert 2 * f["BSF"] == pytest.approx(4.7135, rel=2e-3)  # CWRU's "BSF" is 2x spin
    g = defect_frequencies(BEARING_6203, shaft_hz=1.0)
    assert g["BPFI"] == pytest.approx(4.9469, rel=2e-3)
    assert g["BPFO"] == pytest.approx(3.0530, rel=2e-3)


@given(n=st.integers(3, 30), d=st.floats(1, 20), ratio=st.floats(1.2, 10),
       angle=st.floats(0, 40), fr=st.floats(1, 200))
def test_kinematic_identities(n: int, d: float, ratio: float, angle: float, fr: float) -> None:
    geom = BearingGeometry(n_balls=n, ball_diameter_mm=d, pitch_diameter_mm=d * ratio,
                           contact_angle_deg=angle)
    f = defect_frequencies(geom, shaft_hz=fr)
    assert f["BPFO"] + f["BPFI"] == pytest.approx(n * fr)
    assert f["BPFO"] == pytest.approx(n * f["FTF"])
    assert 0 < f["FTF"] < fr / 2 and f["BPFO"] < f["BPFI"]


def _peak_ratio(x: np.ndarray, fs: float, band: tuple[float, float], fd: float) -> float:
    f, a = envelope_spectrum(x, sample_rate_hz=fs, band=band)
    floor = np.median(a[(f > 10) & (f < 1000)])
    near = np.abs(f - fd) <= 0.03 * fd + 2 * (f[1] - f[0])
    return float(a[near].max() / floor)


def test_envelope_spectrum_peaks_at_the_defect_frequency() -> None:
    ds = generate(machines=6, windows_per_machine=16, length=8192, seed=3)
    ratios: dict[int, list[list[float]]] = {k: [] for k in range(4)}
    for i in range(len(ds)):
        prof = random_profile(int(ds.machine_ids[i]), seed=3)
        d = defect_frequencies(prof.geometry, shaft_hz=float(ds.shaft_hz[i]))
        ratios[int(ds.labels[i])].append([
            _peak_ratio(ds.series[i, 0], ds.sample_rate_hz, envelope_band(prof), fd)
            for fd in (d["BPFO"], d["BPFI"], 2 * d["BSF"])])
    healthy = np.median(np.array(ratios[0]), axis=0)
    assert (healthy < 5).all(), healthy  # no discrete line: a healthy bearing does not impact
    for k in (1, 2, 3):  # outer -> BPFO, inner -> BPFI, ball -> 2*BSF
        own = np.array(ratios[k])[:, k - 1]
        assert np.median(own) > 3 * healthy[k - 1], (CLASSES[k], own)
        assert np.mean(own > 6) >= 0.9, (CLASSES[k], own)


def _order_features(ds: VibrationDataset) -> np.ndarray:
    f, a = envelope_spectrum(ds.series[:, 0], sample_rate_hz=ds.sample_rate_hz,
                             band=(1000.0, 6000.0))
    rows = [np.interp(np.arange(1.0, 8.0, 0.25) * ds.shaft_hz[i], f, a[i])
            for i in range(len(ds))]
    x = np.array(rows)
    out: np.ndarray = x / np.linalg.norm(x, axis=1, keepdims=True)
    return out


def test_nearest_centroid_learns_the_classes() -> None:
    train, test = make_vibration_split(machines=6, train_per_machine=40, test_per_machine=20,
                                       length=2048, seed=7)
    xtr, xte = _order_features(train), _order_features(test)
    centroids = np.stack([xtr[train.labels == k].mean(axis=0) for k in range(4)])
    pred = np.argmin(((xte[:, None, :] - centroids[None]) ** 2).sum(-1), axis=1)
    accuracy = float(np.mean(pred == test.labels))
    assert accuracy > 0.7, accuracy  # chance is 0.25


def test_generate_shapes_mix_and_reproducibility() -> None:
    mix = np.array([[1, 0, 0, 0], [0, 1, 1, 0], [1, 1, 1, 1]], dtype=float)
    ds = generate(machines=3, windows_per_machine=8, length=256, channels=2,
                  class_mix=mix, seed=11)
    assert ds.series.shape == (24, 2, 256) and ds.series.dtype == np.float32
    assert ds.machine_ids.tolist() == [0] * 8 + [1] * 8 + [2] * 8
    assert np.bincount(ds.labels[:8], minlength=4).tolist() == [8, 0, 0, 0]
    assert np.bincount(ds.labels[8:16], minlength=4).tolist() == [0, 4, 4, 0]
    assert np.bincount(ds.labels[16:], minlength=4).tolist() == [2, 2, 2, 2]
    assert ds.class_names == CLASSES
    again = generate(machines=3, windows_per_machine=8, length=256, channels=2,
                     class_mix=mix, seed=11)
    np.testing.assert_array_equal(ds.series, again.series)
    other = generate(machines=3, windows_per_machine=8, length=256, channels=2,
                     class_mix=mix, seed=12)
    assert not np.array_equal(ds.series, other.series)
    for m in range(3):
        prof = random_profile(m, seed=11, channels=2)
        sel = ds.machine_ids == m
        assert ((ds.shaft_hz[sel] >= prof.shaft_hz_range[0])
                & (ds.shaft_hz[sel] <= prof.shaft_hz_range[1])).all()


def test_machines_differ_and_split_shares_them() -> None:
    profiles = [random_profile(m, seed=5) for m in range(8)]
    assert len({p.resonance_hz for p in profiles}) == 8
    assert len({p.geometry for p in profiles}) == 2
    train, test = make_vibration_split(machines=2, train_per_machine=4, test_per_machine=4,
                                       length=128, seed=5)
    assert set(train.machine_ids.tolist()) == set(test.machine_ids.tolist()) == {0, 1}
    assert not np.array_equal(train.series, test.series)


def test_stream_is_continuous_and_switches_classes() -> None:
    prof = random_profile(1, seed=2, channels=2)
    whole, labels = VibrationStream(prof, 9, mean_dwell_s=0.2).next_labelled(24_000)
    stream = VibrationStream(prof, 9, mean_dwell_s=0.2)
    pieces = [stream.next_labelled(k) for k in (1, 0, 999, 5000, 18_000)]
    np.testing.assert_array_equal(whole, np.concatenate([p[0] for p in pieces], axis=1))
    np.testing.assert_array_equal(labels, np.concatenate([p[1] for p in pieces]))
    assert whole.shape == (2, 24_000) and whole.dtype == np.float32
    assert stream.label == labels[-1] and stream.time_s == pytest.approx(2.0)
    assert set(labels.tolist()) == {0, 1, 2, 3}
    switches = int(np.count_nonzero(np.diff(labels)))
    assert 3 <= switches <= 25  # ~10 expected in 2 s with a 0.2 s mean dwell


def test_stream_dwell_and_mix() -> None:
    prof = random_profile(0, seed=2)
    fixed = VibrationStream(prof, 1, mean_dwell_s=math.inf, initial_label=2)
    assert set(fixed.next_labelled(30_000)[1].tolist()) == {2}
    mixed = VibrationStream(prof, 1, mean_dwell_s=0.05, class_mix=np.array([1, 0, 0, 1.0]))
    assert set(mixed.next_labelled(30_000)[1].tolist()) == {0, 3}


def test_validation() -> None:
    with pytest.raises(DatasetError, match="resonance"):
        MachineProfile(machine_id=0, resonance_hz=6000.0, sample_rate_hz=12_000.0)
    with pytest.raises(DatasetError, match="shaft_hz_range"):
        MachineProfile(machine_id=0, shaft_hz_range=(30.0, 20.0))
    with pytest.raises(DatasetError, match="class_mix"):
        generate(machines=2, windows_per_machine=2, length=64, seed=0, class_mix=np.ones(3))
    with pytest.raises(DatasetError, match="pitch"):
        BearingGeometry(ball_diameter_mm=40.0)


@pytest.mark.parametrize(("label", "key", "factor"),
                         [(1, "BPFO", 1.0), (2, "BPFI", 1.0), (3, "BSF", 2.0)])
def test_clean_stream_envelope_line_is_exactly_the_defect_frequency(
    label: int, key: str, factor: float
) -> None:
    prof = MachineProfile(machine_id=0, shaft_hz_range=(29.95, 29.95), load_range=(0.5, 0.5),
                          noise_std=0.0, roughness_g=0.0, imbalance_g=0.0,
                          misalignment_g=0.0, slip=0.0)
    stream = VibrationStream(prof, 4, mean_dwell_s=math.inf, initial_label=label)
    x = np.concatenate([stream.next_samples(1000) for _ in range(120)], axis=1)  # 10 s
    f, a = envelope_spectrum(x[0], sample_rate_hz=prof.sample_rate_hz, band=(1500.0, 4500.0))
    sel = (f > 20) & (f < 500)
    peak = float(f[sel][np.argmax(a[sel])])
    expected = factor * defect_frequencies(prof.geometry, shaft_hz=29.95)[key]
    assert peak == pytest.approx(expected, abs=0.15)  # bin width 0.1 Hz
