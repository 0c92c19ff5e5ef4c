"""ModelGate: a device loads only a client half the validator quorum finalised on the ledger.

The proofs are real: a ledger node on a temp SQLite file commits session,
proposal, votes and finalisation blocks, signing each header with the
genesis validators' keys, and ``LedgerNode.proof`` returns the certified
header + RFC 6962 audit path a gateway would attach to the announcement.
The attacks are those of issue 6: a model half whose hash was never
finalised, a proof from a chain certified by other keys, replays of old
versions, announcements for another session or another client artifact.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import nacl.signing
import numpy as np
import pytest

from agent.model_sync import ModelGate, ModelRejectedError
from ledger_node.node import LedgerNode
from protocol.errors import ModelError, SplitfedError
from protocol.ledger.block import sign_header
from protocol.ledger.tx import decode_tx
from protocol.messages import LedgerProof, ModelAnnouncement, weights_digest
from tests.unit.ledger_node.conftest import (
    H1,
    H2,
    ORGS,
    Consortium,
    make_consortium,
    session_body,
)

CLIENT = H1  # the client artifact hash of session s1 (session_body)


def _weights(seed: int) -> tuple[np.ndarray, ...]:
    rng = np.random.default_rng(seed)
    return (rng.normal(size=(4, 3)).astype(np.float32), rng.normal(size=(3,)).astype(np.float32))


W1, W2, W3 = _weights(1), _weights(2), _weights(3)


def _prop(version: int, weights: tuple[np.ndarray, ...]) -> dict[str, object]:
    return {"session_id": "s1", "version": version, "weights_sha256": weights_digest(weights),
            "client_sha256": CLIENT, "server_sha256": H2}


@dataclasses.dataclass
class Chain:
    node: LedgerNode
    c: Consortium
    t: int

    def commit(self, txs: list[bytes]) -> list[str]:
        self.t += 1
        self.node.commit(txs, time_ms=self.t, proposer="org1")
        return [decode_tx(tx).txid for tx in txs]

    def finalise(self, version: int, weights: tuple[np.ndarray, ...]) -> str:
        body = _prop(version, weights)
        self.commit([self.c.tx("server", "model_propose", body)]
                     + [self.c.tx(f"{o}/validator", "model_vote",
                                  {"session_id": "s1", "version": version, "accept": True})
                        for o in ORGS])
        return self.commit([self.c.tx("server", "model_finalise", body)])[0]

    def propose_only(self, version: int, weights: tuple[np.ndarray, ...]) -> str:
        return self.commit([self.c.tx("server", "model_propose", _prop(version, weights))])[0]

    def proof(self, txid: str) -> LedgerProof:
        return _wire(self.node.proof(txid))


def _wire(p: LedgerProof) -> LedgerProof:
    return LedgerProof(chain_id=p.chain_id, height=p.height, header=p.header,
                       certificate=p.certificate, tx=p.tx, leaf_index=p.leaf_index,
                       tree_size=p.tree_size, audit_path=p.audit_path)


@contextmanager
def _chain(path: Path, c: Consortium) -> Iterator[Chain]:
    LedgerNode.init(path, c.genesis)
    node = LedgerNode(path, validator_keys=c.validator_keys())
    try:
        ch = Chain(node=node, c=c, t=c.genesis.time_ms)
        ch.commit([c.tx("server", "session_create", session_body())])
        yield ch
    finally:
        node.close()


@pytest.fixture
def chain(tmp_path: Path) -> Iterator[Chain]:
    with _chain(tmp_path / "ledger", make_consortium()) as ch:
        yield ch


def _ann(version: int, weights: tuple[np.ndarray, ...], proof: LedgerProof | None, *,
         session: str = "s1", client: str = CLIENT) -> ModelAnnouncement:
    return ModelAnnouncement(session=session, version=version, model_id="cnn1d", cut=1,
                             client_sha256=client, client_artifact=None, weights=weights,
                             weights_sha256=weights_digest(weights), proof=proof)


def _gate(chain: Chain, *, version: int = 0, require_proof: bool = True) -> ModelGate:
    # the device trusts the validators of the genesis file it was provisioned with
    genesis_validators = {o.id: o.validator for o in chain.c.genesis.orgs if o.validator}
    return ModelGate(session="s1", client_sha256=CLIENT, chain_id=chain.c.genesis.chain_id,
                     validators=genesis_validators, require_proof=require_proof,
                     version=version)


def _same(a: tuple[np.ndarray, ...], b: tuple[np.ndarray, ...]) -> bool:
    return len(a) == len(b) and all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))


def _rejected(gate: ModelGate, ann: ModelAnnouncement, match: str) -> None:
    before = gate.rejected
    with pytest.raises(ModelRejectedError, match=match) as info:
        gate.check(ann)
    assert isinstance(info.value, SplitfedError)
    assert gate.rejected == before + 1


def test_finalised_version_is_loaded(chain: Chain) -> None:
    proof = chain.proof(chain.finalise(1, W1))
    gate = _gate(chain)
    got = gate.check(_ann(1, W1, proof))
    assert _same(got, W1)
    assert gate.rejected == 0
    gate.loaded(1)
    assert gate.version == 1
    # and the next finalised version after it
    assert _same(gate.check(_ann(2, W2, chain.proof(chain.finalise(2, W2)))), W2)


def test_proposal_that_was_never_finalised_is_refused(chain: Chain) -> None:
    chain.finalise(1, W1)
    prop_txid = chain.propose_only(2, W2)  # votes never came: no model_finalise for v2
    gate = _gate(chain, version=1)
    _rejected(gate, _ann(2, W2, chain.proof(prop_txid)), "not a model_finalise")


def test_weights_other_than_the_finalised_hash_are_refused(chain: Chain) -> None:
    proof = chain.proof(chain.finalise(1, W1))
    gate = _gate(chain)
    # a gateway swaps in other weights (consistently hashed) under the real proof of v1
    _rejected(gate, _ann(1, W3, proof), "weights_sha256 differs")
    assert gate.version == 0


def test_proof_of_an_older_version_cannot_carry_a_newer_one(chain: Chain) -> None:
    proof_v1 = chain.proof(chain.finalise(1, W1))
    gate = _gate(chain)
    _rejected(gate, _ann(5, W1, proof_v1), "finalises version 1, not 5")


def test_proof_certified_by_non_validator_keys_is_refused(chain: Chain, tmp_path: Path) -> None:
    # a rogue consortium (same chain id, own keys) really finalises the weights on its chain
    rogue = make_consortium()
    with _chain(tmp_path / "rogue", rogue) as rogue_chain:
        rogue_proof = rogue_chain.proof(rogue_chain.finalise(1, W3))
    assert rogue.genesis.chain_id == chain.c.genesis.chain_id
    gate = _gate(chain)
    _rejected(gate, _ann(1, W3, rogue_proof), "ledger proof does not verify")


def test_real_header_resigned_by_impostor_keys_is_refused(chain: Chain) -> None:
    real = chain.proof(chain.finalise(1, W1))
    impostors = {o: nacl.signing.SigningKey.generate() for o in ORGS}
    forged = dataclasses.replace(real, certificate=tuple(
        (o, sign_header(real.header, k)) for o, k in impostors.items()))
    gate = _gate(chain)
    _rejected(gate, _ann(1, W1, forged), "ledger proof does not verify")
    # too few genuine signatures is refused too (quorum of the genesis validators)
    partial = dataclasses.replace(real, certificate=real.certificate[:1])
    _rejected(gate, _ann(1, W1, partial), "ledger proof does not verify")
    assert gate.rejected == 2


def test_tampered_audit_path_is_refused(chain: Chain) -> None:
    chain.finalise(1, W1)
    # a block with several txs so the finalisation has a non-empty audit path
    body = _prop(2, W2)
    chain.commit([chain.c.tx("server", "model_propose", body)]
                 + [chain.c.tx(f"{o}/validator", "model_vote",
                               {"session_id": "s1", "version": 2, "accept": True})
                    for o in ORGS])
    fin, _ = chain.commit([chain.c.tx("server", "model_finalise", body), chain.c.register(
        "org1", "d9")])
    real = chain.proof(fin)
    assert real.audit_path
    bad = dataclasses.replace(real, audit_path=(bytes(32), *real.audit_path[1:]))
    gate = _gate(chain, version=1)
    _rejected(gate, _ann(2, W2, bad), "ledger proof does not verify")
    assert _same(gate.check(_ann(2, W2, real)), W2)


@pytest.mark.parametrize("running", [1, 2], ids=["equal", "older"])
def test_replayed_old_or_equal_version_is_refused(chain: Chain, running: int) -> None:
    proof = chain.proof(chain.finalise(1, W1))
    gate = _gate(chain, version=running)
    _rejected(gate, _ann(1, W1, proof), "not newer")


def test_other_session_is_refused(chain: Chain) -> None:
    proof = chain.proof(chain.finalise(1, W1))
    gate = _gate(chain)
    _rejected(gate, _ann(1, W1, proof, session="s2"), "session 's2'")


def test_other_client_artifact_is_refused(chain: Chain) -> None:
    proof = chain.proof(chain.finalise(1, W1))
    gate = _gate(chain)
    _rejected(gate, _ann(1, W1, proof, client="44" * 32), "client artifact differs")


def test_missing_proof_is_refused_while_required(chain: Chain) -> None:
    gate = _gate(chain)
    _rejected(gate, _ann(1, W1, None), "no ledger proof")
    relaxed = _gate(chain, require_proof=False)  # bench set-ups: check 4 switched off
    assert _same(relaxed.check(_ann(1, W1, None)), W1)
    assert relaxed.rejected == 0


def test_proof_for_another_chain_id_is_refused(chain: Chain) -> None:
    real = chain.proof(chain.finalise(1, W1))
    gate = _gate(chain)
    _rejected(gate, _ann(1, W1, dataclasses.replace(real, chain_id="other-chain")),
              "proof is for chain 'other-chain'")


def test_announcement_without_weights_is_refused(chain: Chain) -> None:
    proof = chain.proof(chain.finalise(1, W1))
    ann = dataclasses.replace(_ann(1, W1, proof), weights=None)
    gate = _gate(chain)
    _rejected(gate, ann, "no weights")


def test_gate_requiring_proof_needs_validators() -> None:
    with pytest.raises(ModelError, match="genesis validators"):
        ModelGate(session="s1", client_sha256=CLIENT, chain_id=None, validators=None)


def test_rejected_counter_counts_every_refusal_and_nothing_else(chain: Chain) -> None:
    proof = chain.proof(chain.finalise(1, W1))
    gate = _gate(chain)
    for ann in (_ann(1, W1, proof, session="x"), _ann(1, W3, proof), _ann(1, W1, None)):
        with pytest.raises(ModelRejectedError):
            gate.check(ann)
    assert gate.rejected == 3
    gate.check(_ann(1, W1, proof))
    assert gate.rejected == 3
