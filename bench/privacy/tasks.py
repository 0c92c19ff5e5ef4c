"""The benchmark's datasets as federations of devices, with their LiteRT artifacts.

A :class:`Task` is what every mode trains on: per-device normalised windows
and labels (the records each device holds), a held-out test split, and the
split (``mlp_dp`` cut 2) and full-model manifests. Three tasks:

* ``PLAID``: the UCR split, 2 organisations x 2 devices, the stack's non-IID
  Dirichlet split (:func:`deploy.stack.plan.make_plan`, alpha 1); the
  committed ``mlp_dp`` artifacts; test = the whole TEST split. Optional
  parameter-free front ends (:func:`plaid_front_end`: 4-sample pooling, log
  |FFT|) and ``model="cnn1d"`` exist for pilots; neither beat the raw window
  with mlp_dp at epsilon 8 on validation, so the benchmark does not use them.
* ``vibration``: 4 machines (= devices, 2 per organisation) of
  :mod:`models.datasets.vibration`, windows of 1024 samples at 12 kHz, a
  Dirichlet(1) class mix per machine; front end (:func:`defect_features`) =
  the envelope spectrum (:mod:`models.datasets.envelope`) in the machine's
  resonance band, read at the bearing's defect frequencies computed from its
  geometry and the window's own tachometer reading (classic bearing
  diagnosis). It has no trained parameters and uses nothing but the record
  itself and the machine's published data sheet, so it is per-record
  preprocessing on the device and costs no privacy. (The raw 128-bin
  envelope spectrum, :func:`envelope_features`, reached only 0.74 centralized
  in a pilot: classes overlap across machines and speeds without order
  tracking.)
* ``WATCH``: non-overlapping 64-sample windows (6 channels) cut from every
  recording; the TRAIN recordings (subjects 1-8) go to 2 x 4 devices by the
  same Dirichlet split over recordings (a recording stays on one device); the
  file carries no subject ids and its recordings are shuffled, so "one
  device per subject" is approximated by "one device per group of
  recordings". Test = windows of the TEST recordings (subjects 9-10).
  The privacy unit is the window: windows of one recording are correlated
  records, and the epsilon does not extend to a whole recording or subject.

Normalisation constants are data-independent (per-window z-score then mean 0
/ std 1 for PLAID and vibration; raw physical units for WATCH), so they leak
nothing.
"""

from __future__ import annotations

import logging
import math
import tempfile
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from models.manifest import Manifest, artifact_dir, full_artifact_dir, load_manifest
from models.preprocess import apply_norm

log = logging.getLogger(__name__)

MODEL = "mlp_dp"
CUT = 2
_TMP = Path(tempfile.gettempdir())


@dataclass(frozen=True, slots=True, kw_only=True)
class Task:
    """A federation: devices' records, a test split and the artifacts (see module docstring)."""

    name: str
    devices: tuple[tuple[np.ndarray, np.ndarray], ...]  # (x normalised (n, C, L), y int64)
    orgs: int
    x_test: np.ndarray
    y_test: np.ndarray
    num_classes: int
    split: Manifest
    full: Manifest
    notes: str
    extra: dict[str, object] = field(default_factory=dict)

    @property
    def n_train(self) -> int:
        return sum(len(y) for _, y in self.devices)

    def all_train(self) -> tuple[np.ndarray, np.ndarray]:
        return (np.concatenate([x for x, _ in self.devices]),
                np.concatenate([y for _, y in self.devices]))

    def majority_rate(self) -> float:
        counts = np.bincount(self.y_test, minlength=self.num_classes)
        return float(counts.max() / counts.sum())

    def validation(self, frac: float, seed: int) -> Task:
        """Carve ``frac`` of every device's records out as the test split (tuning only)."""
        rng = np.random.default_rng(seed)
        keep, vx, vy = [], [], []
        for x, y in self.devices:
            perm = rng.permutation(len(y))
            cut = max(1, round(frac * len(y)))
            keep.append((x[perm[cut:]], y[perm[cut:]]))
            vx.append(x[perm[:cut]])
            vy.append(y[perm[:cut]])
        return replace(self, name=f"{self.name}-val", devices=tuple(keep),
                       x_test=np.concatenate(vx), y_test=np.concatenate(vy))


def _norm(x: np.ndarray, m: Manifest) -> np.ndarray:
    out: np.ndarray = apply_norm(np.asarray(x, np.float32), mean=m.norm_mean, std=m.norm_std,
                                 per_window=m.norm_per_window).astype(np.float32)
    return out


def _export(name: str, input_shape: tuple[int, int], num_classes: int, *,
            per_window: bool) -> tuple[Manifest, Manifest]:
    """Build split (cut 2) and full mlp_dp artifacts for a shape (needs TensorFlow)."""
    from models.export import export_full, export_pair
    from models.spec import model_spec

    spec = model_spec(MODEL, input_shape=input_shape, num_classes=num_classes)
    root = _TMP / f"splitfed-bench-privacy-{name}"
    kw = dict(max_batch=32, seed=0, norm_mean=(0.0,) * input_shape[0],
              norm_std=(1.0,) * input_shape[0], norm_per_window=per_window, dataset=name,
              window={"length": input_shape[1]})
    split = export_pair(spec, CUT, out_dir=root / "cut2", **kw)  # type: ignore[arg-type]
    full = export_full(spec, out_dir=root / "full", **kw)  # type: ignore[arg-type]
    return split, full


def plaid_front_end(x: np.ndarray, kind: str) -> np.ndarray:
    """Public, parameter-free PLAID front ends: ``pool4`` (mean of 4 samples), ``fft``
    (log1p |rFFT| of the per-window z-scored window, bins 1..64)."""
    from models.preprocess import standardise_per_window

    z = standardise_per_window(np.asarray(x, np.float32))
    if kind == "pool4":
        out: np.ndarray = z.reshape(*z.shape[:-1], -1, 4).mean(axis=-1).astype(np.float32)
        return out
    if kind == "fft":
        amp = np.abs(np.fft.rfft(z, axis=-1))[..., 1:65]
        return np.log1p(amp).astype(np.float32)
    raise ValueError(f"unknown PLAID front end {kind!r}")


def plaid_task(data_dir: Path, *, seed: int = 0, front_end: str | None = None,
               model: str = MODEL) -> Task:
    from deploy.stack.plan import StackOptions, make_plan
    from models.data import default_window, load_windows

    win = load_windows(default_window("PLAID"), data_dir=data_dir)
    if front_end is not None:
        x_tr = plaid_front_end(win.x_train, front_end)
        x_te = plaid_front_end(win.x_test, front_end)
        split, full = _export(f"plaid-{front_end}", (1, x_tr.shape[-1]), win.num_classes,
                              per_window=True)
        win = replace(win, x_train=x_tr, x_test=x_te)
    else:
        split = load_manifest(artifact_dir(model, CUT))
        full = load_manifest(full_artifact_dir(model))
    opts = StackOptions(run_dir=_TMP, data_dir=data_dir, dataset="PLAID", orgs=2,
                        devices_per_org=2, epsilon=None, seed=seed)
    plan = make_plan(opts, train_labels=win.y_train.astype(np.int64),
                     test_labels=win.y_test.astype(np.int64), num_classes=win.num_classes)
    x_train = _norm(win.x_train, full)
    devices = tuple((x_train[list(d.indices)], win.y_train[list(d.indices)].astype(np.int64))
                    for d in plan.devices)
    name = "PLAID" if front_end is None else f"PLAID-{front_end}"
    fe = ("committed mlp_dp artifacts (raw 256-sample window)" if front_end is None else
          f"public front end {front_end!r} (plaid_front_end), mlp_dp on "
          f"{win.x_train.shape[-1]} inputs")
    return Task(name=name, devices=devices, orgs=2, x_test=_norm(win.x_test, full),
                y_test=win.y_test.astype(np.int64), num_classes=win.num_classes, split=split,
                full=full, notes="PLAID UCR split; 2 orgs x 2 devices, the demo's Dirichlet(1) "
                f"split; {fe}; test = whole TEST split (537)")


BINS = 128


def envelope_features(series: np.ndarray, *, sample_rate_hz: float,
                      band: tuple[float, float]) -> np.ndarray:
    """``log1p`` of the envelope spectrum, bins 0..BINS-1 (public, data-independent)."""
    from models.datasets.envelope import envelope_spectrum

    _, amp = envelope_spectrum(series, sample_rate_hz=sample_rate_hz, band=band)
    return np.log1p(amp[..., :BINS] * 100.0).astype(np.float32)


HARMONICS = 3
DEFECTS = ("BPFO", "BPFI", "BSF", "FTF")


def defect_features(series: np.ndarray, shaft_hz: np.ndarray, *, sample_rate_hz: float,
                    band: tuple[float, float], geometry: object) -> np.ndarray:
    """Envelope-spectrum amplitude at the bearing's defect orders (physics front end).

    For each window: the envelope spectrum in the resonance band, divided by its
    median; then the peak (+-1 bin) at harmonics 1..3 of BPFO, BPFI, 2*BSF and
    FTF and at 1x/2x shaft, computed from the bearing geometry and the window's
    own tachometer reading (``shaft_hz``), ``log1p``. No parameter is learned
    from data; shape ``(N, 1, 14)``.
    """
    from models.datasets.bearing import defect_frequencies
    from models.datasets.envelope import envelope_spectrum

    freqs, amp = envelope_spectrum(series[:, 0], sample_rate_hz=sample_rate_hz, band=band)
    amp = amp / np.maximum(np.median(amp[:, 1:], axis=1, keepdims=True), 1e-12)
    df = freqs[1] - freqs[0]
    out = np.zeros((len(series), 1, len(DEFECTS) * HARMONICS + 2), np.float32)
    for i, (row, hz) in enumerate(zip(amp, shaft_hz, strict=True)):
        f = defect_frequencies(geometry, shaft_hz=float(hz))  # type: ignore[arg-type]
        targets = [h * (2 * f[k] if k == "BSF" else f[k]) for k in DEFECTS
                   for h in range(1, HARMONICS + 1)] + [float(hz), 2 * float(hz)]
        for j, t in enumerate(targets):
            b = round(t / df)
            lo, hi = max(1, b - 1), min(len(row), b + 2)
            out[i, 0, j] = row[lo:hi].max() if lo < hi else 0.0
    return np.log1p(out).astype(np.float32)


def vibration_task(*, windows_per_machine: int = 12_500, test_per_machine: int = 1_000,
                   length: int = 1024, seed: int = 0, front_end: str = "defects") -> Task:
    from models.datasets.vibration import envelope_band, generate, random_profile

    machines = 4
    rng = np.random.default_rng(seed)
    mix = rng.dirichlet(np.ones(4), size=machines)
    profiles = [random_profile(m, seed=seed, channels=1, sample_rate_hz=12_000.0)
                for m in range(machines)]
    feats: dict[str, list[tuple[np.ndarray, np.ndarray]]] = {"train": [], "test": []}
    for m, prof in enumerate(profiles):
        band = envelope_band(prof)
        for part, count, s in (("train", windows_per_machine, seed * 1000 + 2 * m + 1),
                               ("test", test_per_machine, seed * 1000 + 2 * m + 2)):
            xs, ys = [], []
            chunk = 2_500
            left = count
            k = 0
            while left > 0:
                n = min(chunk, left)
                ds = generate(machines=1, windows_per_machine=n, length=length,
                              class_mix=mix[m:m + 1] if part == "train" else None,
                              seed=s * 100 + k, profiles=[prof])
                if front_end == "defects":
                    xs.append(defect_features(ds.series, ds.shaft_hz,
                                              sample_rate_hz=ds.sample_rate_hz, band=band,
                                              geometry=prof.geometry))
                else:
                    xs.append(envelope_features(ds.series, sample_rate_hz=ds.sample_rate_hz,
                                                band=band))
                ys.append(ds.labels.astype(np.int64))
                left -= n
                k += 1
            feats[part].append((np.concatenate(xs), np.concatenate(ys)))
    width = xs[0].shape[-1]
    split, full = _export(f"vibration-{front_end}", (1, width), 4, per_window=True)
    devices = tuple((_norm(x, full), y) for x, y in feats["train"])
    x_test = _norm(np.concatenate([x for x, _ in feats["test"]]), full)
    y_test = np.concatenate([y for _, y in feats["test"]])
    return Task(name="vibration", devices=devices, orgs=2, x_test=x_test, y_test=y_test,
                num_classes=4, split=split, full=full,
                notes=f"4 machines x {windows_per_machine} windows of {length} samples "
                f"(= {machines * windows_per_machine} records), Dirichlet(1) class mix per "
                f"machine; test {test_per_machine}/machine, uniform classes; front end "
                f"{front_end!r}: " + (
                    "envelope-spectrum peaks at harmonics 1-3 of BPFO, BPFI, 2xBSF, FTF and at "
                    "1x/2x shaft, from the bearing geometry and each window's tachometer "
                    "reading, over the band median, log1p (14 numbers)" if front_end == "defects"
                    else f"envelope spectrum in the resonance band, {BINS} bins, log1p"),
                extra={"class_mix": mix.round(3).tolist()})


def watch_task(data_dir: Path, *, window: int = 64, seed: int = 0) -> Task | None:
    """``None`` if the WATCH files are absent."""
    from models.datasets.partition import hierarchical_partition
    from models.datasets.ucr import load_split

    if not (data_dir / "WATCH_TRAIN.ts").is_file():
        return None
    train, test = load_split(data_dir, "WATCH")

    def cut(series: list[np.ndarray], labels: np.ndarray,
            which: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        xs, ys = [], []
        for i in which:
            s = np.asarray(series[i], np.float32)
            k = s.shape[1] // window
            if k:
                xs.append(s[:, :k * window].reshape(s.shape[0], k, window).transpose(1, 0, 2))
                ys.append(np.full(k, labels[i], np.int64))
        return np.concatenate(xs), np.concatenate(ys)

    y_rec = np.asarray(train.labels, np.int64)
    parts = hierarchical_partition(y_rec, orgs=2, devices_per_org=4, alpha_org=1.0,
                                   alpha_device=2.0, rng=np.random.default_rng(seed),
                                   min_per_device=2)
    split, full = _export("watch", (6, window), 7, per_window=False)
    devices = []
    for key in sorted(parts):
        x, y = cut(list(train.series), y_rec, parts[key])
        devices.append((_norm(x, full), y))
    x_test, y_test = cut(list(test.series), np.asarray(test.labels, np.int64),
                         np.arange(len(test.series)))
    return Task(name="WATCH", devices=tuple(devices), orgs=2, x_test=_norm(x_test, full),
                y_test=y_test, num_classes=7, split=split, full=full,
                notes=f"non-overlapping {window}-sample windows; TRAIN recordings (subjects "
                "1-8) to 2 orgs x 4 devices by a Dirichlet split over recordings (no subject "
                "ids in the file); test = TEST recordings (subjects 9-10); raw units")


def describe(task: Task) -> dict[str, object]:
    sizes = [len(y) for _, y in task.devices]
    return {"name": task.name, "devices": len(task.devices), "orgs": task.orgs,
            "records_per_device": sizes, "test": len(task.y_test),
            "input_shape": list(task.full.input_shape), "classes": task.num_classes,
            "majority_rate": round(task.majority_rate(), 4), "notes": task.notes,
            "min_records": min(sizes), "log10_records": round(math.log10(sum(sizes)), 2),
            **task.extra}
