"""A TCP relay in front of a real node that resets the first N connections.

Modes: ``before`` hangs up with a TCP RST before forwarding anything (the
request is lost); ``after`` forwards the request to the node, reads the
node's whole answer, then resets the client (the *response* is lost: the
node acted, the client cannot know). Later connections are relayed intact.
One request per connection (``urllib`` sends ``Connection: close``).
"""

from __future__ import annotations

import socket
import struct
import threading

from ._http import address


def _read_request(sock: socket.socket) -> bytes:
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


def _reset(sock: socket.socket) -> None:
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


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
        req = _read_request(conn)
        if reset and self.mode == "before":
            _reset(conn)
            return
        with socket.create_connection(self.upstream, timeout=10) as up:
            up.sendall(req)
            answer = b""
            while chunk := up.recv(65536):
                answer += chunk
        if reset:
            _reset(conn)
            return
        conn.sendall(answer)
        conn.close()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        self._listen.close()
