"""Loopback HTTP+JSON API of a full node (adapter).

Endpoints (bytes are lowercase hex in JSON; a tx is POSTed as raw CBOR)::

    POST /v1/tx                     body = tx bytes       -> 202 {"txid"} | 400 | 503
    GET  /v1/receipt/<txid>         {"txid","height","valid","reason"} | 404
    GET  /v1/height                 {"height","certified_height","head_hash"}
    GET  /v1/wait?height=H&timeout=T  long poll until height >= H (subscribe)
    GET  /v1/block/<h>              header, txs with validity, certificate
    GET  /v1/proof/<txid>           LedgerProof fields
    GET  /v1/state/<key>            {"key","value"} | 404
    GET  /v1/device/<org>/<device>  GET /v1/devices/<org>   GET /v1/session/<id>
    GET  /v1/model/<session>        {"latest","finalised","proposals"}
    GET  /v1/spend/<session>/<org>/<device>   GET /v1/validators

Binds to 127.0.0.1 only: the API is for the gateway and server on the same
host and has no authentication of its own (every write is a signed tx that
the contracts authorise; reads are public to consortium members anyway).
"""

from __future__ import annotations

import json
import logging
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from ledger_node.block import decode_header
from ledger_node.codec import MAX_TX_BYTES
from ledger_node.errors import InvalidTransaction, LedgerError, NotFoundError, OrderingError
from ledger_node.node import LedgerNode
from ledger_node.ordering import Orderer

__all__ = ["LedgerApi", "jsonable"]

log = logging.getLogger(__name__)
_MAX_WAIT_S = 30.0


def jsonable(v: Any) -> Any:
    if isinstance(v, bytes):
        return v.hex()
    if isinstance(v, dict):
        return {str(k): jsonable(x) for k, x in v.items()}
    if isinstance(v, list | tuple):
        return [jsonable(x) for x in v]
    return v


class _HttpError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class LedgerApi:
    """HTTP server around a node and its orderer; ``start()`` / ``stop()``."""

    def __init__(self, node: LedgerNode, orderer: Orderer, *, host: str = "127.0.0.1",
                 port: int = 0) -> None:
        self.node = node
        self.orderer = orderer
        self._stopping = threading.Event()
        api = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                log.debug("api %s", format % args)

            def do_GET(self) -> None:
                self._dispatch("GET")

            def do_POST(self) -> None:
                self._dispatch("POST")

            def _dispatch(self, method: str) -> None:
                url = urllib.parse.urlsplit(self.path)
                parts = [urllib.parse.unquote(p) for p in url.path.split("/") if p]
                query = dict(urllib.parse.parse_qsl(url.query))
                body = b""
                if method == "POST":
                    n = int(self.headers.get("Content-Length", "0"))
                    if n > MAX_TX_BYTES + 1024:
                        self._send(413, {"error": "body too large"})
                        return
                    body = self.rfile.read(n)
                try:
                    status, payload = api.route(method, parts, query, body)
                except _HttpError as exc:
                    status, payload = exc.status, {"error": str(exc)}
                except NotFoundError as exc:
                    status, payload = 404, {"error": str(exc)}
                except InvalidTransaction as exc:
                    status, payload = 400, {"error": str(exc)}
                except OrderingError as exc:
                    status, payload = 503, {"error": str(exc)}
                except LedgerError as exc:
                    status, payload = 500, {"error": str(exc)}
                except ValueError as exc:  # e.g. a height that is not a number
                    status, payload = 400, {"error": f"bad request: {exc}"}
                self._send(status, payload)

            def _send(self, status: int, payload: Any) -> None:
                data = json.dumps(jsonable(payload)).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self._server = ThreadingHTTPServer((host, port), Handler)
        self._server.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> None:
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        kwargs={"poll_interval": 0.1}, name="ledger-api",
                                        daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None

    # ------------------------------------------------------------- routing
    def route(self, method: str, parts: list[str], query: dict[str, str],
              body: bytes) -> tuple[int, Any]:
        if len(parts) < 2 or parts[0] != "v1":
            raise _HttpError(404, "unknown path")
        name, args = parts[1], parts[2:]
        n = self.node
        if method == "POST":
            if name == "tx" and not args:
                return 202, {"txid": self.orderer.submit(body)}
            raise _HttpError(404, "unknown path")
        if name == "height":
            return 200, {"height": n.height, "certified_height": n.certified_height,
                         "head_hash": n.head_hash}
        if name == "wait":
            return 200, {"height": self._wait(int(query.get("height", "0")),
                                              float(query.get("timeout", "10")),
                                              query.get("certified") == "1")}
        if name == "receipt" and len(args) == 1:
            r = n.receipt(args[0])
            if r is None:
                raise NotFoundError(f"tx {args[0]} is not in any block")
            return 200, {"txid": r.txid, "height": r.height, "valid": r.valid,
                         "reason": r.reason}
        if name == "block" and len(args) == 1:
            return 200, self.block_json(int(args[0]))
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
        raise _HttpError(404, "unknown path")

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
        deadline = time.monotonic() + min(max(timeout, 0.0), _MAX_WAIT_S)
        while True:
            cur = self.node.certified_height if certified else self.node.height
            left = deadline - time.monotonic()
            if cur >= height or left <= 0 or self._stopping.is_set():
                return cur
            if certified:
                self.node.wait_certified(height, min(left, 0.2))
            else:
                self.node.wait_height(height, min(left, 0.2))
