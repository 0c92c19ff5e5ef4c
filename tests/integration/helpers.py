"""Helpers shared by integration tests: polling with a deadline, a real solo ledger node.

``wait_for(pred, timeout, what)`` polls every 20 ms and fails the test with
``what`` when ``timeout`` seconds pass. ``solo_ledger(path)`` initialises a
consortium chain (:func:`tests.unit.ledger_node.conftest.make_consortium`) in
``path``, runs a solo-ordered node with its loopback HTTP API, and yields a
:class:`service.ledger_client.LedgerClient` for it with the consortium; the
node is stopped when the block ends (the ``ledger`` fixture in conftest wraps it).
"""

from __future__ import annotations

import socket
import struct
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from ledger_node.api import LedgerApi
from ledger_node.node import LedgerNode
from ledger_node.solo import SoloOrderer
from service.ledger_client import LedgerClient
from tests.unit.ledger_node.conftest import Consortium, make_consortium

__all__ = ["solo_ledger", "wait_for"]


def wait_for(pred: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll ``pred`` until true; AssertionError after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.02)


@contextmanager
def solo_ledger(path: Path) -> Iterator[tuple[LedgerClient, Consortium]]:
    """A solo-ordered consortium ledger node serving HTTP on a free loopback port."""
    c = make_consortium()
    LedgerNode.init(path, c.genesis)
    node = LedgerNode(path, validator_keys=c.validator_keys())
    orderer = SoloOrderer(node, proposer="org1")
    api = LedgerApi(node, orderer)
    orderer.start()
    api.start()
    try:
        yield LedgerClient(api.url, timeout=5), c
    finally:
        api.stop()
        orderer.stop()
        node.close()


def read_http_request(sock: socket.socket) -> bytes:
    """One whole HTTP/1.1 request (head and Content-Length body) from ``sock``."""
    buf = b""
    while b"\r\n\r\n" not in buf:
        chunk = sock.recv(65536)
        if not chunk:
            return buf
        buf += chunk
    head, _, body = buf.partition(b"\r\n\r\n")
    n = 0
    for line in head.split(b"\r\n")[1:]:
        k, _, v = line.partition(b":")
        if k.strip().lower() == b"content-length":
            n = int(v.strip())
    while len(body) < n:
        chunk = sock.recv(65536)
        if not chunk:
            break
        body += chunk
    return head + b"\r\n\r\n" + body


def reset_connection(sock: socket.socket) -> None:
    """Close ``sock`` with a TCP RST (SO_LINGER 0), as a crashed peer would."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()
