"""Signal model of a rotating machine with a rolling-element bearing (pure numpy).

Theory of operation: :class:`RotorSynth` is a sample-clock state machine
(no wall clock). ``render(n)`` returns the next ``n`` samples of every
accelerometer channel and advances the state: time, shaft and cage phase,
the time of the next fault impact, and the ringing tail of the structure.
The signal of channel ``c`` is the sum of

1. **fault impacts**: an impulse each time a rolling element meets the
   defect, at the defect frequency of :mod:`models.datasets.bearing`
   (BPFO outer race, BPFI inner race, 2*BSF ball), with a random spacing
   jitter of ``slip`` (relative std; real bearings slip 1-2 %, Randall &
   Antoni 2011), amplitude proportional to ``(0.5 + load)`` and the
   fault severity, and amplitude modulation: none for the stationary outer
   race, at the shaft frequency for the rotating inner race (the defect
   passes through the load zone once per revolution), at the cage frequency
   FTF for a ball defect, whose contacts alternate between the outer race
   (stronger) and the inner race (weaker);
2. **broadband roughness**: white excitation of the same structure;
3. both filtered by the **structural resonance** of the channel, a damped
   single-degree-of-freedom impulse response
   ``exp(-zeta w_n t) sin(w_d t)`` (peak normalised to 1), so each impact
   rings at ``resonance_hz`` (channel ``c`` at ``resonance_hz * (1 + 0.12 c)``);
4. **shaft harmonics**: 1x (imbalance, rotating force, so channel ``c`` is
   shifted by ``c * 90`` degrees) and 2x (misalignment, grows with load);
5. white Gaussian sensor noise ``noise_std``.

Healthy machines have 2-5 only. Everything random comes from the injected
``numpy.random.Generator``; same generator state, same samples.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from models.datasets.bearing import BEARING_6205, BearingGeometry, defect_frequencies
from models.datasets.errors import DatasetError

CLASSES: tuple[str, ...] = ("healthy", "outer_race", "inner_race", "ball")
_AXIS_RESONANCE_STEP = 0.12
_AXIS_GAIN_STEP = 0.3
_BALL_INNER_CONTACT = 0.6


def _range(name: str, r: tuple[float, float], *, low: float) -> None:
    if not (low <= r[0] <= r[1] and math.isfinite(r[1])):
        raise DatasetError(f"{name} must be a finite range with {low} <= lo <= hi, got {r}")


@dataclass(frozen=True, slots=True, kw_only=True)
class MachineProfile:
    """One simulated machine: its bearing, operating range and sensor.

    ``load_range`` is the fraction of rated load (0..1.5). Amplitudes are in
    g (acceleration). ``channels`` accelerometer axes share the excitation.
    """

    machine_id: int
    geometry: BearingGeometry = field(default_factory=lambda: BEARING_6205)
    shaft_hz_range: tuple[float, float] = (25.0, 30.0)
    load_range: tuple[float, float] = (0.2, 1.0)
    noise_std: float = 0.05
    resonance_hz: float = 3000.0
    damping_ratio: float = 0.05
    sample_rate_hz: float = 12_000.0
    channels: int = 1
    imbalance_g: float = 0.3
    misalignment_g: float = 0.1
    fault_amplitude_g: float = 1.0
    roughness_g: float = 0.05
    slip: float = 0.01

    def __post_init__(self) -> None:
        if self.machine_id < 0:
            raise DatasetError(f"machine_id must be >= 0, got {self.machine_id}")
        _range("shaft_hz_range", self.shaft_hz_range, low=1e-3)
        _range("load_range", self.load_range, low=0.0)
        if self.load_range[1] > 1.5:
            raise DatasetError("load_range must stay within 0..1.5 of rated load")
        if self.channels < 1:
            raise DatasetError(f"channels must be >= 1, got {self.channels}")
        if not self.sample_rate_hz > 0:
            raise DatasetError("sample_rate_hz must be > 0")
        top = self.resonance_hz * (1 + _AXIS_RESONANCE_STEP * (self.channels - 1))
        if not 0 < top < 0.45 * self.sample_rate_hz:
            raise DatasetError(
                f"resonance {top:.0f} Hz (highest channel) must be below 0.45 * sample rate")
        if not 0 < self.damping_ratio < 1:
            raise DatasetError("damping_ratio must be in (0, 1)")
        for name in ("noise_std", "imbalance_g", "misalignment_g", "fault_amplitude_g",
                     "roughness_g", "slip"):
            value = getattr(self, name)
            if not (value >= 0 and math.isfinite(value)):
                raise DatasetError(f"{name} must be finite and >= 0, got {value}")
        if self.slip >= 0.2:
            raise DatasetError("slip must be < 0.2")


def resonance_kernel(profile: MachineProfile, channel: int) -> np.ndarray:
    """Impulse response of channel ``channel`` (peak 1), cut where it decays to 1e-3."""
    fn = profile.resonance_hz * (1 + _AXIS_RESONANCE_STEP * channel)
    wn = 2 * math.pi * fn
    zeta = profile.damping_ratio
    n = max(2, math.ceil(7.0 / (zeta * wn) * profile.sample_rate_hz))
    t = np.arange(n) / profile.sample_rate_hz
    h = np.exp(-zeta * wn * t) * np.sin(wn * math.sqrt(1 - zeta * zeta) * t)
    kernel: np.ndarray = h / np.abs(h).max()
    return kernel


class RotorSynth:
    """Sample-clock signal generator for one machine (see module docstring)."""

    def __init__(self, profile: MachineProfile, rng: np.random.Generator) -> None:
        self.profile = profile
        # One generator per random component, so the samples do not depend on
        # how the caller chunks render() calls.
        self._rng_impacts, self._rng_rough, *self._rng_noise = rng.spawn(2 + profile.channels)
        self.kernels = [resonance_kernel(profile, c) for c in range(profile.channels)]
        self.tails = [np.zeros(k.size - 1) for k in self.kernels]
        self.gains = [1.0 / (1 + _AXIS_GAIN_STEP * c) for c in range(profile.channels)]
        self.sample = 0
        self.shaft_phase = float(rng.uniform(0, 2 * math.pi))
        self.cage_phase = float(rng.uniform(0, 2 * math.pi))
        self.mis_phase = float(rng.uniform(0, 2 * math.pi))
        self.shaft_hz = float(np.mean(profile.shaft_hz_range))
        self.load = float(np.mean(profile.load_range))
        self.label = 0
        self.severity = 1.0
        self.next_impact: float | None = None
        self.impact_count = 0

    @property
    def t(self) -> float:
        """Time of the next sample, seconds."""
        return self.sample / self.profile.sample_rate_hz

    def set_operating_point(self, *, shaft_hz: float, load: float) -> None:
        if not shaft_hz > 0 or not load >= 0:
            raise DatasetError("shaft_hz must be > 0 and load >= 0")
        self.shaft_hz = float(shaft_hz)
        self.load = float(load)

    def set_label(self, label: int, *, severity: float = 1.0, restart: bool = False) -> None:
        """Switch the bearing state; a new (or ``restart``-ed) fault starts at a
        random impact phase, an unchanged one keeps its impact schedule."""
        if not 0 <= label < len(CLASSES):
            raise DatasetError(f"label must be in 0..{len(CLASSES) - 1}, got {label}")
        if not (severity >= 0 and math.isfinite(severity)):
            raise DatasetError(f"severity must be finite and >= 0, got {severity}")
        if restart or label != self.label or self.next_impact is None:
            self.next_impact = None
            if label != 0:
                phase = float(self._rng_impacts.uniform(0, 1 / self._defect_hz(label)))
                self.next_impact = self.t + phase
        self.label = label
        self.severity = float(severity)

    def _defect_hz(self, label: int) -> float:
        f = defect_frequencies(self.profile.geometry, shaft_hz=self.shaft_hz)
        return {1: f["BPFO"], 2: f["BPFI"], 3: 2.0 * f["BSF"]}[label]

    def _impacts(self, n: int) -> np.ndarray:
        fs = self.profile.sample_rate_hz
        e = np.zeros(n)
        if self.label == 0 or self.next_impact is None:
            return e
        period = 1.0 / self._defect_hz(self.label)
        ftf = defect_frequencies(self.profile.geometry, shaft_hz=self.shaft_hz)["FTF"]
        base = self.profile.fault_amplitude_g * self.severity * (0.5 + self.load)
        # impacts land on the nearest sample; compare in samples so a chunk
        # boundary never drops or duplicates one
        while (pos := round(self.next_impact * fs) - self.sample) < n:
            dt = self.next_impact - self.t
            amp = base
            if self.label == 2:
                theta = self.shaft_phase + 2 * math.pi * self.shaft_hz * dt
                amp *= (1 + 0.8 * math.cos(theta)) / 1.8
            elif self.label == 3:
                amp *= (1 + 0.8 * math.cos(self.cage_phase + 2 * math.pi * ftf * dt)) / 1.8
                if self.impact_count % 2:
                    amp *= _BALL_INNER_CONTACT
            if 0 <= pos < n:
                e[pos] += amp
            self.impact_count += 1
            step = period * (1 + self.profile.slip * float(self._rng_impacts.standard_normal()))
            self.next_impact += max(step, 0.2 * period)
        return e

    def render(self, n: int) -> np.ndarray:
        """The next ``n`` samples, float64 ``(channels, n)``."""
        if n < 0:
            raise DatasetError("n must be >= 0")
        p = self.profile
        if n == 0:
            return np.zeros((p.channels, 0))
        fs = p.sample_rate_hz
        excitation = self._impacts(n) + p.roughness_g * self._rng_rough.standard_normal(n)
        theta = self.shaft_phase + 2 * math.pi * self.shaft_hz * np.arange(n) / fs
        out = np.empty((p.channels, n))
        mis = p.misalignment_g * (0.5 + self.load)
        for c, (kernel, gain) in enumerate(zip(self.kernels, self.gains, strict=True)):
            ring = np.convolve(excitation, kernel)
            ring[: self.tails[c].size] += self.tails[c]
            self.tails[c] = ring[n:].copy()
            axis = c * math.pi / 2
            out[c] = (gain * ring[:n]
                      + p.imbalance_g * np.cos(theta + axis)
                      + mis * np.cos(2 * theta + self.mis_phase + axis)
                      + p.noise_std * self._rng_noise[c].standard_normal(n))
        ftf = defect_frequencies(p.geometry, shaft_hz=self.shaft_hz)["FTF"]
        self.sample += n
        self.shaft_phase = (self.shaft_phase + 2 * math.pi * self.shaft_hz * n / fs) % (2 * math.pi)
        self.cage_phase = (self.cage_phase + 2 * math.pi * ftf * n / fs) % (2 * math.pi)
        return out
