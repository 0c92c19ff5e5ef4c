"""An in-process split-learning session that runs the device's own code (auditing harness).

Theory of operation
-------------------
The device side is exactly the agent's code path: :class:`agent.records.RecordStore`
draws epoch-ordered batches, :class:`agent.trainer.ClientTrainer` runs the
LiteRT client half and applies local DP, :class:`agent.privacy.accountant.Accountant`
is charged before anything leaves (and writes its audit log). The server side
is the real LiteRT server half (:class:`models.runtime.ServerRuntime`, Adam on
the received rows and labels), standing in for ``server/`` without MQTT.

Everything that would cross the wire is sealed with the device's (or a
stand-in server's) Ed25519 key and written to ``capture_dir`` as one
``.cose`` file per envelope, the same format :mod:`audit.capture` reads from
a real MQTT capture, so the scoring code never sees harness internals.

Ground truth that an attacker would NOT have (which record ids formed each
batch, the raw windows) is returned separately in :class:`SessionTruth`,
used only to measure attack success.

``trainer_factory`` lets a test substitute a deliberately broken trainer (to
check that the audit catches it); the product has no such switch.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import nacl.signing
import numpy as np
import numpy.typing as npt

from agent.config import PrivacySection
from agent.privacy.accountant import Accountant
from agent.records import RecordStore
from agent.trainer import ClientTrainer
from models.manifest import Manifest, list_artifacts
from models.runtime import ClientRuntime, ServerRuntime
from protocol.keys import generate_signing_key
from protocol.messages import seal
from protocol.training import ActivationBatch, ClientWeights, GradientBatch

__all__ = ["SessionResult", "SessionTruth", "default_trainer", "find_manifest", "run_session"]

TrainerFactory = Callable[[ClientRuntime, PrivacySection, np.random.Generator], ClientTrainer]


def find_manifest(model_id: str = "mlp_dp", cut: int = 1) -> Manifest:
    for m in list_artifacts():
        if m.model_id == model_id and m.cut == cut:
            return m
    raise LookupError(f"no model artifact {model_id} cut {cut}")


@dataclass(slots=True)
class SessionTruth:
    """What only the device knows: record ids of each released batch, in seq order."""

    batch_ids: list[tuple[int, ...]] = field(default_factory=list)
    initial_client_weights: tuple[npt.NDArray[np.float32], ...] = ()


@dataclass(slots=True)
class SessionResult:
    device: str
    capture_dir: Path
    verify_key: nacl.signing.VerifyKey
    reported_epsilon: float
    truth: SessionTruth
    client_weights: tuple[npt.NDArray[np.float32], ...]
    server_weights: tuple[npt.NDArray[np.float32], ...]


def default_trainer(rt: ClientRuntime, privacy: PrivacySection,
                     rng: np.random.Generator) -> ClientTrainer:
    return ClientTrainer(rt, privacy, rng=rng, wire_dtype="float16")


def run_session(records: Sequence[tuple[int, npt.NDArray[np.float32], int]], *,
                privacy: PrivacySection, manifest: Manifest, capture_dir: Path,
                state_dir: Path, epochs: int = 1, batch_size: int = 16,
                client_lr: float = 0.05, server_lr: float = 0.01, seed: int = 0,
                device: str = "dev1", session: str = "audit",
                trainer_factory: TrainerFactory = default_trainer) -> SessionResult:
    """Train one device for ``epochs`` over ``records`` ``(id, window, label)``; capture it."""
    capture_dir.mkdir(parents=True, exist_ok=True)
    state_dir.mkdir(parents=True, exist_ok=True)
    rt = ClientRuntime.from_manifest(manifest)
    srv = ServerRuntime.from_manifest(manifest)
    rng = np.random.default_rng(seed)
    trainer = trainer_factory(rt, privacy, np.random.default_rng(rng.integers(2**63)))
    store = RecordStore(capacity=len(records) + 1, rng=np.random.default_rng(rng.integers(2**63)))
    for rid, x, y in records:
        store.add(rid, x, y)
    acc = Accountant(epsilon_budget=1e9, delta=privacy.delta,
                     state_path=state_dir / "privacy.json", adjacency=privacy.adjacency)
    dev_key, srv_key = generate_signing_key(), generate_signing_key()
    truth = SessionTruth(initial_client_weights=rt.get_weights())
    batch = min(batch_size, manifest.max_batch)
    steps = epochs * -(-len(records) // batch)
    seq, n_files = 0, 0

    def write(blob: bytes) -> None:
        nonlocal n_files
        (capture_dir / f"{n_files:07d}.cose").write_bytes(blob)
        n_files += 1

    try:
        store_epoch_limit = epochs
        for step in range(steps * 2):
            b = store.next_batch(batch)
            if b is None or store.epoch > store_epoch_limit:
                break
            prep = trainer.prepare(b)
            eps = acc.spend(prep.events) if prep.events else acc.epsilon
            seq += 1
            assert prep.labels is not None
            write(seal(ActivationBatch(session=session, round=0, step=step, device=device,
                                       seq=seq, model_hash=manifest.client_sha256, dp=prep.dp,
                                       activations=prep.activations, labels=prep.labels,
                                       epsilon_spent=eps if privacy.enabled else 0.0),
                       signing_key=dev_key, kid=device))
            truth.batch_ids.append(prep.ids)
            loss, grad = srv.train(prep.activations.astype(np.float32),
                                   prep.labels.astype(np.int32), lr=server_lr)
            write(seal(GradientBatch(session=session, round=0, step=step, device=device, seq=seq,
                                     grad=grad.astype(np.float32), loss=float(loss)),
                       signing_key=srv_key, kid="server"))
            trainer.apply_gradient(prep.x, grad, ids=prep.ids, lr=client_lr, charge=acc.spend)
        if trainer.uploads_weights:
            seq += 1
            write(seal(ClientWeights(session=session, round=0, device=device, seq=seq,
                                     model_hash=manifest.client_sha256,
                                     num_samples=max(1, trainer.samples_trained),
                                     weights=rt.get_weights(),
                                     weights_dp="dp_sgd" if privacy.enabled else "unprotected",
                                     epsilon_spent=acc.epsilon if privacy.enabled else 0.0),
                       signing_key=dev_key, kid=device))
        reported = acc.epsilon if privacy.enabled else float("inf")
    finally:
        acc.close()
    return SessionResult(device=device, capture_dir=capture_dir,
                         verify_key=dev_key.verify_key, reported_epsilon=reported, truth=truth,
                         client_weights=rt.get_weights(), server_weights=srv.get_weights())
