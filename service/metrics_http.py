"""Tiny HTTP endpoint serving a :class:`MetricsRegistry` at ``/metrics``.

Adapter (sockets, one thread). Binds to the configured address (loopback by
default); there is no authentication, so expose it only on a management
network. ``/healthz`` answers ``ok`` while the process runs.
"""

from __future__ import annotations

import logging
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from protocol.errors import TransportError
from service.metrics import MetricsRegistry

__all__ = ["MetricsServer"]

log = logging.getLogger(__name__)
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class MetricsServer:
    """Serve ``registry`` on ``host:port`` (port 0 = pick a free one) until :meth:`close`."""

    def __init__(
        self, registry: MetricsRegistry, *, host: str = "127.0.0.1", port: int = 0
    ) -> None:
        reg = registry

        class _Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path.split("?", 1)[0] == "/metrics":
                    body, ctype, code = reg.render().encode("utf-8"), CONTENT_TYPE, 200
                elif self.path == "/healthz":
                    body, ctype, code = b"ok\n", "text/plain", 200
                else:
                    body, ctype, code = b"not found\n", "text/plain", 404
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                log.debug("metrics http: " + format, *args)

        try:
            self._server = ThreadingHTTPServer((host, port), _Handler)
        except OSError as exc:
            raise TransportError(f"cannot bind metrics endpoint {host}:{port}: {exc}") from exc
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="metrics-http", daemon=True
        )
        self._thread.start()

    @property
    def port(self) -> int:
        """The bound TCP port."""
        return int(self._server.server_address[1])

    def close(self) -> None:
        """Stop serving and release the socket; idempotent."""
        if self._thread.is_alive():
            self._server.shutdown()
            self._thread.join(timeout=5)
        self._server.server_close()

    def __enter__(self) -> MetricsServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
