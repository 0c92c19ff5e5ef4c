"""The full node's engine: executes ordered blocks, signs, collects certificates.

Theory of operation: an orderer (``solo`` or ``etcd``) decides *which* tx
bytes form block ``h`` and its time; it calls :meth:`LedgerNode.commit`. The
node executes them deterministically on its state, writes block + txs + state
changes in one SQLite transaction, then signs the header with every validator
key it holds and records the signature. Signatures from other validators
arrive through :meth:`add_signature`; each is checked against the validator
set, stored, and counted. A header is *certified* once signatures of a quorum
of validators match this node's own header hash. A second valid signature by
one validator over a different header at the same height is returned as
evidence (the caller submits an ``evidence`` tx); a conflicting header never
counts toward this node's certificate.

The node never signs two different headers at one height: it signs only
headers it computed itself, once per height, recorded in ``sigs`` before the
signature leaves the process.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nacl.signing

from ledger_node.errors import CertificateError, ChainIntegrityError, LedgerError, NotFoundError
from ledger_node.executor import ExecutedBlock, execute_block
from ledger_node.state import State
from ledger_node.storage import Storage
from protocol.ledger.block import (
    Header,
    decode_header,
    quorum,
    sign_header,
    verify_certificate,
    verify_header_signature,
)
from protocol.ledger.genesis import Genesis
from protocol.ledger.tx import Receipt
from protocol.ledger_msgs import LedgerProof
from protocol.merkle import audit_path, merkle_root

__all__ = ["DB_NAME", "Evidence", "LedgerNode"]

log = logging.getLogger(__name__)
DB_NAME = "ledger.sqlite"


@dataclass(frozen=True, slots=True, kw_only=True)
class Evidence:
    validator: str
    height: int
    header_a: bytes
    sig_a: bytes
    header_b: bytes
    sig_b: bytes

    def body(self) -> dict[str, Any]:
        return {"validator": self.validator, "height": self.height, "header_a": self.header_a,
                "sig_a": self.sig_a, "header_b": self.header_b, "sig_b": self.sig_b}


class LedgerNode:
    """One node's chain: storage + in-memory state + held validator keys."""

    def __init__(self, data_dir: str | Path, *,
                 validator_keys: Mapping[str, nacl.signing.SigningKey] | None = None) -> None:
        self.data_dir = Path(data_dir)
        db = self.data_dir / DB_NAME
        if not db.exists():
            raise LedgerError(f"{db} does not exist; run `splitfed-ledger init` first")
        self.storage = Storage(db)
        raw = self.storage.get_meta("genesis")
        if raw is None:
            raise LedgerError(f"{db} has no genesis; it was not initialised")
        self.genesis = Genesis.from_json_obj(json.loads(raw))
        self.chain_id = self.genesis.chain_id
        self.state = State(dict(self.storage.state_items()))
        self._keys = dict(validator_keys or {})
        self._cond = threading.Condition()
        self._height, self._head_hash, self.log_rev = self.storage.head()
        self._headers: dict[int, bytes] = {}
        self._certified: set[int] = {0}
        self._certified_height = 0
        for vid in self._keys:
            if self.validators().get(vid) != bytes(self._keys[vid].verify_key).hex():
                raise LedgerError(f"held key for {vid!r} is not that validator's key")
        self._refresh_certified()
        self._sign_missing()

    @staticmethod
    def init(data_dir: str | Path, genesis: Genesis) -> None:
        """Create the database with block 0 (genesis state, no txs, no certificate)."""
        db = Path(data_dir) / DB_NAME
        if db.exists():
            raise LedgerError(f"{db} already exists; refusing to re-initialise")
        st = Storage(db)
        try:
            st.set_meta("genesis", json.dumps(genesis.to_json_obj(), sort_keys=True).encode())
            block = genesis_block(genesis)
            st.commit_block(block)
        finally:
            st.close()

    def close(self) -> None:
        self.storage.close()

    # ------------------------------------------------------------------ reads
    @property
    def height(self) -> int:
        return self._height

    @property
    def head_hash(self) -> bytes:
        return self._head_hash

    @property
    def certified_height(self) -> int:
        return self._certified_height

    @property
    def held_validators(self) -> list[str]:
        return sorted(self._keys)

    def validators(self) -> dict[str, str]:
        return dict(self.state.get("validators") or {})

    def header_bytes(self, height: int) -> bytes:
        if height in self._headers:
            return self._headers[height]
        hb = self.storage.header(height)
        if hb is None:
            raise NotFoundError(f"no block at height {height}")
        if height <= self._height:
            self._headers[height] = hb
        return hb

    def certificate(self, height: int) -> list[tuple[str, bytes]]:
        """Signatures over this node's header at ``height`` by current validators."""
        hb = self.header_bytes(height)
        h = decode_header(hb).hash()
        vals = self.validators()
        return [(v, s) for v, hh, _, s in self.storage.sigs(height) if hh == h and v in vals]

    def is_certified(self, height: int) -> bool:
        return height in self._certified

    def receipt(self, txid: str) -> Receipt | None:
        loc = self.storage.tx_location(txid)
        if loc is None or loc[0] > self._height:  # stored but its state not applied yet
            return None
        return Receipt(txid=txid, height=loc[0], valid=loc[2], reason=loc[3])

    def proof(self, txid: str) -> LedgerProof:
        """The inclusion proof of ``txid`` with the certificate gathered so far.

        :class:`NotFoundError` while the tx is in no applied block, or while its block has
        no signature yet (a proof needs at least one; a light client needs a quorum).
        """
        loc = self.storage.tx_location(txid)
        if loc is None or loc[0] > self._height:
            raise NotFoundError(f"tx {txid} is not in any block")
        height, idx = loc[0], loc[1]
        certificate = tuple(self.certificate(height))
        if not certificate:
            raise NotFoundError(f"block {height} of tx {txid} has no signature yet")
        txs = [row[2] for row in self.storage.block_txs(height)]
        return LedgerProof(chain_id=self.chain_id, height=height,
                           header=self.header_bytes(height), certificate=certificate,
                           tx=txs[idx], leaf_index=idx, tree_size=len(txs),
                           audit_path=tuple(audit_path(txs, idx)))

    def wait_height(self, height: int, timeout: float) -> int:
        with self._cond:
            self._cond.wait_for(lambda: self._height >= height, timeout=timeout)
            return self._height

    def wait_certified(self, height: int, timeout: float) -> int:
        with self._cond:
            self._cond.wait_for(lambda: self._certified_height >= height, timeout=timeout)
            return self._certified_height

    # ----------------------------------------------------------------- writes
    def execute(self, txs: Sequence[bytes], *, time_ms: int, proposer: str) -> ExecutedBlock:
        prev = decode_header(self.header_bytes(self._height))
        return execute_block(self.state, txs, chain_id=self.chain_id, height=self._height + 1,
                             prev_hash=self._head_hash, time_ms=max(time_ms, prev.time_ms),
                             proposer=proposer)

    def commit(self, txs: Sequence[bytes], *, time_ms: int, proposer: str, log_rev: int = 0,
               drop_pending: Sequence[str] = ()) -> tuple[ExecutedBlock, list[tuple[str, bytes]]]:
        """Execute and persist the next block; returns it and this node's signatures."""
        block = self.execute(txs, time_ms=time_ms, proposer=proposer)
        self.storage.commit_block(block, log_rev=log_rev, drop_pending=drop_pending)
        self.state.apply(block.changes)
        hb = block.header.to_bytes()
        with self._cond:
            self._height = block.header.height
            self._head_hash = block.header.hash()
            self.log_rev = log_rev
            self._headers[self._height] = hb
            self._cond.notify_all()
        sigs = []
        signed = {v for v, hh, _, _ in self.storage.sigs(self._height) if hh != self._head_hash}
        for vid, key in sorted(self._keys.items()):
            if vid in signed:  # never sign a second header at one height
                log.error("refusing to sign block %d for %s: signed another header there",
                          self._height, vid)
                continue
            sig = sign_header(hb, key)
            self.storage.add_sig(self._height, vid, self._head_hash, hb, sig)
            sigs.append((vid, sig))
        self._refresh_certified()
        invalid = len(block.header.invalid)
        log.info("block %d committed: %d txs (%d invalid)", self._height, len(txs), invalid)
        return block, sigs

    def commit_certified(self, txs: Sequence[bytes], header: bytes,
                         certificate: Sequence[tuple[str, bytes]], *,
                         log_rev: int = 0) -> ExecutedBlock:
        """Adopt a block received from a peer: re-execute, compare, check the certificate.

        The block is committed only if re-executing ``txs`` on this node's state
        gives exactly ``header`` and ``certificate`` holds a quorum of valid
        validator signatures over it; otherwise :class:`ChainIntegrityError` /
        :class:`CertificateError` and nothing is written. The node then signs it
        too (it computed the same header itself).
        """
        hdr = decode_header(header)
        if hdr.height != self._height + 1:
            raise ChainIntegrityError(f"peer block {hdr.height} does not follow {self._height}")
        block = self.execute(txs, time_ms=hdr.time_ms, proposer=hdr.proposer)
        if block.header.to_bytes() != header:
            raise ChainIntegrityError(f"peer block {hdr.height} does not re-execute to its header")
        verify_certificate(header, certificate, validators=self.validators())
        committed, _ = self.commit(txs, time_ms=hdr.time_ms, proposer=hdr.proposer,
                                   log_rev=log_rev)
        for vid, sig in certificate:
            self.add_signature(vid, header, sig)
        return committed

    def add_signature(self, validator: str, header: bytes, sig: bytes) -> Evidence | None:
        """Check and store a validator's header signature.

        Returns :class:`Evidence` if the validator already signed a different
        header at that height. Raises :class:`CertificateError` if the signer is
        unknown or the signature is bad.
        """
        vals = self.validators()
        if validator not in vals:
            raise CertificateError(f"{validator!r} is not a validator")
        verify_header_signature(header, sig, vals[validator])
        hdr = decode_header(header)
        if hdr.chain_id != self.chain_id:
            raise CertificateError("signature is over a header of another chain")
        hh = hdr.hash()
        others = [r for r in self.storage.sigs(hdr.height) if r[0] == validator and r[1] != hh]
        self.storage.add_sig(hdr.height, validator, hh, header, sig)
        if hdr.height <= self._height:
            self._refresh_certified()
        if others:
            _, _, other_header, other_sig = others[0]
            a, b = sorted([(header, sig), (other_header, other_sig)])
            log.warning("validator %s signed two headers at height %d", validator, hdr.height)
            return Evidence(validator=validator, height=hdr.height, header_a=a[0], sig_a=a[1],
                            header_b=b[0], sig_b=b[1])
        return None

    def _sign_missing(self) -> None:
        """After a crash between a block commit and its signature: sign it now.

        Safe: the header is this node's own, persisted one; a height where a held
        validator already signed a *different* header is skipped.
        """
        for h in range(self._certified_height + 1, self._height + 1):
            hb = self.header_bytes(h)
            hh = decode_header(hb).hash()
            rows = self.storage.sigs(h)
            for vid, key in sorted(self._keys.items()):
                if not any(v == vid for v, _, _, _ in rows):
                    self.storage.add_sig(h, vid, hh, hb, sign_header(hb, key))
        self._refresh_certified()

    def _refresh_certified(self) -> None:
        need = quorum(len(self.validators()))
        h = self._certified_height + 1
        newly = False
        while h <= self._height:
            if h not in self._certified:
                if len(self.certificate(h)) < need:
                    break
                self._certified.add(h)
                newly = True
            h += 1
        if newly:
            with self._cond:
                self._certified_height = h - 1
                self._cond.notify_all()

    def latest_header(self) -> Header:
        return decode_header(self.header_bytes(self._height))


def genesis_block(genesis: Genesis) -> ExecutedBlock:
    """Block 0: no txs, state = genesis state, prev_hash = genesis digest."""
    init = genesis.initial_state()
    hdr = Header(chain_id=genesis.chain_id, height=0, prev_hash=genesis.digest(),
                 tx_root=merkle_root([]), state_root=State(init).root(),
                 time_ms=genesis.time_ms, proposer="genesis", tx_count=0)
    return ExecutedBlock(header=hdr, txs=(), results=(), changes=init)
