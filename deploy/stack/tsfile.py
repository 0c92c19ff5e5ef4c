"""Write UCR/UEA ``.ts`` files (the stack gives each evaluator its own held-out part)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt

__all__ = ["write_ts"]


def write_ts(path: Path, *, name: str, series: Sequence[npt.NDArray[np.floating]],
             labels: Sequence[str], class_names: Sequence[str]) -> None:
    """``series[i]`` is (channels, length_i); ``labels[i]`` one of ``class_names``."""
    dims = {int(np.asarray(s).shape[0]) for s in series}
    lengths = {int(np.asarray(s).shape[1]) for s in series}
    if len(dims) != 1 or len(series) != len(labels) or not series:
        raise ValueError("need one label per series and the same channel count everywhere")
    head = [f"@problemName {name}", "@timeStamps false", "@missing false",
            f"@univariate {'true' if dims == {1} else 'false'}",
            f"@dimensions {dims.pop()}", f"@equalLength {'true' if len(lengths) == 1 else 'false'}"]
    if len(lengths) == 1:
        head.append(f"@seriesLength {lengths.pop()}")
    head += [f"@classLabel true {' '.join(class_names)}", "@data"]
    rows = []
    for s, label in zip(series, labels, strict=True):
        chans = [",".join(repr(float(v)) for v in ch) for ch in np.asarray(s, dtype=np.float64)]
        rows.append(":".join([*chans, label]))
    path.write_text("\n".join(head + rows) + "\n", encoding="utf-8")
