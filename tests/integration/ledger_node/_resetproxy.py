"""A TCP relay in front of a real node that resets the first N connections.

Modes: ``before`` hangs up with a TCP RST before forwarding anything (the
request is lost); ``after`` forwards the request to the node, reads the
node's whole answer, then resets the client (the *response* is lost: the
node acted, the client cannot know). Later connections are relayed intact.
One request per connection (``urllib`` sends ``Connection: close``).
"""

from __future__ import annotations

import socket
import threading

from tests.integration.helpers import read_http_request, reset_connection

from ._http import address


class ResetProxy:
    def __init__(self, upstream_url: str, *, resets: int, mode: str = "before") -> None:
        assert mode in ("before", "after")
        self.upstream = address(upstream_url)
        self.resets, self.mode = resets, mode
        self.connections = 0
        self._listen = socket.create_server(("127.0.0.1", 0))
        self._listen.settimeout(0.1)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="reset-proxy")
        self._thread.start()

    @property
    def url(self) -> str:
        host, port = self._listen.getsockname()[:2]
        return f"http://{host}:{port}"

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._listen.accept()
            except TimeoutError:
                continue
            conn.settimeout(10)
            self.connections += 1
            try:
                self._serve(conn, reset=self.connections <= self.resets)
            except OSError:
                conn.close()

    def _serve(self, conn: socket.socket, *, reset: bool) -> None:
        req = read_http_request(conn)
        if reset and self.mode == "before":
            reset_connection(conn)
            return
        with socket.create_connection(self.upstream, timeout=10) as up:
            up.sendall(req)
            answer = b""
            while chunk := up.recv(65536):
                answer += chunk
        if reset:
            reset_connection(conn)
            return
        conn.sendall(answer)
        conn.close()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        self._listen.close()
