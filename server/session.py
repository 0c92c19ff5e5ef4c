"""The ``session_create`` tx body from the server config and the model manifest (pure)."""

from __future__ import annotations

from typing import Any

from models.manifest import Manifest
from protocol.errors import ConfigError
from server.config import SessionSpec

__all__ = ["session_body"]


def session_body(session_id: str, spec: SessionSpec, manifest: Manifest) -> dict[str, Any]:
    """Body of ``session_create``: model hashes, DP policy, rounds, groups, SFL mode."""
    if (manifest.model_id, manifest.cut) != (spec.model_id, spec.cut):
        raise ConfigError(
            f"manifest is {manifest.model_id}/cut{manifest.cut}, "
            f"the session asks for {spec.model_id}/cut{spec.cut}"
        )
    body: dict[str, Any] = {
        "session_id": session_id,
        "model_id": spec.model_id,
        "client_sha256": manifest.client_sha256,
        "server_sha256": manifest.server_sha256,
        "dp": {
            "min_noise_multiplier": spec.min_noise_multiplier,
            "clip": spec.clip,
            "max_epsilon": spec.max_epsilon,
            "delta": spec.delta,
        },
        "rounds": spec.rounds,
        "groups": {g: list(orgs) for g, orgs in spec.groups.items()},
        "sfl_mode": spec.sfl_mode,
        "extra": {"cut": spec.cut, **dict(spec.extra)},
    }
    if spec.vote_quorum is not None:
        body["vote_quorum"] = spec.vote_quorum
    return body
