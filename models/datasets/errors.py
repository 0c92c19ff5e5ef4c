"""Errors of the dataset package.

::

    SplitfedError                      (protocol.errors)
    └── DatasetError                   dataset missing, unreadable or misused
        └── DatasetFormatError         a ``.ts`` file is malformed; carries path and line
"""

from __future__ import annotations

from pathlib import Path

from protocol.errors import SplitfedError


class DatasetError(SplitfedError):
    """A dataset cannot be loaded, generated or partitioned as asked."""


class DatasetFormatError(DatasetError):
    """A ``.ts`` file violates the format.

    ``path`` is the file (or the source name given to the parser) and ``line``
    the 1-based line number where the problem was found. ``str(error)`` reads
    ``PLAID_TRAIN.ts:42: expected 1 dimension, got 2``.
    """

    def __init__(self, path: str | Path, line: int, reason: str) -> None:
        self.path = str(path)
        self.line = line
        self.reason = reason
        super().__init__(f"{Path(self.path).name}:{line}: {reason}")
