"""Synthetic rotating-machine vibration data with bearing faults.

Classes (index = label): ``healthy``, ``outer_race``, ``inner_race``,
``ball``. The physics is in :mod:`models.datasets.rotor` (impulse trains at
the kinematic defect frequencies of :mod:`models.datasets.bearing` ringing a
structural resonance, modulated by shaft or cage rotation, plus shaft
harmonics and noise).

Two forms:

- :func:`generate` / :func:`make_vibration_split`: independent windows
  ``(N, C, L)``, each at its own shaft speed, load and fault severity drawn
  from the machine's ranges, for any number of machines that each differ
  (bearing type, speed range, resonance, damping, noise, imbalance ...);
  per-machine class mixes make non-IID data directly.
- :class:`VibrationStream`: one machine as an endless sensor, continuous
  across calls, whose bearing state switches over time (exponential dwell
  times) and whose speed and load step to new values now and then.

Reproducible: machine ``m``'s profile depends only on ``(seed, m)``, so the
train and test splits of :func:`make_vibration_split` share machines.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from models.datasets.bearing import (
    BEARING_6203,
    BEARING_6205,
    BearingGeometry,
    defect_frequencies,
)
from models.datasets.errors import DatasetError
from models.datasets.rotor import CLASSES, MachineProfile, RotorSynth

__all__ = [
    "CLASSES",
    "BearingGeometry",
    "MachineProfile",
    "VibrationDataset",
    "VibrationStream",
    "defect_frequencies",
    "envelope_band",
    "generate",
    "make_vibration_split",
    "random_profile",
]

_SEVERITY = (0.6, 1.4)


@dataclass(frozen=True, slots=True, kw_only=True)
class VibrationDataset:
    """Windows ``series`` float32 ``(N, C, L)`` with int64 ``labels`` and ``machine_ids``;
    ``shaft_hz`` and ``load`` (float64, per window) are the operating point."""

    series: np.ndarray
    labels: np.ndarray
    machine_ids: np.ndarray
    shaft_hz: np.ndarray
    load: np.ndarray
    sample_rate_hz: float
    class_names: tuple[str, ...] = CLASSES

    def __post_init__(self) -> None:
        if self.series.ndim != 3 or self.series.dtype != np.float32:
            raise DatasetError("series must be float32 (N, C, L)")
        n = self.series.shape[0]
        for name in ("labels", "machine_ids", "shaft_hz", "load"):
            if getattr(self, name).shape != (n,):
                raise DatasetError(f"{name} must have shape ({n},)")
        if self.labels.dtype != np.int64 or self.machine_ids.dtype != np.int64:
            raise DatasetError("labels and machine_ids must be int64")
        if n and (self.labels.min() < 0 or self.labels.max() >= len(self.class_names)):
            raise DatasetError("label outside class_names")

    def __len__(self) -> int:
        return int(self.series.shape[0])


def random_profile(
    machine_id: int, *, seed: int, channels: int = 1, sample_rate_hz: float = 12_000.0
) -> MachineProfile:
    """The profile of machine ``machine_id`` in the fleet of ``seed`` (deterministic)."""
    rng = np.random.default_rng([seed, machine_id, 0])
    centre = float(rng.uniform(20.0, 35.0))
    resonance_max = 0.4 * sample_rate_hz / (1 + 0.12 * (channels - 1))
    resonance = float(rng.uniform(0.35, 0.8) * resonance_max)
    lo_load = float(rng.uniform(0.0, 0.4))
    return MachineProfile(
        machine_id=machine_id,
        geometry=BEARING_6205 if rng.random() < 0.5 else BEARING_6203,
        shaft_hz_range=(centre * 0.92, centre * 1.08),
        load_range=(lo_load, lo_load + float(rng.uniform(0.3, 0.8))),
        noise_std=float(rng.uniform(0.03, 0.1)),
        resonance_hz=resonance,
        damping_ratio=float(rng.uniform(0.03, 0.08)),
        sample_rate_hz=sample_rate_hz,
        channels=channels,
        imbalance_g=float(rng.uniform(0.1, 0.5)),
        misalignment_g=float(rng.uniform(0.02, 0.2)),
        fault_amplitude_g=float(rng.uniform(0.6, 1.2)),
        roughness_g=float(rng.uniform(0.02, 0.06)),
        slip=float(rng.uniform(0.005, 0.02)),
    )


def _mix_rows(class_mix: np.ndarray | None, machines: int) -> np.ndarray:
    k = len(CLASSES)
    if class_mix is None:
        return np.full((machines, k), 1.0 / k)
    mix = np.asarray(class_mix, dtype=np.float64)
    if mix.shape == (k,):
        mix = np.tile(mix, (machines, 1))
    if mix.shape != (machines, k):
        raise DatasetError(f"class_mix must have shape ({k},) or ({machines}, {k})")
    if not np.isfinite(mix).all() or (mix < 0).any() or (mix.sum(axis=1) <= 0).any():
        raise DatasetError("class_mix rows must be finite, >= 0 and not all zero")
    rows: np.ndarray = mix / mix.sum(axis=1, keepdims=True)
    return rows


def _window(synth: RotorSynth, label: int, length: int, rng: np.random.Generator) -> np.ndarray:
    p = synth.profile
    synth.set_operating_point(shaft_hz=float(rng.uniform(*p.shaft_hz_range)),
                              load=float(rng.uniform(*p.load_range)))
    synth.set_label(label, severity=float(rng.uniform(*_SEVERITY)), restart=True)
    synth.render(max(len(k) for k in synth.kernels))  # warm-up: ring of earlier impacts
    return synth.render(length)


def _generate(profiles: Sequence[MachineProfile], windows: int, length: int,
              class_mix: np.ndarray | None, seed: int, stream: int) -> VibrationDataset:
    if windows < 0 or length < 2:
        raise DatasetError("windows_per_machine must be >= 0 and length >= 2")
    if not profiles:
        raise DatasetError("need at least one machine")
    rates = {p.sample_rate_hz for p in profiles}
    chans = {p.channels for p in profiles}
    if len(rates) != 1 or len(chans) != 1:
        raise DatasetError("all machines of one dataset need the same sample rate and channels")
    mix = _mix_rows(class_mix, len(profiles))
    n = len(profiles) * windows
    series = np.empty((n, chans.pop(), length), dtype=np.float32)
    labels = np.empty(n, dtype=np.int64)
    shaft = np.empty(n)
    load = np.empty(n)
    for m, prof in enumerate(profiles):
        rng = np.random.default_rng([seed, prof.machine_id, stream])
        counts = np.floor(mix[m] * windows).astype(np.int64)
        rest = np.argsort(-(mix[m] * windows - counts), kind="stable")[: windows - counts.sum()]
        counts[rest] += 1
        ys = rng.permutation(np.repeat(np.arange(len(CLASSES)), counts))
        synth = RotorSynth(prof, rng)
        for w, y in enumerate(ys):
            i = m * windows + w
            series[i] = _window(synth, int(y), length, rng)
            labels[i], shaft[i], load[i] = y, synth.shaft_hz, synth.load
    return VibrationDataset(
        series=series, labels=labels,
        machine_ids=np.repeat(np.array([p.machine_id for p in profiles], np.int64), windows),
        shaft_hz=shaft, load=load, sample_rate_hz=rates.pop())


def generate(
    *,
    machines: int,
    windows_per_machine: int,
    length: int,
    channels: int = 1,
    class_mix: np.ndarray | None = None,
    seed: int,
    sample_rate_hz: float = 12_000.0,
    profiles: Sequence[MachineProfile] | None = None,
) -> VibrationDataset:
    """Independent windows from ``machines`` different machines.

    ``class_mix``: class probabilities, shape ``(4,)`` for every machine or
    ``(machines, 4)`` per machine (rows are normalised; counts per machine
    follow them exactly up to rounding); default uniform. ``profiles``
    overrides the random fleet (then ``machines`` must equal its length).
    """
    if machines < 1:
        raise DatasetError(f"machines must be >= 1, got {machines}")
    if profiles is None:
        profiles = [random_profile(m, seed=seed, channels=channels,
                                   sample_rate_hz=sample_rate_hz) for m in range(machines)]
    elif len(profiles) != machines:
        raise DatasetError("len(profiles) must equal machines")
    return _generate(profiles, windows_per_machine, length, class_mix, seed, stream=1)


def make_vibration_split(
    *,
    machines: int,
    train_per_machine: int,
    test_per_machine: int,
    length: int,
    channels: int = 1,
    class_mix: np.ndarray | None = None,
    seed: int,
    sample_rate_hz: float = 12_000.0,
) -> tuple[VibrationDataset, VibrationDataset]:
    """Train and test windows from the same machines, drawn independently."""
    if machines < 1:
        raise DatasetError(f"machines must be >= 1, got {machines}")
    profiles = [random_profile(m, seed=seed, channels=channels, sample_rate_hz=sample_rate_hz)
                for m in range(machines)]
    train = _generate(profiles, train_per_machine, length, class_mix, seed, stream=1)
    test = _generate(profiles, test_per_machine, length, class_mix, seed, stream=2)
    return train, test


class VibrationStream:
    """One machine as a continuous sensor (see module docstring).

    The bearing state is :attr:`label` (class of the last sample produced);
    it switches after exponential dwell times of mean ``mean_dwell_s``
    (``math.inf``: never) to a different class drawn from ``class_mix``.
    Speed and load step to new values from the profile's ranges every
    ``operating_period_s``. ``initial_label`` is the state at time 0.
    """

    def __init__(self, profile: MachineProfile, seed: int, *,
                 class_mix: np.ndarray | None = None, mean_dwell_s: float = 30.0,
                 operating_period_s: float = 5.0, initial_label: int = 0) -> None:
        if not mean_dwell_s > 0 or not operating_period_s > 0:
            raise DatasetError("mean_dwell_s and operating_period_s must be > 0")
        self.profile = profile
        root = np.random.default_rng([seed, profile.machine_id, 3])
        self._rng, synth_rng = root.spawn(2)
        self._mix = _mix_rows(class_mix, 1)[0]
        self._dwell = mean_dwell_s
        self._period = max(1, round(operating_period_s * profile.sample_rate_hz))
        self._synth = RotorSynth(profile, synth_rng)
        self._new_operating_point()
        self._synth.set_label(initial_label)
        self._next_switch = self._draw_dwell()
        self._next_op = self._period

    @property
    def label(self) -> int:
        return self._synth.label

    @property
    def time_s(self) -> float:
        """Simulated time of the next sample, seconds since the stream started."""
        return self._synth.t

    def _draw_dwell(self) -> float:
        """Sample index of the next class switch (``inf``: never)."""
        if math.isinf(self._dwell):
            return math.inf
        dwell = float(self._rng.exponential(self._dwell))
        return self._synth.sample + max(1, round(dwell * self.profile.sample_rate_hz))

    def _new_operating_point(self) -> None:
        p = self.profile
        self._synth.set_operating_point(shaft_hz=float(self._rng.uniform(*p.shaft_hz_range)),
                                        load=float(self._rng.uniform(*p.load_range)))

    def _switch(self) -> None:
        choices = self._mix.copy()
        choices[self.label] = 0.0
        if choices.sum() > 0:
            nxt = int(self._rng.choice(len(CLASSES), p=choices / choices.sum()))
            self._synth.set_label(nxt, severity=float(self._rng.uniform(*_SEVERITY)))
        self._next_switch = self._draw_dwell()

    def next_labelled(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        """The next ``n`` samples, float32 ``(C, n)``, and the int64 label of each sample.

        The samples do not depend on how a run is cut into calls.
        """
        if n < 0:
            raise DatasetError("n must be >= 0")
        chunks: list[np.ndarray] = [np.zeros((self.profile.channels, 0))]
        labels = np.empty(n, dtype=np.int64)
        done = 0
        while done < n:
            event = min(self._next_switch, self._next_op)
            take = int(min(n - done, event - self._synth.sample))
            chunks.append(self._synth.render(take))
            labels[done:done + take] = self.label
            done += take
            if self._synth.sample >= self._next_op:
                self._new_operating_point()
                self._next_op += self._period
            if self._synth.sample >= self._next_switch:
                self._switch()
        return np.concatenate(chunks, axis=1).astype(np.float32), labels

    def next_samples(self, n: int) -> np.ndarray:
        """The next ``n`` samples, float32 ``(C, n)``; :attr:`label` is then the current state."""
        return self.next_labelled(n)[0]


def envelope_band(profile: MachineProfile) -> tuple[float, float]:
    """A band around the machine's resonances, for :func:`envelope_spectrum`."""
    top = profile.resonance_hz * (1 + 0.12 * (profile.channels - 1))
    return (0.6 * profile.resonance_hz, min(1.4 * top, 0.5 * profile.sample_rate_hz))
