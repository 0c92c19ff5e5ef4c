"""The server's model halves on disk (adapter: atomic file writes).

After each finalisation the server writes ``finalised.npz`` (version, the
client half's ``weights_digest``, both halves) to a temporary file, fsyncs
it and renames it into place, so a crash leaves the old or the new file.
On start the file is used only if the ledger's latest finalised version and
weights digest match it; otherwise the server starts from the artifact's
initial weights (and says so in the log).

Before it submits ``model_propose`` the server likewise writes the
candidate's halves to ``candidate.npz`` (with version and round). A server
restarted while its proposal is open on the ledger uses the file if version
and client-half digest match the ledger's proposal (it *adopts* the
proposal); otherwise the proposal cannot be completed and the server's next
proposal supersedes it (see ``docs/server.md``).
"""

from __future__ import annotations

import io
import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from protocol.errors import SpoolError
from protocol.messages import weights_digest
from service.files import atomic_write

__all__ = ["load_candidate", "load_finalised", "save_candidate", "save_finalised"]

log = logging.getLogger(__name__)
FILE = "finalised.npz"
CANDIDATE = "candidate.npz"
Halves = tuple[tuple[np.ndarray, ...], tuple[np.ndarray, ...]]


def save_finalised(
    state_dir: Path, version: int, client: Sequence[np.ndarray], server: Sequence[np.ndarray]
) -> Path:
    """Write both halves of ``version`` atomically; returns the file path."""
    return _save(state_dir / FILE, version, -1, client, server)


def save_candidate(
    state_dir: Path,
    version: int,
    round_no: int,
    client: Sequence[np.ndarray],
    server: Sequence[np.ndarray],
) -> Path:
    """Write the halves of the proposal about to be submitted, atomically."""
    return _save(state_dir / CANDIDATE, version, round_no, client, server)


def load_candidate(
    state_dir: Path, *, version: int, weights_sha256: str
) -> tuple[int, tuple[np.ndarray, ...], tuple[np.ndarray, ...]] | None:
    """``(round, client, server)`` if the saved candidate is exactly that proposal."""
    got = _load(state_dir / CANDIDATE, version=version, weights_sha256=weights_sha256)
    if got is None:
        return None
    rnd, client, server = got
    return rnd, client, server


def _save(
    target: Path,
    version: int,
    round_no: int,
    client: Sequence[np.ndarray],
    server: Sequence[np.ndarray],
) -> Path:
    state_dir = target.parent
    arrays = {f"c{i}": np.asarray(w) for i, w in enumerate(client)}
    arrays.update({f"s{i}": np.asarray(w) for i, w in enumerate(server)})
    arrays["version"] = np.array(version, np.int64)
    arrays["round"] = np.array(round_no, np.int64)
    buf = io.BytesIO()
    np.savez(buf, **arrays)  # type: ignore[arg-type]
    try:
        state_dir.mkdir(parents=True, exist_ok=True)
        atomic_write(target, buf.getvalue())
    except OSError as exc:
        raise SpoolError(f"cannot write {target}: {exc}") from exc
    return target


def load_finalised(state_dir: Path, *, version: int, weights_sha256: str) -> Halves | None:
    """Both halves if the saved file is exactly that ledger version, else ``None``."""
    got = _load(state_dir / FILE, version=version, weights_sha256=weights_sha256)
    return None if got is None else (got[1], got[2])


def _load(
    path: Path, *, version: int, weights_sha256: str
) -> tuple[int, tuple[np.ndarray, ...], tuple[np.ndarray, ...]] | None:
    if not path.exists():
        return None
    try:
        with np.load(path, allow_pickle=False) as z:
            saved = int(z["version"])
            rnd = int(z["round"]) if "round" in z.files else -1
            client = tuple(
                np.array(z[f"c{i}"]) for i in range(sum(k.startswith("c") for k in z.files))
            )
            server = tuple(
                np.array(z[f"s{i}"]) for i in range(sum(k.startswith("s") for k in z.files))
            )
    except (OSError, ValueError, KeyError) as exc:
        log.warning("ignoring unreadable %s: %s", path, exc)
        return None
    if saved != version or weights_digest(client) != weights_sha256:
        log.warning(
            "%s holds version %d, the ledger's is %d (or the digest differs); not used",
            path,
            saved,
            version,
        )
        return None
    return rnd, client, server
