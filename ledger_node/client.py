"""Client of a node's loopback API, for the gateway, the server and tools.

Synchronous, stdlib ``urllib`` only. Every method raises a
:class:`~protocol.errors.LedgerError` subclass on failure:
:class:`~ledger_node.errors.InvalidTransaction` (400: the node refused the
tx), :class:`~ledger_node.errors.NotFoundError` (404),
:class:`~ledger_node.errors.OrderingError` (503 / node unreachable).
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from ledger_node.errors import InvalidTransaction, LedgerError, NotFoundError, OrderingError
from ledger_node.lightclient import ProofBundle
from ledger_node.node import Receipt

__all__ = ["DeviceRecord", "LedgerClient", "ModelRecord", "Receipt", "SessionRecord"]


@dataclass(frozen=True, slots=True, kw_only=True)
class DeviceRecord:
    org: str
    device: str
    pubkey_hex: str
    registered_height: int
    revoked: bool
    revoked_height: int | None
    capabilities: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True, kw_only=True)
class SessionRecord:
    session_id: str
    model_id: str
    client_sha256: str
    server_sha256: str
    dp: Mapping[str, float]  # min_noise_multiplier, clip, max_epsilon, delta
    rounds: int
    groups: Mapping[str, list[str]]
    sfl_mode: str
    vote_quorum: int
    created_height: int
    extra: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True, kw_only=True)
class ModelRecord:
    session_id: str
    version: int
    weights_sha256: str
    client_sha256: str
    server_sha256: str
    accepted_by: tuple[str, ...]
    height: int
    txid: str


def _model(d: Mapping[str, Any]) -> ModelRecord:
    return ModelRecord(session_id=d["session_id"], version=int(d["version"]),
                       weights_sha256=d["weights_sha256"], client_sha256=d["client_sha256"],
                       server_sha256=d["server_sha256"], accepted_by=tuple(d["accepted_by"]),
                       height=int(d["height"]), txid=d["txid"])


class LedgerClient:
    def __init__(self, base_url: str, *, timeout: float = 5.0) -> None:
        if not base_url.startswith(("http://", "https://")):
            raise LedgerError(f"ledger API URL must be http(s)://, got {base_url!r}")
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout

    def _call(self, path: str, *, data: bytes | None = None,
              timeout: float | None = None) -> Any:
        # the scheme is checked in __init__ (S310: no file:// or custom schemes)
        req = urllib.request.Request(self.base_url + path, data=data,  # noqa: S310
                                     method="POST" if data is not None else "GET")
        if data is not None:
            req.add_header("Content-Type", "application/cbor")
        try:
            with urllib.request.urlopen(req, timeout=timeout or self.timeout) as resp:  # noqa: S310
                return json.loads(resp.read())
        except urllib.error.HTTPError as exc:
            try:
                msg = json.loads(exc.read()).get("error", exc.reason)
            except (ValueError, AttributeError):
                msg = str(exc.reason)
            finally:
                exc.close()
            if exc.code == 404:
                raise NotFoundError(msg) from exc
            if exc.code == 400:
                raise InvalidTransaction(msg) from exc
            if exc.code == 503:
                raise OrderingError(msg) from exc
            raise LedgerError(f"ledger API error {exc.code}: {msg}") from exc
        except (urllib.error.URLError, OSError, ValueError) as exc:
            raise OrderingError(f"ledger node at {self.base_url} unreachable: {exc}") from exc

    @staticmethod
    def _q(s: str) -> str:
        return urllib.parse.quote(s, safe="")

    # ----------------------------------------------------------------- txs
    def submit(self, tx: bytes) -> str:
        return str(self._call("/v1/tx", data=tx)["txid"])

    def receipt(self, txid: str) -> Receipt | None:
        try:
            d = self._call(f"/v1/receipt/{self._q(txid)}")
        except NotFoundError:
            return None
        return Receipt(txid=d["txid"], height=int(d["height"]), valid=bool(d["valid"]),
                       reason=d["reason"])

    def wait_for(self, txid: str, *, timeout: float) -> Receipt:
        """Poll until ``txid`` is in a block; :class:`OrderingError` on timeout."""
        deadline = time.monotonic() + timeout
        while True:
            r = self.receipt(txid)
            if r is not None:
                return r
            left = deadline - time.monotonic()
            if left <= 0:
                raise OrderingError(f"tx {txid} not committed within {timeout} s")
            self.wait_height(self.height() + 1, timeout=min(left, 1.0))

    def submit_and_wait(self, tx: bytes, *, timeout: float = 10.0) -> Receipt:
        return self.wait_for(self.submit(tx), timeout=timeout)

    # --------------------------------------------------------------- chain
    def height(self) -> int:
        return int(self._call("/v1/height")["height"])

    def certified_height(self) -> int:
        return int(self._call("/v1/height")["certified_height"])

    def wait_height(self, height: int, *, timeout: float, certified: bool = False) -> int:
        """Long-poll until the (certified) height reaches ``height``; returns it."""
        deadline = time.monotonic() + timeout
        cur = -1
        while True:
            left = deadline - time.monotonic()
            q = f"height={height}&timeout={max(left, 0):.3f}&certified={int(certified)}"
            cur = int(self._call(f"/v1/wait?{q}", timeout=min(left, 30) + 5)["height"])
            if cur >= height or time.monotonic() >= deadline:
                return cur

    def block(self, height: int) -> dict[str, Any]:
        return dict(self._call(f"/v1/block/{int(height)}"))

    def subscribe(self, *, after: int | None = None, certified: bool = False,
                  poll_timeout: float = 10.0) -> Iterator[dict[str, Any]]:
        """Yield each new block (as :meth:`block`) in height order, forever."""
        h = self.height() if after is None else after
        while True:
            top = self.wait_height(h + 1, timeout=poll_timeout, certified=certified)
            while h < top:
                h += 1
                yield self.block(h)

    def proof(self, txid: str) -> ProofBundle:
        d = self._call(f"/v1/proof/{self._q(txid)}")
        return ProofBundle(chain_id=d["chain_id"], height=int(d["height"]),
                           header=bytes.fromhex(d["header"]),
                           certificate=tuple((v, bytes.fromhex(s)) for v, s in d["certificate"]),
                           tx=bytes.fromhex(d["tx"]), leaf_index=int(d["leaf_index"]),
                           tree_size=int(d["tree_size"]),
                           audit_path=tuple(bytes.fromhex(p) for p in d["audit_path"]))

    # --------------------------------------------------------------- state
    def state(self, key: str) -> Any:
        try:
            return self._call("/v1/state/" + "/".join(self._q(p) for p in key.split("/")))["value"]
        except NotFoundError:
            return None

    def validators(self) -> dict[str, str]:
        return dict(self._call("/v1/validators"))

    def device(self, org: str, device: str) -> DeviceRecord | None:
        try:
            d = self._call(f"/v1/device/{self._q(org)}/{self._q(device)}")
        except NotFoundError:
            return None
        return self._device(d)

    @staticmethod
    def _device(d: Mapping[str, Any]) -> DeviceRecord:
        return DeviceRecord(org=d["org"], device=d["device"], pubkey_hex=d["pubkey_hex"],
                            registered_height=int(d["registered_height"]),
                            revoked=bool(d["revoked"]), revoked_height=d["revoked_height"],
                            capabilities=d.get("capabilities", {}))

    def devices(self, org: str) -> list[DeviceRecord]:
        return [self._device(d) for d in self._call(f"/v1/devices/{self._q(org)}")]

    def session(self, session_id: str) -> SessionRecord | None:
        try:
            d = self._call(f"/v1/session/{self._q(session_id)}")
        except NotFoundError:
            return None
        return SessionRecord(session_id=d["session_id"], model_id=d["model_id"],
                             client_sha256=d["client_sha256"], server_sha256=d["server_sha256"],
                             dp=d["dp"], rounds=int(d["rounds"]), groups=d["groups"],
                             sfl_mode=d["sfl_mode"], vote_quorum=int(d["vote_quorum"]),
                             created_height=int(d["created_height"]), extra=d.get("extra", {}))

    def model(self, session_id: str) -> ModelRecord | None:
        """The latest finalised model version of the session, or None."""
        d = self._call(f"/v1/model/{self._q(session_id)}")["latest"]
        return None if d is None else _model(d)

    def models(self, session_id: str) -> list[ModelRecord]:
        """Every finalised version, oldest first."""
        return [_model(d) for d in self._call(f"/v1/model/{self._q(session_id)}")["finalised"]]

    def proposals(self, session_id: str) -> list[dict[str, Any]]:
        """Every proposal with its votes (``votes: {org: {accept, metric, ...}}``)."""
        return list(self._call(f"/v1/model/{self._q(session_id)}")["proposals"])

    def device_spend(self, session_id: str, device: str) -> float:
        """Sum of epsilon recorded for ``device`` (``"org/device"``) in the session."""
        org, _, dev = device.partition("/")
        if not dev:
            raise NotFoundError("device must be given as 'org/device'")
        d = self._call(f"/v1/spend/{self._q(session_id)}/{self._q(org)}/{self._q(dev)}")
        return float(d["epsilon"])
