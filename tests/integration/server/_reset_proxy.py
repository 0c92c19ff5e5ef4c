"""A TCP proxy in front of the ledger API that resets the first vote submits.

Every connection carries one HTTP request (the ledger client sends
``Connection: close``). The proxy reads the request; if it is ``POST /v1/tx``
with a ``model_vote`` tx and resets are left, it closes the client's socket
with ``SO_LINGER`` 0, i.e. a TCP RST: ``before`` = the ledger never sees the
tx, ``after`` = the tx is forwarded and committed but its response is lost.
Anything else is relayed unchanged.
"""

from __future__ import annotations

import socket
import socketserver
import threading
import urllib.parse

from ledger_node.errors import LedgerError
from protocol.ledger.tx import decode_tx
from tests.integration.helpers import read_http_request, reset_connection

__all__ = ["ResetVoteProxy"]


def _is_vote(request: bytes) -> bool:
    head, _, body = request.partition(b"\r\n\r\n")
    if not head.startswith(b"POST /v1/tx "):
        return False
    try:
        return decode_tx(body).kind == "model_vote"
    except (LedgerError, ValueError):
        return False


class ResetVoteProxy:
    def __init__(self, upstream_url: str, *, resets: int = 1, when: str = "before") -> None:
        u = urllib.parse.urlparse(upstream_url)
        self._upstream = (u.hostname or "127.0.0.1", u.port or 80)
        self._left = resets
        self._when = when
        self._lock = threading.Lock()
        self.reset_count = 0
        self.votes_seen = 0
        proxy = self

        class Handler(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                proxy._handle(self.request)

        class Server(socketserver.ThreadingTCPServer):
            allow_reuse_address = True
            daemon_threads = False
            block_on_close = True

        self._server = Server(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, name="reset-proxy")

    def _take_reset(self, request: bytes) -> bool:
        if not _is_vote(request):
            return False
        with self._lock:
            self.votes_seen += 1
            if self._left <= 0:
                return False
            self._left -= 1
            self.reset_count += 1
            return True

    def _handle(self, client: socket.socket) -> None:
        client.settimeout(10)
        request = read_http_request(client)
        reset = self._take_reset(request)
        if reset and self._when == "before":
            reset_connection(client)
            return
        with socket.create_connection(self._upstream, timeout=10) as up:
            up.sendall(request)
            response = b""
            while chunk := up.recv(65536):
                response += chunk
        if reset:
            reset_connection(client)
            return
        client.sendall(response)

    def start(self) -> None:
        self._thread.start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)
