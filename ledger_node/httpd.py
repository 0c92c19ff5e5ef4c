"""The HTTP server under the node's API: waitress, bounded and timed (adapter).

Theory of operation: waitress runs one asyncore loop thread that accepts
connections and reads and parses every request *completely* (headers, then
the body up to ``max_request_body_size``, de-chunked) before it hands the
request to a fixed pool of ``threads`` workers that run the WSGI app. So a
slow or stalled client costs a socket and a few KiB, never a worker; a body
larger than the cap, a ``Content-Length`` that is negative or not a number,
or oversized headers are answered 413/400 by the parser without the body
being read. The app checks the length again (defence in depth; the same app
could be mounted under another server).

Sizing (defaults of :class:`HttpSettings`, two-core loopback host):

* ``threads = 16`` workers; the API's long-polls may hold at most
  ``max_long_polls = 8`` of them (the app refuses a 9th with 503 +
  ``Retry-After``), so at least 8 always serve short requests, each a few
  milliseconds of SQLite/JSON work.
* ``backlog = 1024`` (the kernel caps it at ``net.core.somaxconn``):
  ``http.server`` listened with 5, and a burst of 200 connecting clients
  overflowed the accept queue (dropped SYNs, resets).
* ``connection_limit = 512`` open connections; beyond it waitress stops
  accepting and new clients wait in the backlog (not an error).
* ``channel_timeout = 60`` s of silence closes a connection that has no
  request in progress: longer than the longest long-poll (30 s) plus the
  client's slack, short enough that abandoned keep-alive sockets go away.
* ``max_request_header_size = 16 KiB``: the longest legitimate URL is a
  state key of a few hundred bytes.

:meth:`WsgiServer.stop` first closes the listener (inside the loop thread:
waitress objects are not thread-safe), then lets the workers finish the
request each holds (the API releases its long-polls first), waits up to 2 s
for the answers to be flushed, and only then closes every connection and
joins the loop thread.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

from waitress import wasyncore  # type: ignore[import-untyped]
from waitress.server import create_server  # type: ignore[import-untyped]

from ledger_node.limits import HttpSettings

__all__ = ["HttpSettings", "WsgiApp", "WsgiServer"]

log = logging.getLogger(__name__)

StartResponse = Callable[..., Any]
WsgiApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]


class WsgiServer:
    """A waitress server bound at construction, serving from ``start()`` to ``stop()``."""

    def __init__(self, app: WsgiApp, *, host: str, port: int, settings: HttpSettings,
                 max_body_bytes: int) -> None:
        self._server = create_server(
            app, host=host, port=port, threads=settings.threads, backlog=settings.backlog,
            connection_limit=settings.connection_limit,
            channel_timeout=settings.channel_timeout_s, cleanup_interval=5,
            # waitress refuses a body with length >= its limit; ours is "> cap"
            max_request_body_size=max_body_bytes + 1,
            max_request_header_size=settings.max_header_bytes,
            ident="splitfed-ledger", expose_tracebacks=False, asyncore_loop_timeout=1)
        self._thread: threading.Thread | None = None
        self._closed = False

    @property
    def address(self) -> tuple[str, int]:
        return str(self._server.effective_host), int(self._server.effective_port)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._server.run, name="ledger-api",
                                        daemon=True)
        self._thread.start()

    def _close_listener(self) -> None:
        # wasyncore's close of the listening socket only (BaseWSGIServer.close
        # would also close the trigger the loop still needs)
        self._server.accepting = False
        wasyncore.dispatcher.close(self._server)

    def _close_all(self) -> None:
        for dispatcher in list(self._server._map.values()):
            try:
                dispatcher.close()
            except OSError as exc:  # already gone
                log.debug("closing %r: %s", dispatcher, exc)

    def _on_loop(self, fn: Callable[[], None]) -> None:
        """Run ``fn`` on the loop thread; if its wake-up pipe is already gone, run it here.

        Seen under load: the trigger's pipe closed (EBADF) before ``stop`` reached it,
        which left the listener and connections open and failed the caller's teardown.
        A loop without its trigger cannot run ``fn`` any more, so doing it directly is safe.
        """
        try:
            self._server.trigger.pull_trigger(fn)
        except OSError as exc:
            log.warning("HTTP loop wake-up failed (%s): closing from the caller", exc)
            fn()

    def _unflushed(self) -> int:
        return sum(1 for d in list(self._server._map.values())
                   if getattr(d, "total_outbufs_len", 0) or getattr(d, "requests", None))

    def stop(self, timeout: float = 10.0) -> None:
        """Stop accepting, let in-flight requests finish and flush, then close everything."""
        if self._closed:
            return
        self._closed = True
        if self._thread is None:  # never started: no loop thread owns the sockets
            self._close_all()
            self._server.task_dispatcher.shutdown(cancel_pending=True, timeout=timeout)
            return
        self._on_loop(self._close_listener)
        # workers finish the request they hold (the API ends its long-polls first)
        self._server.task_dispatcher.shutdown(cancel_pending=True, timeout=timeout)
        flush_until = time.monotonic() + min(timeout, 2.0)
        while self._unflushed() and time.monotonic() < flush_until:
            time.sleep(0.02)
        self._on_loop(self._close_all)
        self._thread.join(timeout)
        if self._thread.is_alive():
            log.error("HTTP loop thread did not stop within %.0f s", timeout)
        self._thread = None
