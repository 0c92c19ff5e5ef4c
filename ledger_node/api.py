"""Loopback HTTP+JSON API of a full node (adapter).

Endpoints (bytes are lowercase hex in JSON; a tx is POSTed as raw CBOR)::

    POST /v1/tx                     body = tx bytes       -> 202 {"txid"} | 400 | 413 | 503
    GET  /v1/receipt/<txid>         {"txid","height","valid","reason"} | 404
    GET  /v1/height                 {"height","certified_height","head_hash"}
    GET  /v1/wait?height=H&timeout=T&certified=0|1
                                    long poll until height >= H (subscribe) | 503 if busy
    GET  /v1/block/<h>              header, txs with validity, certificate
    GET  /v1/proof/<txid>           LedgerProof fields
    GET  /v1/state/<key>            {"key","value"} | 404
    GET  /v1/device/<org>/<device>  GET /v1/devices/<org>   GET /v1/session/<id>
    GET  /v1/model/<session>        {"latest","finalised","proposals"}
    GET  /v1/spend/<session>/<org>/<device>   GET /v1/validators
    GET  /v1/stats                  {"rejected": {reason: n}, "long_polls_active": n}

Every error is ``{"error": "..."}`` with a 4xx/5xx status. Binds to
127.0.0.1 only: the API is for the gateway and server on the same host and
has no authentication of its own (every write is a signed tx that the
contracts authorise; reads are public to consortium members anyway).

Limits (see :mod:`ledger_node.httpd` for the server and its sizing,
:mod:`ledger_node.params` for the parsing): every query and path number is
checked (finite, non-negative, bounded; unknown or repeated parameters
refused) -> 400; a POST body must have a valid length of at most
``MAX_BODY_BYTES`` -> 400/413 before it is read; ``/v1/wait`` holds a worker
for at most ``max_wait_s`` (30 s) and at most ``max_long_polls`` of them at
once, a further one gets 503 with ``Retry-After: 1`` at once. Each refusal is
counted by reason (``/v1/stats``); refusals of malformed HTTP framing are
made by waitress's parser before the app runs and are not counted.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import urllib.parse
from collections import Counter
from collections.abc import Iterable
from typing import Any

from ledger_node.errors import (
    BadRequestError,
    BodyTooLargeError,
    InvalidTransaction,
    LedgerError,
    NotFoundError,
    OrderingError,
)
from ledger_node.httpd import WsgiServer
from ledger_node.limits import HttpSettings
from ledger_node.node import LedgerNode
from ledger_node.ordering import Orderer
from ledger_node.params import (
    DecimalParam,
    FlagParam,
    IntParam,
    QuerySpec,
    body_length,
    parse_query,
    path_int,
)
from protocol.ledger.block import decode_header
from protocol.ledger_msgs import MAX_TX_BYTES

__all__ = ["MAX_BODY_BYTES", "HttpSettings", "LedgerApi", "jsonable"]

log = logging.getLogger(__name__)
MAX_BODY_BYTES = MAX_TX_BYTES + 1024
_MAX_QUERY_FIELDS = 8
_WAIT_QUERY: QuerySpec = {"height": IntParam(0), "timeout": DecimalParam(10.0, hi=3600.0),
                          "certified": FlagParam()}
_NO_QUERY: QuerySpec = {}
_REASONS = {200: "OK", 202: "Accepted", 400: "Bad Request", 404: "Not Found",
            405: "Method Not Allowed", 413: "Content Too Large", 500: "Internal Server Error",
            503: "Service Unavailable"}


def jsonable(v: Any) -> Any:
    if isinstance(v, bytes):
        return v.hex()
    if isinstance(v, dict):
        return {str(k): jsonable(x) for k, x in v.items()}
    if isinstance(v, list | tuple):
        return [jsonable(x) for x in v]
    return v


class _HttpError(Exception):
    def __init__(self, status: int, message: str, *, reason: str = "bad_request",
                 retry_after: int | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason
        self.retry_after = retry_after


class LedgerApi:
    """HTTP server around a node and its orderer; ``start()`` / ``stop()``.

    The socket is bound (and listening) when the constructor returns, so
    :attr:`url` is valid before :meth:`start`.
    """

    def __init__(self, node: LedgerNode, orderer: Orderer, *, host: str = "127.0.0.1",
                 port: int = 0, settings: HttpSettings | None = None) -> None:
        self.node = node
        self.orderer = orderer
        self.settings = settings or HttpSettings()
        self._stopping = threading.Event()
        self._polls = threading.BoundedSemaphore(self.settings.max_long_polls)
        self._lock = threading.Lock()
        self._rejected: Counter[str] = Counter()
        self._polls_active = 0
        self._server = WsgiServer(self.wsgi, host=host, port=port, settings=self.settings,
                                  max_body_bytes=MAX_BODY_BYTES)

    @property
    def url(self) -> str:
        host, port = self._server.address
        return f"http://{host}:{port}"

    def start(self) -> None:
        self._server.start()

    def stop(self) -> None:
        self._stopping.set()  # long-polls return within 0.2 s
        self._server.stop()

    def stats(self) -> dict[str, Any]:
        with self._lock:
            return {"rejected": dict(self._rejected), "long_polls_active": self._polls_active}

    # ---------------------------------------------------------------- WSGI
    def wsgi(self, environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        headers: list[tuple[str, str]] = []
        try:
            status, payload = self._handle(environ)
        except _HttpError as exc:
            status, payload = exc.status, {"error": str(exc)}
            self._count(exc.reason)
            if exc.retry_after is not None:
                headers.append(("Retry-After", str(exc.retry_after)))
        except BodyTooLargeError as exc:
            status, payload = 413, {"error": str(exc)}
            self._count("body_too_large")
        except BadRequestError as exc:
            status, payload = 400, {"error": f"bad request: {exc}"}
            self._count("bad_query" if exc.name not in ("body", "Content-Length")
                        else "bad_body")
        except NotFoundError as exc:
            status, payload = 404, {"error": str(exc)}
        except InvalidTransaction as exc:
            status, payload = 400, {"error": str(exc)}
            self._count("invalid_tx")
        except OrderingError as exc:
            status, payload = 503, {"error": str(exc)}
        except LedgerError as exc:
            status, payload = 500, {"error": str(exc)}
        except Exception as exc:  # a bug must cost one request, not the connection
            log.exception("API request %s failed", environ.get("REQUEST_URI"))
            status, payload = 500, {"error": f"internal error: {type(exc).__name__}"}
        data = json.dumps(jsonable(payload)).encode()
        start_response(f"{status} {_REASONS.get(status, 'Error')}",
                       [("Content-Type", "application/json"),
                        ("Content-Length", str(len(data))), *headers])
        return [data]

    def _count(self, reason: str) -> None:
        with self._lock:
            self._rejected[reason] += 1

    def _handle(self, environ: dict[str, Any]) -> tuple[int, Any]:
        method = str(environ.get("REQUEST_METHOD", "GET"))
        raw = str(environ.get("REQUEST_URI") or "")
        if not raw:  # a server without REQUEST_URI: rebuild it from the decoded parts
            raw = urllib.parse.quote(str(environ.get("PATH_INFO", "")))
            if environ.get("QUERY_STRING"):
                raw += "?" + str(environ["QUERY_STRING"])
        url = urllib.parse.urlsplit(raw)
        parts = [urllib.parse.unquote(p) for p in url.path.split("/") if p]
        try:
            pairs = urllib.parse.parse_qsl(url.query, keep_blank_values=True,
                                           max_num_fields=_MAX_QUERY_FIELDS)
        except ValueError as exc:
            raise BadRequestError("query", f"malformed query string: {exc}") from exc
        body = b""
        if method == "POST":
            n = body_length(environ.get("CONTENT_LENGTH"), MAX_BODY_BYTES)
            body = environ["wsgi.input"].read(n)
            if len(body) != n:
                raise BadRequestError("body", f"got {len(body)} of {n} bytes")
        elif method not in ("GET", "HEAD"):
            raise _HttpError(405, f"method {method[:20]} not allowed")
        return self.route(method, parts, pairs, body)

    # ------------------------------------------------------------- routing
    def route(self, method: str, parts: list[str], query: list[tuple[str, str]],
              body: bytes) -> tuple[int, Any]:
        if len(parts) < 2 or parts[0] != "v1":
            raise _HttpError(404, "unknown path", reason="unknown_path")
        name, args = parts[1], parts[2:]
        n = self.node
        if name == "wait" and not args and method != "POST":
            q = parse_query(query, _WAIT_QUERY)
            return 200, {"height": self._wait(int(q["height"]), float(q["timeout"]),
                                              bool(q["certified"]))}
        parse_query(query, _NO_QUERY)
        if method == "POST":
            if name == "tx" and not args:
                return 202, {"txid": self.orderer.submit(body)}
            raise _HttpError(404, "unknown path", reason="unknown_path")
        if name == "height" and not args:
            return 200, {"height": n.height, "certified_height": n.certified_height,
                         "head_hash": n.head_hash}
        if name == "stats" and not args:
            return 200, self.stats()
        if name == "receipt" and len(args) == 1:
            r = n.receipt(args[0])
            if r is None:
                raise NotFoundError(f"tx {args[0]} is not in any block")
            return 200, {"txid": r.txid, "height": r.height, "valid": r.valid,
                         "reason": r.reason}
        if name == "block" and len(args) == 1:
            return 200, self.block_json(path_int("height", args[0]))
        if name == "proof" and len(args) == 1:
            p = n.proof(args[0])
            return 200, {"chain_id": p.chain_id, "height": p.height, "header": p.header,
                         "certificate": [list(c) for c in p.certificate], "tx": p.tx,
                         "leaf_index": p.leaf_index, "tree_size": p.tree_size,
                         "audit_path": list(p.audit_path)}
        if name == "validators" and not args:
            return 200, n.validators()
        return 200, self._state_query(name, args)

    def _state_query(self, name: str, args: list[str]) -> Any:
        st = self.node.state
        if name == "state" and args:
            key = "/".join(args)
            if key not in st:
                raise NotFoundError(f"no state key {key!r}")
            return {"key": key, "value": st.get(key)}
        if name == "device" and len(args) == 2:
            rec = st.get(f"device/{args[0]}/{args[1]}")
            if rec is None:
                raise NotFoundError(f"device {args[0]}/{args[1]} is not registered")
            return {"org": args[0], "device": args[1], **rec}
        if name == "devices" and len(args) == 1:
            prefix = f"device/{args[0]}/"
            return [{"org": args[0], "device": k[len(prefix):], **st.get(k)}
                    for k in st.keys_with_prefix(prefix)]
        if name == "session" and len(args) == 1:
            rec = st.get(f"session/{args[0]}")
            if rec is None:
                raise NotFoundError(f"session {args[0]} does not exist")
            return rec
        if name == "model" and len(args) == 1:
            sid = args[0]
            fin = sorted((st.get(k) for k in st.keys_with_prefix(f"models/{sid}/")),
                         key=lambda r: int(r["version"]))
            props = sorted((st.get(k) for k in st.keys_with_prefix(f"proposal/{sid}/")),
                           key=lambda r: int(r["version"]))
            return {"latest": st.get(f"model/{sid}"), "finalised": fin, "proposals": props}
        if name == "spend" and len(args) == 3:
            return {"epsilon": float(st.get(f"spend/{args[0]}/{args[1]}/{args[2]}") or 0.0)}
        raise _HttpError(404, "unknown path", reason="unknown_path")

    def block_json(self, height: int) -> dict[str, Any]:
        n = self.node
        hb = n.header_bytes(height)
        h = decode_header(hb)
        return {
            "height": h.height, "hash": h.hash(), "header": hb, "chain_id": h.chain_id,
            "prev_hash": h.prev_hash, "tx_root": h.tx_root, "state_root": h.state_root,
            "time_ms": h.time_ms, "proposer": h.proposer, "tx_count": h.tx_count,
            "txs": [{"index": i, "txid": t, "kind": k, "valid": v, "reason": r, "data": d}
                    for i, t, d, k, v, r in n.storage.block_txs(height)],
            "certificate": [list(c) for c in n.certificate(height)],
            "certified": n.is_certified(height),
            "log_rev": n.storage.log_rev(height),
        }

    def _wait(self, height: int, timeout: float, certified: bool) -> int:
        """Long-poll: hold this worker until the height is reached or the capped timeout."""
        if not self._polls.acquire(blocking=False):
            raise _HttpError(503, f"too many long-polls in progress "
                             f"({self.settings.max_long_polls}); retry shortly",
                             reason="long_poll_busy", retry_after=1)
        with self._lock:
            self._polls_active += 1
        try:
            deadline = time.monotonic() + min(timeout, self.settings.max_wait_s)
            while True:
                cur = self.node.certified_height if certified else self.node.height
                left = deadline - time.monotonic()
                if cur >= height or left <= 0 or self._stopping.is_set():
                    return cur
                if certified:
                    self.node.wait_certified(height, min(left, 0.2))
                else:
                    self.node.wait_height(height, min(left, 0.2))
        finally:
            with self._lock:
                self._polls_active -= 1
            self._polls.release()
