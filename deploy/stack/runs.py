"""The ``runs/`` directory of the checkout: one timestamped directory per demo run, pruned.

``splitfed demo`` without ``--run-dir`` writes ``runs/<YYYYmmdd-HHMMSS>/`` (logs,
databases, keys, summary, plot: tens of MB each). Before a new run starts,
:func:`prune_runs` deletes the oldest of those directories so that at most
``keep`` remain including the new one (``--keep-runs``, default
:data:`DEFAULT_KEEP`; 0 keeps everything). Only directories whose name is a
run timestamp are ever considered: anything else in ``runs/`` is left alone,
and an explicit ``--run-dir`` is never pruned. :func:`select_prunable` is the
pure rule.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Iterable
from pathlib import Path

__all__ = ["DEFAULT_KEEP", "RUN_NAME", "prune_runs", "select_prunable"]

DEFAULT_KEEP = 5
RUN_NAME = re.compile(r"^\d{8}-\d{6}(-\d+)?$")


def select_prunable(names: Iterable[str], *, keep: int, new: str | None = None) -> list[str]:
    """The run names to delete, oldest first, so ``keep`` remain counting ``new``."""
    if keep <= 0:
        return []
    runs = sorted(n for n in set(names) if RUN_NAME.match(n) and n != new)
    room = keep - (1 if new is not None else 0)
    return runs[:max(0, len(runs) - room)]


def prune_runs(root: Path, *, keep: int, new: str | None = None) -> list[Path]:
    """Delete old run directories under ``root``; returns what was deleted."""
    if not root.is_dir():
        return []
    names = [p.name for p in root.iterdir() if p.is_dir() and not p.is_symlink()]
    gone = []
    for name in select_prunable(names, keep=keep, new=new):
        shutil.rmtree(root / name, ignore_errors=True)
        gone.append(root / name)
    return gone
