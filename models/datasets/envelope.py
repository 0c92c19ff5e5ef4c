"""Envelope spectrum, the standard bearing-diagnosis feature (pure numpy).

Band-pass the signal around the structural resonance (FFT bins outside
``band`` set to zero), take the analytic signal with the FFT Hilbert
transform (negative frequencies zeroed, positive ones doubled), its
magnitude is the envelope; the amplitude spectrum of the mean-removed
envelope shows the impact repetition frequency (BPFO, BPFI, 2*BSF) and
its modulation sidebands. See Randall & Antoni (2011).
"""

from __future__ import annotations

import numpy as np

from models.datasets.errors import DatasetError


def envelope(x: np.ndarray, *, sample_rate_hz: float,
             band: tuple[float, float] | None = None) -> np.ndarray:
    """Envelope (``|analytic signal|``) along the last axis, after the optional band-pass."""
    a = np.asarray(x, dtype=np.float64)
    n = a.shape[-1]
    if n < 2:
        raise DatasetError("need at least 2 samples")
    spec = np.fft.fft(a, axis=-1)
    freqs = np.fft.fftfreq(n, d=1.0 / sample_rate_hz)
    keep = np.zeros(n)
    keep[freqs > 0] = 2.0
    keep[0] = 1.0
    if n % 2 == 0:
        keep[n // 2] = 1.0
    if band is not None:
        lo, hi = band
        if not 0 <= lo < hi:
            raise DatasetError(f"band must satisfy 0 <= lo < hi, got {band}")
        keep[(np.abs(freqs) < lo) | (np.abs(freqs) > hi)] = 0.0
    return np.abs(np.fft.ifft(spec * keep, axis=-1))


def envelope_spectrum(x: np.ndarray, *, sample_rate_hz: float,
                      band: tuple[float, float] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """``(freqs_hz, amplitude)`` of the envelope spectrum along the last axis.

    ``amplitude`` has ``x``'s leading shape and ``n // 2 + 1`` bins, scaled
    so a sinusoidal envelope component of amplitude A shows as A.
    """
    env = envelope(x, sample_rate_hz=sample_rate_hz, band=band)
    env = env - env.mean(axis=-1, keepdims=True)
    n = env.shape[-1]
    amp = np.abs(np.fft.rfft(env, axis=-1)) * 2.0 / n
    return np.fft.rfftfreq(n, d=1.0 / sample_rate_hz), amp
