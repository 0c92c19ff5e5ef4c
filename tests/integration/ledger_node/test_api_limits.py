"""Hostile and careless clients against the node's HTTP API (real sockets, real node).

Each test sends the exact bytes that used to hurt the node: non-finite or
absurd numbers in the query, a negative / garbled / huge ``Content-Length``,
chunked bodies over the cap, stalled half-requests, more long-polls than the
pool should give away, and a burst of connections larger than the old listen
backlog.
"""

from __future__ import annotations

import contextlib
import errno
import select
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from ledger_node.api import HttpSettings, LedgerApi
from ledger_node.node import LedgerNode
from ledger_node.solo import SoloOrderer
from protocol.ledger_msgs import MAX_TX_BYTES
from service.ledger_client import LedgerClient
from service.retry import NO_RETRY
from tests.unit.ledger_node.conftest import Consortium, make_consortium

from ._http import address, get, raw_request, read_response

TIMEOUT = 5.0  # every raw exchange must be answered well within this


class Served:
    def __init__(self, tmp: Path, settings: HttpSettings | None = None,
                 start: bool = True) -> None:
        self.c: Consortium = make_consortium()
        LedgerNode.init(tmp, self.c.genesis)
        self.node = LedgerNode(tmp, validator_keys=self.c.validator_keys())
        self.orderer = SoloOrderer(self.node, proposer="org1")
        self.api = LedgerApi(self.node, self.orderer, settings=settings)
        self.url = self.api.url
        if start:
            self.orderer.start()
            self.api.start()

    def client(self) -> LedgerClient:
        return LedgerClient(self.url, timeout=TIMEOUT, retry=NO_RETRY)

    def close(self) -> None:
        self.api.stop()
        self.orderer.stop()
        self.node.close()


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    s = Served(tmp_path / "n", HttpSettings(max_wait_s=0.5))
    try:
        yield s
    finally:
        s.close()


# ------------------------------------------------------------------ query numbers
BAD_WAIT_QUERIES = [
    ("timeout=nan", "timeout"), ("timeout=NaN", "timeout"), ("timeout=inf", "timeout"),
    ("timeout=-inf", "timeout"), ("timeout=-1", "timeout"), ("timeout=1e400", "timeout"),
    ("timeout=1e9", "timeout"), ("timeout=abc", "timeout"), ("timeout=", "timeout"),
    ("height=-1", "height"), ("height=nan", "height"), ("height=1.5", "height"),
    ("height=1e3", "height"), ("height=" + "9" * 30, "height"), ("height=%EF%BC%91", "height"),
    ("height=+1", "height"), ("height=%201", "height"),
    ("certified=2", "certified"), ("certified=yes", "certified"),
    ("height=1&height=2", "height"), ("frobnicate=1", "frobnicate"),
]


@pytest.mark.parametrize(("query", "param"), BAD_WAIT_QUERIES)
def test_wait_rejects_bad_numbers_with_json_400(served: Served, query: str, param: str) -> None:
    r = get(served.url, f"/v1/wait?{query}", timeout=TIMEOUT)
    assert r.status == 400, r.body
    assert r.headers["content-type"] == "application/json"
    assert param in r.json()["error"]


def test_nan_timeout_does_not_leave_a_spinning_handler(served: Served) -> None:
    for _ in range(3):
        assert get(served.url, "/v1/wait?height=99&timeout=nan").status == 400
    assert served.api.stats()["long_polls_active"] == 0
    assert served.api.stats()["rejected"]["bad_query"] == 3
    assert served.client().height() == 0  # and the node still answers


def test_long_poll_is_capped_by_the_server(served: Served) -> None:
    # 3600 s is a legal request; the node answers after its own cap (0.5 s here)
    r = get(served.url, "/v1/wait?height=99&timeout=3600", timeout=TIMEOUT)
    assert r.status == 200 and r.json() == {"height": 0}


@pytest.mark.parametrize("target", ["/v1/block/-1", "/v1/block/" + "9" * 25,
                                    "/v1/block/%EF%BC%91", "/v1/block/1e3",
                                    "/v1/block/%201"])
def test_path_numbers_are_checked(served: Served, target: str) -> None:
    r = get(served.url, target)
    assert r.status == 400 and "height" in r.json()["error"]


def test_every_route_refuses_query_parameters_it_does_not_take(served: Served) -> None:
    for target in ("/v1/height?timeout=nan", "/v1/validators?x=1", "/v1/block/0?height=1"):
        r = get(served.url, target)
        assert r.status == 400 and "unknown query parameter" in r.json()["error"]
    assert served.api.stats()["rejected"]["bad_query"] == 3


# ------------------------------------------------------------------ request bodies
def _post_head(url: str, extra: str) -> bytes:
    host, port = address(url)
    return (f"POST /v1/tx HTTP/1.1\r\nHost: {host}:{port}\r\n"
            f"Content-Type: application/cbor\r\n{extra}\r\n").encode()


@pytest.mark.parametrize("length", ["-1", "abc", "1.5", " ", "0x10", "+5", "5, 7"])
def test_garbled_content_length_is_refused_before_reading(served: Served, length: str) -> None:
    with socket.create_connection(address(served.url), timeout=TIMEOUT) as sock:
        sock.sendall(_post_head(served.url, f"Content-Length: {length}\r\n"))
        sock.sendall(b"\0" * 65536)  # and keep the stream open: the node must not wait for it
        r = read_response(sock)
    assert r.status == 400
    assert served.client().height() == 0


def test_content_length_over_the_cap_is_refused_without_the_body(served: Served) -> None:
    for n in (MAX_TX_BYTES + 1025, 10**12, 10**30):
        with socket.create_connection(address(served.url), timeout=TIMEOUT) as sock:
            sock.sendall(_post_head(served.url, f"Content-Length: {n}\r\n"))
            r = read_response(sock)  # answered on the headers alone
        assert r.status == 413


def test_missing_body_is_a_clear_400(served: Served) -> None:
    r = raw_request(served.url, _post_head(served.url, "Connection: close\r\n"))
    assert r.status == 400 and "body" in r.json()["error"]
    assert served.api.stats()["rejected"]["bad_body"] == 1
    host, port = address(served.url)
    r = raw_request(served.url, f"PUT /v1/tx HTTP/1.1\r\nHost: {host}:{port}\r\n"
                    "Content-Length: 0\r\nConnection: close\r\n\r\n".encode())
    assert r.status == 405


def _chunked(data: bytes, size: int = 8192) -> bytes:
    out = b""
    for i in range(0, len(data), size):
        part = data[i:i + size]
        out += f"{len(part):x}\r\n".encode() + part + b"\r\n"
    return out + b"0\r\n\r\n"


def test_chunked_body_is_capped_and_accepted_under_the_cap(served: Served) -> None:
    head = _post_head(served.url, "Transfer-Encoding: chunked\r\nConnection: close\r\n")
    with socket.create_connection(address(served.url), timeout=TIMEOUT) as sock:
        sock.sendall(head)
        # the node may hang up as soon as the cap is crossed
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            sock.sendall(_chunked(b"\0" * (MAX_TX_BYTES + 4096)))
        r = read_response(sock)
    assert r.status == 413
    tx = served.c.register("org1", "d1")
    r = raw_request(served.url, head + _chunked(tx))
    assert r.status == 202
    assert served.client().wait_for(r.json()["txid"], timeout=10).valid


# ------------------------------------------------------------------ pool and backlog
def test_stalled_half_requests_do_not_take_the_workers(tmp_path: Path) -> None:
    s = Served(tmp_path / "n", HttpSettings(threads=2, max_long_polls=1))
    socks = []
    try:
        for _ in range(20):  # ten times the pool
            sock = socket.create_connection(address(s.url), timeout=TIMEOUT)
            sock.sendall(b"GET /v1/height HTTP/1.1\r\nHost: x\r\n")  # never finished
            socks.append(sock)
        assert s.client().height() == 0
    finally:
        for sock in socks:
            sock.close()
        s.close()


def test_long_polls_cannot_starve_the_pool(tmp_path: Path) -> None:
    s = Served(tmp_path / "n", HttpSettings(threads=3, max_long_polls=2, max_wait_s=20))
    results: list[int] = []
    pollers = [threading.Thread(target=lambda: results.append(
        get(s.url, "/v1/wait?height=99&timeout=20", timeout=30).status)) for _ in range(2)]
    try:
        for t in pollers:
            t.start()
        client = s.client()
        deadline_polls = 200
        while s.api.stats()["long_polls_active"] < 2 and deadline_polls:
            deadline_polls -= 1
            threading.Event().wait(0.05)
        assert s.api.stats()["long_polls_active"] == 2
        r = get(s.url, "/v1/wait?height=99&timeout=20")
        assert r.status == 503 and "long-poll" in r.json()["error"]
        assert "retry-after" in r.headers
        assert client.height() == 0  # short requests still have a worker
    finally:
        s.close()  # stop() releases the held long-polls
        for t in pollers:
            t.join(timeout=10)
    assert results == [200, 200]


def _connect_all(addr: tuple[str, int], n: int, deadline_s: float) -> int:
    """Open ``n`` non-blocking connects at once; how many completed the handshake."""
    socks = []
    try:
        for _ in range(n):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setblocking(False)
            err = sock.connect_ex(addr)
            assert err in (0, errno.EINPROGRESS), err
            socks.append(sock)
        pending = set(socks)
        done = 0
        poll_for = deadline_s
        while pending and poll_for > 0:
            _, writable, _ = select.select([], list(pending), [], 0.1)
            poll_for -= 0.1
            for sock in writable:
                pending.discard(sock)
                if sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0:
                    done += 1
        return done
    finally:
        for sock in socks:
            sock.close()


def test_listen_backlog_holds_a_burst_of_200_connections(tmp_path: Path) -> None:
    # the API is constructed (listening) but not yet accepting: only the kernel's
    # accept queue, sized by the listen backlog, can hold the handshakes
    s = Served(tmp_path / "n", start=False)
    try:
        assert _connect_all(address(s.url), 200, deadline_s=2.0) == 200
    finally:
        s.close()


def test_many_concurrent_clients_all_answered(served: Served) -> None:
    errors: list[BaseException] = []

    def work() -> None:
        c = served.client()
        try:
            for _ in range(5):
                c.height()
        except BaseException as exc:  # collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(64)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert errors == []
