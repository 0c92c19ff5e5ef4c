"""Client of a node's loopback API, for the gateway, the server and tools.

Synchronous, stdlib ``urllib`` only. Every method raises a
:class:`~protocol.errors.LedgerError` subclass on failure:
:class:`~ledger_node.errors.InvalidTransaction` (400: the node refused the
tx or the request), :class:`~ledger_node.errors.NotFoundError` (404),
:class:`~ledger_node.errors.OrderingError` (503 / node unreachable).

Retries (:mod:`service.retry`): every call is retried under the client's
:class:`~service.retry.RetryPolicy` (default: up to 6 attempts,
exponential backoff 0.1 s doubling to 2 s with equal jitter, 8 s in total)
when it failed transiently: connection refused / reset / timed out, a
response cut short, or 502/503/504/429 (``Retry-After`` honoured). Only
idempotent calls are retried: every GET, and :meth:`LedgerClient.submit`
(the txid is the hash of the bytes and the node stores a tx once per txid,
so a resubmission after a lost response cannot apply it twice). A call made
with ``idempotent=False`` gets exactly one attempt. 4xx answers and plain
500s are raised at once. Pass ``retry=NO_RETRY`` to see raw failures (the
load benchmark does).
"""

from __future__ import annotations

import http.client
import json
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from protocol.errors import (
    InvalidTransaction,
    LedgerError,
    NotFoundError,
    OrderingError,
    ProtocolError,
)
from protocol.ledger.tx import Receipt
from protocol.ledger_msgs import LedgerProof
from service.retry import DEFAULT_RETRY, RetryPolicy, TransientError, call_with_retry

__all__ = ["DeviceRecord", "LedgerClient", "ModelRecord", "SessionRecord"]

_TRANSIENT_STATUS = frozenset({429, 502, 503, 504})
_MAX_WAIT_QUERY_S = 30.0  # the node caps a long-poll at 30 s anyway


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
    def __init__(self, base_url: str, *, timeout: float = 5.0,
                 retry: RetryPolicy = DEFAULT_RETRY) -> None:
        if not base_url.startswith(("http://", "https://")):
            raise LedgerError(f"ledger API URL must be http(s)://, got {base_url!r}")
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self.retry = retry

    def _call(self, path: str, *, data: bytes | None = None, timeout: float | None = None,
              idempotent: bool | None = None) -> Any:
        """One API call under the retry policy; ``idempotent`` defaults to "is a GET"."""
        idem = data is None if idempotent is None else idempotent
        return call_with_retry(lambda: self._once(path, data, timeout or self.timeout),
                               self.retry, idempotent=idem)

    def _once(self, path: str, data: bytes | None, timeout: float) -> Any:
        # the scheme is checked in __init__ (S310: no file:// or custom schemes)
        req = urllib.request.Request(self.base_url + path, data=data,  # noqa: S310
                                     method="POST" if data is not None else "GET")
        if data is not None:
            req.add_header("Content-Type", "application/cbor")
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:  # noqa: S310
                body = resp.read()
        except urllib.error.HTTPError as exc:
            raise self._http_error(exc) from exc
        except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
            raise TransientError(OrderingError(
                f"ledger node at {self.base_url} unreachable: {exc}")) from exc
        try:
            return json.loads(body)
        except ValueError as exc:
            raise LedgerError(f"ledger node at {self.base_url} sent a non-JSON answer") from exc

    @staticmethod
    def _http_error(exc: urllib.error.HTTPError) -> Exception:
        try:
            msg = json.loads(exc.read()).get("error", exc.reason)
        except (ValueError, AttributeError, OSError, http.client.HTTPException):
            msg = str(exc.reason)
        finally:
            exc.close()
        err: LedgerError
        if exc.code == 404:
            err = NotFoundError(msg)
        elif exc.code in (400, 413):
            err = InvalidTransaction(msg)
        elif exc.code == 503:
            err = OrderingError(msg)
        else:
            err = LedgerError(f"ledger API error {exc.code}: {msg}")
        if exc.code in _TRANSIENT_STATUS:
            after = exc.headers.get("Retry-After", "") if exc.headers else ""
            return TransientError(err, float(after) if after.isdigit() else None)
        return err

    @staticmethod
    def _q(s: str) -> str:
        return urllib.parse.quote(s, safe="")

    # ----------------------------------------------------------------- txs
    def submit(self, tx: bytes) -> str:
        # idempotent by txid (see the module docstring), so it may be retried
        return str(self._call("/v1/tx", data=tx, idempotent=True)["txid"])

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
            left = min(max(deadline - time.monotonic(), 0.0), _MAX_WAIT_QUERY_S)
            q = f"height={max(height, 0)}&timeout={left:.3f}&certified={int(certified)}"
            cur = int(self._call(f"/v1/wait?{q}", timeout=left + 5)["height"])
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

    def proof(self, txid: str) -> LedgerProof:
        """The inclusion proof of ``txid``; a proof the protocol would refuse is a LedgerError."""
        d = self._call(f"/v1/proof/{self._q(txid)}")
        try:
            return LedgerProof(chain_id=d["chain_id"], height=int(d["height"]),
                               header=bytes.fromhex(d["header"]),
                               certificate=tuple((v, bytes.fromhex(s))
                                                 for v, s in d["certificate"]),
                               tx=bytes.fromhex(d["tx"]), leaf_index=int(d["leaf_index"]),
                               tree_size=int(d["tree_size"]),
                               audit_path=tuple(bytes.fromhex(p) for p in d["audit_path"]))
        except (ProtocolError, KeyError, TypeError, ValueError) as exc:
            raise LedgerError(f"ledger returned an unusable proof: {exc}") from exc

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
