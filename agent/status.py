"""The agent's status file: what ``splitfed-agent status`` and operators read.

The running agent rewrites ``<state_dir>/status.json`` (atomically: temp file
+ rename) every few seconds. It holds counters and states only: never keys,
signatures, activations or sensor readings.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from protocol.errors import SplitfedError
from service.files import atomic_write

__all__ = ["read_status", "write_status"]


def write_status(path: Path, status: dict[str, Any]) -> None:
    text = json.dumps(status, sort_keys=True, indent=1) + "\n"
    # rewritten every few seconds and only the newest matters: atomic, not fsynced
    atomic_write(path, text.encode("utf-8"), mode=0o644, durable=False)


def read_status(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise SplitfedError(f"no status at {path}: has the agent run with this state dir?") from exc
    except (OSError, ValueError) as exc:
        raise SplitfedError(f"cannot read status {path}: {exc}") from exc
    if not isinstance(data, dict):
        raise SplitfedError(f"status file {path} is not a JSON object")
    return data
