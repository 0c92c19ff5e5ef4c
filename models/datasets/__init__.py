"""Datasets: UCR/UEA ``.ts`` loader, windowing, synthetic bearing vibration, non-IID splits.

Modules (pure unless noted):

- :mod:`~models.datasets.ucr` ``.ts`` parser and the file loader (I/O adapter)
- :mod:`~models.datasets.windows` fixed-length windows, sliding windows, NaN filling
- :mod:`~models.datasets.bearing` bearing kinematics (defect frequencies)
- :mod:`~models.datasets.rotor` signal model of one machine
- :mod:`~models.datasets.vibration` fleets of machines, windows and sensor streams
- :mod:`~models.datasets.envelope` envelope spectrum (bearing-diagnosis feature)
- :mod:`~models.datasets.partition` Dirichlet non-IID partitioning
"""

from __future__ import annotations

from models.datasets.errors import DatasetError, DatasetFormatError
from models.datasets.partition import (
    describe_partition,
    dirichlet_partition,
    hierarchical_partition,
    partition_skew,
)
from models.datasets.ucr import TsDataset, load_split, load_ts
from models.datasets.vibration import (
    CLASSES,
    BearingGeometry,
    MachineProfile,
    VibrationDataset,
    VibrationStream,
    defect_frequencies,
    generate,
    make_vibration_split,
)
from models.datasets.windows import WindowSpec, fill_missing, sliding_windows, to_fixed_length

__all__ = [
    "CLASSES",
    "BearingGeometry",
    "DatasetError",
    "DatasetFormatError",
    "MachineProfile",
    "TsDataset",
    "VibrationDataset",
    "VibrationStream",
    "WindowSpec",
    "defect_frequencies",
    "describe_partition",
    "dirichlet_partition",
    "fill_missing",
    "generate",
    "hierarchical_partition",
    "load_split",
    "load_ts",
    "make_vibration_split",
    "partition_skew",
    "sliding_windows",
    "to_fixed_length",
]
