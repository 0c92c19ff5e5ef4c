"""Record MQTT traffic as a capture for :mod:`audit.capture` (adapter: paho-mqtt, file I/O).

Theory of operation
-------------------
:class:`CaptureRecorder` connects to the broker with MQTT 5 as an ordinary
client (the auditor needs an account whose ACL may read the audited org's
topics, e.g. ``splitfed/v1/<org>/#``), subscribes with QoS 1, and appends
every payload as one hex line to ``<out>`` (the ``mosquitto_sub -F %x``
format), flushing each line, so a crash loses at most the line being
written. It records bytes only: nothing is decoded or trusted here; the
scoring side verifies signatures. :meth:`wait_subscribed` has a deadline
(the broker's SUBACK); :meth:`close` stops paho's network thread and closes
the file. Counts of received messages and bytes are kept for the report.

MQTT gives no completeness guarantee to a subscriber that was offline:
start the recorder before the session and check the counts against the
gateway's round records on the ledger (``envelope_count``).
"""

from __future__ import annotations

import binascii
import ssl
import threading
from pathlib import Path
from typing import IO, Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from protocol.errors import TransportError

__all__ = ["CaptureRecorder"]


class CaptureRecorder:
    """Subscribe to ``topic`` and append each payload, hex-encoded, as a line of ``out``."""

    def __init__(self, *, host: str, port: int, topic: str, out: str | Path,
                 username: str | None = None, password: str | None = None,
                 ca_certs: str | None = None) -> None:
        self.topic = topic
        self.messages = 0
        self.bytes = 0
        self._lock = threading.Lock()
        self._subscribed = threading.Event()
        self._file: IO[bytes] = Path(out).open("ab")  # noqa: SIM115 - closed in close()
        self._client = paho.Client(CallbackAPIVersion.VERSION2, protocol=paho.MQTTv5)
        try:
            if username is not None:
                self._client.username_pw_set(username, password)
            if ca_certs is not None:
                self._client.tls_set(ca_certs=ca_certs)
            self._client.on_connect = self._on_connect
            self._client.on_subscribe = self._on_subscribe
            self._client.on_message = self._on_message
            self._client.connect(host, port, keepalive=30)
        except (OSError, ssl.SSLError, ValueError) as exc:
            self._file.close()
            raise TransportError(f"cannot connect the capture recorder to {host}:{port}: "
                                 f"{exc}") from exc
        self._client.loop_start()

    def _on_connect(self, client: paho.Client, _u: Any, _f: Any, reason: Any,
                    _p: Any = None) -> None:
        if not reason.is_failure:
            client.subscribe(self.topic, qos=1)

    def _on_subscribe(self, _c: paho.Client, _u: Any, _mid: int, reasons: Any,
                      _p: Any = None) -> None:
        if reasons and not any(r.is_failure for r in reasons):
            self._subscribed.set()

    def _on_message(self, _c: paho.Client, _u: Any, msg: paho.MQTTMessage) -> None:
        line = binascii.hexlify(msg.payload) + b"\n"
        with self._lock:
            self._file.write(line)
            self._file.flush()
            self.messages += 1
            self.bytes += len(msg.payload)

    def wait_subscribed(self, timeout: float) -> None:
        """Block until the broker granted the subscription; TransportError after ``timeout``."""
        if not self._subscribed.wait(timeout):
            raise TransportError(f"subscription to {self.topic} not granted within {timeout} s "
                                 "(credentials or ACL?)")

    def close(self) -> None:
        """Disconnect, stop the network thread, release paho's sockets, close the file."""
        try:
            self._client.disconnect()
        finally:
            self._client.loop_stop()
            # paho keeps a wake-up socketpair per client until garbage collection; release it
            self._client._reset_sockets()
            with self._lock:
                self._file.close()
