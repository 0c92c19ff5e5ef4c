"""Raw-socket HTTP helpers: send exactly the bytes a hostile client would."""

from __future__ import annotations

import json
import socket
import urllib.parse
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class RawResponse:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def address(url: str) -> tuple[str, int]:
    u = urllib.parse.urlsplit(url)
    assert u.hostname is not None and u.port is not None
    return u.hostname, u.port


def read_response(sock: socket.socket) -> RawResponse:
    """Read one HTTP/1.1 response (Content-Length framed or until close)."""
    buf = b""
    while b"\r\n\r\n" not in buf:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError(f"connection closed before a response: {buf!r}")
        buf += chunk
    head, _, rest = buf.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {k.strip().lower(): v.strip()
               for k, _, v in (line.partition(":") for line in lines[1:])}
    if "content-length" in headers:
        n = int(headers["content-length"])
        while len(rest) < n:
            chunk = sock.recv(65536)
            if not chunk:
                break
            rest += chunk
        rest = rest[:n]
    else:
        while chunk := sock.recv(65536):
            rest += chunk
    return RawResponse(status, headers, rest)


def raw_request(url: str, data: bytes, *, timeout: float = 5.0) -> RawResponse:
    """Send ``data`` as-is on a fresh connection; the answer within ``timeout`` s."""
    with socket.create_connection(address(url), timeout=timeout) as sock:
        sock.sendall(data)
        return read_response(sock)


def get(url: str, target: str, *, timeout: float = 5.0) -> RawResponse:
    host, port = address(url)
    req = f"GET {target} HTTP/1.1\r\nHost: {host}:{port}\r\nConnection: close\r\n\r\n"
    return raw_request(url, req.encode(), timeout=timeout)
