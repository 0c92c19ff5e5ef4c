"""Ledger adapters for the gateway: registry, session policy, records, proofs.

Wraps :class:`service.ledger_client.LedgerClient` (loopback HTTP) behind the
gateway's roles. Ledger failures stay :class:`protocol.errors.LedgerError`;
the admission pipeline turns them into a counted ``registry_unavailable``
rejection, the app retries submissions on the next poll.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import nacl.signing

from gateway.policy import ModelSpec, SessionPolicy
from models.manifest import Manifest
from protocol.endorse import gateway_identity
from protocol.ledger.tx import make_tx
from service.ledger_client import LedgerClient, SessionRecord

__all__ = ["policy_from_session", "submit_record"]

log = logging.getLogger(__name__)


def policy_from_session(s: SessionRecord, m: Manifest) -> SessionPolicy:
    """Admission policy from the ledger's session record and the model manifest."""
    extra: Mapping[str, Any] = s.extra
    labels_public = bool(extra.get("labels_public", False))
    privacy_mode = str(extra.get("privacy_mode", "sl-frozen"))
    # labels in clear only where the session declared them public ("none": inference)
    label_modes = extra.get("label_modes", ["plain", "randomized_response", "none"]
                            if labels_public else ["randomized_response", "none"])
    spec = ModelSpec(
        activation_shape=tuple(m.activation_shape),
        num_classes=m.num_classes,
        max_batch=m.max_batch,
        client_weight_shapes=tuple(m.client_weight_shapes),
        cut=m.cut,
    )
    return SessionPolicy(
        session=s.session_id,
        models={s.client_sha256: spec},
        min_noise_multiplier=float(s.dp["min_noise_multiplier"]),
        max_epsilon=float(s.dp["max_epsilon"]),
        max_clip_norm=float(s.dp["clip"]),
        label_modes=frozenset(str(x) for x in label_modes),
        max_label_epsilon=None
        if extra.get("max_label_epsilon") is None
        else float(extra["max_label_epsilon"]),
        require_dp_weights=bool(extra.get("require_dp_weights", False))
        or privacy_mode == "sl-dpsgd",
        privacy_mode=privacy_mode,
    )


def submit_record(
    client: LedgerClient,
    body: Mapping[str, Any],
    *,
    org: str,
    signing_key: nacl.signing.SigningKey,
    chain_id: str,
) -> str:
    """Submit a ``round_record`` as ``<org>/gateway``; devices revoked since are listed apart.

    The contract refuses a record naming a revoked device, so such devices
    move to ``revoked_devices`` (their spend stays visible to auditors in
    the record body, but is not added to the on-chain spend table).
    """
    rec = dict(body)
    devices = dict(rec.get("devices", {}))
    revoked = {}
    for dev in list(devices):
        d = client.device(org, dev)
        if d is None or d.revoked:
            revoked[dev] = devices.pop(dev)
    rec["devices"] = devices
    if revoked:
        rec["revoked_devices"] = revoked
    tx = make_tx(
        "round_record",
        rec,
        signing_key=signing_key,
        submitter=gateway_identity(org),
        chain_id=chain_id,
    )
    return client.submit(tx)
