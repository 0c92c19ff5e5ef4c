"""Which model versions a device agrees to load (pure; the light-client check).

A gateway publishes the consortium's current client half, retained, on
``splitfed/v1/{org}/model`` as a :class:`~protocol.messages.ModelAnnouncement`.
The device loads it only if all of these hold:

1. it is for the device's session and newer than the version it runs;
2. it is for the client artifact the device runs (same ``client.tflite``
   sha256: this version swaps weights, not architectures);
3. the attached weights hash to the announced ``weights_sha256`` (checked
   when the message is decoded);
4. the attached ledger proof shows a ``model_finalise`` transaction for
   exactly that session, version, weights hash and artifact hash, included in
   a block whose header carries signatures of >= 2f+1 of the validator
   organisations listed in the genesis file the device was provisioned with
   (:func:`protocol.ledger.lightclient.verify_model_finalisation`).

So a compromised gateway or broker can withhold updates but cannot make a
device load weights the validator quorum did not finalise. Not covered: a
validator set changed on chain after provisioning (the device keeps trusting
the genesis set until it is re-provisioned), and rollback to an older but
finalised version is refused only relative to what this device has loaded.
``require_proof = false`` (config) disables check 4 for bench set-ups and
says so in the device's state.
"""

from __future__ import annotations

from collections.abc import Mapping

import nacl.signing
import numpy as np

from protocol.errors import ModelError, SplitfedError
from protocol.ledger.lightclient import verify_model_finalisation
from protocol.messages import ModelAnnouncement

__all__ = ["ModelGate", "ModelRejectedError"]


class ModelRejectedError(ModelError):
    """An announced model version must not be loaded; the reason says why."""


def _reject(reason: str) -> ModelRejectedError:
    return ModelRejectedError(reason)


class ModelGate:
    """Checks announcements against the running artifact and the ledger's validators."""

    def __init__(self, *, session: str | None, client_sha256: str, chain_id: str | None,
                 validators: Mapping[str, nacl.signing.VerifyKey | str] | None,
                 require_proof: bool = True, version: int = 0) -> None:
        if require_proof and (validators is None or chain_id is None):
            raise ModelError("a proof-checking model gate needs the genesis validators")
        self.session = session
        self.client_sha256 = client_sha256
        self.chain_id = chain_id
        self.validators = validators
        self.require_proof = require_proof
        self.version = version
        self.rejected = 0

    def check(self, ann: ModelAnnouncement) -> tuple[np.ndarray, ...]:
        """The weights to load, or :class:`ModelRejectedError` naming the failed check."""
        try:
            return self._check(ann)
        except ModelRejectedError:
            self.rejected += 1
            raise

    def _check(self, ann: ModelAnnouncement) -> tuple[np.ndarray, ...]:
        if self.session is not None and ann.session != self.session:
            raise _reject(f"announcement is for session {ann.session!r}")
        if ann.version <= self.version:
            raise _reject(f"version {ann.version} is not newer than {self.version}")
        if ann.client_sha256 != self.client_sha256:
            raise _reject("announced client artifact differs from the one this device runs")
        if ann.weights is None:
            raise _reject("announcement carries no weights")
        if self.require_proof:
            if ann.proof is None:
                raise _reject("announcement has no ledger proof of finalisation")
            assert self.validators is not None and self.chain_id is not None
            p = ann.proof
            if p.chain_id != self.chain_id:
                raise _reject(f"proof is for chain {p.chain_id!r}, not {self.chain_id!r}")
            try:
                fin = verify_model_finalisation(
                    chain_id=p.chain_id, height=p.height, header=p.header,
                    certificate=p.certificate, tx=p.tx, leaf_index=p.leaf_index,
                    tree_size=p.tree_size, audit_path=p.audit_path, validators=self.validators,
                    expected_weights_sha256=ann.weights_sha256,
                    expected_client_sha256=ann.client_sha256, session_id=ann.session)
            except SplitfedError as exc:
                raise _reject(f"ledger proof does not verify: {exc}") from exc
            if fin.version != ann.version:
                raise _reject(f"proof finalises version {fin.version}, not {ann.version}")
        return ann.weights

    def loaded(self, version: int) -> None:
        self.version = version
