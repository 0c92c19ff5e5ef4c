"""Minimal etcd v3 client over etcd's JSON gRPC gateway (adapter, stdlib only).

Uses ``POST /v3/kv/range`` and ``/v3/kv/txn`` with base64 keys/values. Every
request is tried on each endpoint in turn (starting with the last one that
worked), so losing one member, even the Raft leader, costs at most one
timeout per request while the cluster elects a new leader. Reads are
linearizable (etcd's default), so a range never misses a write that was
acknowledged before it. Errors become :class:`OrderingError`.
"""

from __future__ import annotations

import base64
import json
import logging
import urllib.error
import urllib.request
from collections.abc import Sequence
from typing import Any

from ledger_node.errors import OrderingError

__all__ = ["EtcdClient", "prefix_end"]

log = logging.getLogger(__name__)


def _b64(b: bytes) -> str:
    return base64.b64encode(b).decode("ascii")


def prefix_end(prefix: bytes) -> bytes:
    """The smallest key greater than every key starting with ``prefix``."""
    p = bytearray(prefix)
    while p:
        if p[-1] < 0xFF:
            p[-1] += 1
            return bytes(p)
        p.pop()
    return b"\x00"


class EtcdClient:
    def __init__(self, endpoints: Sequence[str], *, timeout: float = 2.0) -> None:
        if not endpoints:
            raise OrderingError("no etcd endpoints configured")
        for e in endpoints:
            if not e.startswith(("http://", "https://")):
                raise OrderingError(f"etcd endpoint must be http(s)://, got {e!r}")
        self.endpoints = [e.rstrip("/") for e in endpoints]
        self.timeout = timeout
        self._preferred = 0

    def _post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        data = json.dumps(body).encode()
        errors = []
        n = len(self.endpoints)
        for k in range(n):
            i = (self._preferred + k) % n
            # scheme checked in __init__ (S310)
            req = urllib.request.Request(self.endpoints[i] + path, data=data,  # noqa: S310
                                         method="POST")
            req.add_header("Content-Type", "application/json")
            try:
                with urllib.request.urlopen(req, timeout=self.timeout) as resp:  # noqa: S310
                    out: dict[str, Any] = json.loads(resp.read())
            except urllib.error.HTTPError as exc:
                errors.append(f"{self.endpoints[i]}: HTTP {exc.code}")
                exc.close()
                continue
            except (urllib.error.URLError, OSError, ValueError) as exc:
                errors.append(f"{self.endpoints[i]}: {exc}")
                continue
            if out.get("error") or out.get("code"):
                errors.append(f"{self.endpoints[i]}: {out.get('error') or out.get('message')}")
                continue
            self._preferred = i
            return out
        raise OrderingError("etcd unavailable: " + "; ".join(errors))

    def put_if_absent(self, key: bytes, value: bytes) -> bool:
        """Create ``key`` unless it exists; True if this call created it."""
        out = self._post("/v3/kv/txn", {
            "compare": [{"key": _b64(key), "target": "CREATE", "result": "EQUAL",
                         "create_revision": "0"}],
            "success": [{"request_put": {"key": _b64(key), "value": _b64(value)}}],
        })
        return bool(out.get("succeeded", False))

    def range_prefix(self, prefix: bytes, *, start: bytes | None = None,
                     min_create_revision: int = 0, limit: int = 1000,
                     by_create: bool = True) -> tuple[list[tuple[bytes, bytes, int]], int]:
        """Keys under ``prefix`` (from ``start``), ordered by creation or key.

        Returns ``([(key, value, create_revision)], header revision)``.
        """
        body: dict[str, Any] = {"key": _b64(start or prefix), "range_end": _b64(prefix_end(prefix)),
                                "limit": str(limit)}
        if by_create:
            body.update(sort_order="ASCEND", sort_target="CREATE")
        if min_create_revision:
            body["min_create_revision"] = str(min_create_revision)
        out = self._post("/v3/kv/range", body)
        kvs = [(base64.b64decode(kv["key"]), base64.b64decode(kv.get("value", "")),
                int(kv["create_revision"])) for kv in out.get("kvs", [])]
        return kvs, int(out.get("header", {}).get("revision", 0))
