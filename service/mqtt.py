"""One MQTT 5 client factory for every role (paho-mqtt 2.2 adapter).

Theory of operation
-------------------
Every process that talks to the broker - the agent's spool publisher, the
gateway, the server, tests and benches - builds its paho client with
:func:`make_client` from one :class:`MqttSettings`:

* **one settings type**: broker address, client id, credentials as *file
  paths* (never values), TLS files, keepalive, session expiry and the
  reconnect backoff; the same names in every role's TOML (``ca_file``,
  ``cert_file``, ``key_file``, ``password_file``);
* **one password-file rule** (:func:`read_password`): the file holds the
  password followed by at most one line ending; only ``\\r``/``\\n`` are
  trimmed, so a password may begin or end with blanks;
* **TCP_NODELAY** on every new broker socket, also after reconnects: small
  QoS 1 messages otherwise wait for delayed ACKs (bench/results/server.md);
* **the TLS fd fix**: paho 2.2 leaves the socket open when the TLS handshake
  fails (untrusted certificate), one leaked descriptor per reconnect;
  :class:`SafeClient` closes it;
* **jittered reconnect**: :class:`Backoff` is exponential backoff with full
  jitter in ``[base/2, base]``; the agent's own session loop uses it between
  sessions, and paho's threaded loop (:class:`service.link.PahoLink`) uses it
  through :meth:`SafeClient._reconnect_wait`, so a broker restart is not met
  by every client at the same instant.

Paho return codes and exceptions are translated into
:class:`protocol.errors.TransportError` here; a bad setting raises
:class:`protocol.errors.ConfigError` listing every problem.
"""

from __future__ import annotations

import contextlib
import math
import random
import socket
import ssl
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion, _ConnectionState
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from protocol.errors import ConfigError, TransportError

__all__ = [
    "TABLE_KEYS",
    "Backoff",
    "MqttSettings",
    "SafeClient",
    "connect_properties",
    "make_client",
    "read_password",
    "settings_from_table",
    "tcp_no_delay",
]


@dataclass(frozen=True, slots=True)
class Backoff:
    """Exponential backoff with full jitter: ``failures`` -> a delay in ``[base/2, base]``.

    ``base = min(maximum, initial * 2**failures)``. Pure apart from the random source.
    """

    initial: float = 0.5
    maximum: float = 60.0
    rng: random.Random = field(default_factory=random.Random, compare=False)

    def delay(self, failures: int) -> float:
        base = min(self.maximum, self.initial * math.pow(2.0, min(max(failures, 0), 30)))
        return self.rng.uniform(base / 2, base)  # jitter only; not security relevant


@dataclass(frozen=True, slots=True, kw_only=True)
class MqttSettings:
    """Broker connection of one client; secrets are file paths, never values."""

    host: str = "127.0.0.1"
    port: int = 1883
    client_id: str
    username: str | None = None
    password_file: Path | None = None
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    keepalive: int = 30
    session_expiry: int = 3600
    backoff_initial: float = 1.0
    backoff_max: float = 30.0

    def __post_init__(self) -> None:
        problems = []
        if not self.host:
            problems.append("mqtt.host is empty")
        if not 0 < self.port < 65536:
            problems.append(f"mqtt.port {self.port} out of range")
        if not self.client_id:
            problems.append("mqtt.client_id is empty")
        if self.password_file is not None and self.username is None:
            problems.append("mqtt.password_file needs mqtt.username")
        if (self.cert_file is None) != (self.key_file is None):
            problems.append("mqtt.cert_file and mqtt.key_file go together")
        if self.cert_file is not None and self.ca_file is None:
            problems.append("a client certificate needs mqtt.ca_file (TLS)")
        if self.keepalive < 5 or self.session_expiry < 0:
            problems.append("mqtt.keepalive must be >= 5 s and session_expiry >= 0")
        if not 0 < self.backoff_initial <= self.backoff_max:
            problems.append("need 0 < mqtt.backoff_initial <= mqtt.backoff_max")
        if problems:
            raise ConfigError(problems)

    @property
    def backoff(self) -> Backoff:
        return Backoff(self.backoff_initial, self.backoff_max)


#: the keys of a role's ``[mqtt]`` TOML table (the agent adds its own, see agent.config)
TABLE_KEYS = frozenset({
    "host", "port", "client_id", "username", "password_file", "ca_file", "cert_file",
    "key_file", "keepalive", "session_expiry",
})  # fmt: skip


def settings_from_table(
    table: Mapping[str, Any], *, client_id: str, base: Path | None = None
) -> MqttSettings:
    """:class:`MqttSettings` from a role's ``[mqtt]`` table; every problem in one ConfigError.

    File paths are taken relative to ``base`` when given. Unknown keys are the caller's
    business (each role checks its whole file at once against :data:`TABLE_KEYS`).
    """
    problems: list[str] = []

    def integer(key: str, default: int) -> int:
        v = table.get(key, default)
        if isinstance(v, bool) or not isinstance(v, int):
            problems.append(f"mqtt.{key} must be an integer")
            return default
        return v

    def text(key: str, default: str | None) -> str | None:
        v = table.get(key, default)
        if v is not None and not isinstance(v, str):
            problems.append(f"mqtt.{key} must be a string")
            return default
        return v

    def path(key: str) -> Path | None:
        raw = text(key, None)
        if raw is None:
            return None
        return base / raw if base is not None else Path(raw)

    host, cid = text("host", "127.0.0.1"), text("client_id", client_id)
    user = text("username", None)
    port, keepalive = integer("port", 1883), integer("keepalive", 30)
    expiry = integer("session_expiry", 3600)
    settings = None
    try:
        settings = MqttSettings(
            host=host or "", port=port, client_id=cid or "", username=user,
            password_file=path("password_file"), ca_file=path("ca_file"),
            cert_file=path("cert_file"), key_file=path("key_file"),
            keepalive=keepalive, session_expiry=expiry,
        )  # fmt: skip
    except ConfigError as exc:
        problems.extend(exc.problems)
    if problems or settings is None:
        raise ConfigError(problems)
    return settings


def read_password(path: Path) -> str:
    """The password in ``path``: its text without one trailing line ending (``\\r``/``\\n``)."""
    try:
        return Path(path).read_text().rstrip("\r\n")
    except OSError as exc:
        raise TransportError(f"cannot read MQTT password file {path}: {exc}") from exc


def tcp_no_delay(_client: paho.Client, _userdata: Any, sock: Any) -> None:
    """Disable Nagle on every new broker socket (also after reconnects): small QoS 1
    messages otherwise wait ~40-90 ms for delayed ACKs (bench/results/server.md)."""
    with contextlib.suppress(OSError, AttributeError):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


class SafeClient(paho.Client):
    """paho's Client with two fixes: TLS handshake failures close their socket, and the
    threaded loop's reconnect delay is jittered.

    paho-mqtt 2.2 ``_ssl_wrap_socket`` leaves the wrapped socket open when
    ``do_handshake()`` raises (e.g. untrusted server certificate), leaking one
    file descriptor per reconnect attempt. With ``check_hostname`` on (what
    ``tls_set`` configures) we do the same wrap and close on failure.
    """

    backoff: Backoff = Backoff(1.0, 30.0)
    _reconnect_failures: int = 0

    def _ssl_wrap_socket(self, tcp_sock: socket.socket) -> ssl.SSLSocket:
        ctx = self._ssl_context
        if ctx is None or not ctx.check_hostname:
            return super()._ssl_wrap_socket(tcp_sock)
        ssl_sock = ctx.wrap_socket(tcp_sock, server_hostname=self._host,
                                   do_handshake_on_connect=False)  # fmt: skip
        try:
            ssl_sock.settimeout(self._connect_timeout)
            ssl_sock.do_handshake()
        except BaseException:
            ssl_sock.close()
            raise
        return ssl_sock

    def _reconnect_wait(self) -> None:
        # paho resets _reconnect_delay to None after a successful CONNACK: start over then
        with self._reconnect_delay_mutex:
            if self._reconnect_delay is None:
                self._reconnect_failures = 0
            delay = self.backoff.delay(self._reconnect_failures)
            self._reconnect_failures += 1
            self._reconnect_delay = self._reconnect_failures  # paho only tests it for None
        deadline = time.monotonic() + delay
        stop = (_ConnectionState.MQTT_CS_DISCONNECTING, _ConnectionState.MQTT_CS_DISCONNECTED)
        while not self._thread_terminate and self._state not in stop:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            time.sleep(min(remaining, 0.5))


def make_client(
    settings: MqttSettings, *, manual_ack: bool = False
) -> SafeClient:
    """A configured paho client (not connected): MQTT 5, credentials, TLS, TCP_NODELAY.

    Raises :class:`TransportError` when the password or TLS files cannot be loaded.
    """
    c = SafeClient(
        callback_api_version=CallbackAPIVersion.VERSION2,
        client_id=settings.client_id,
        protocol=paho.MQTTv5,
        manual_ack=manual_ack,
    )
    c.backoff = settings.backoff
    c.max_queued_messages_set(0)
    try:
        if settings.username is not None:
            pw = None if settings.password_file is None else read_password(settings.password_file)
            c.username_pw_set(settings.username, pw)
        if settings.ca_file is not None:
            c.tls_set(
                ca_certs=str(settings.ca_file),
                certfile=None if settings.cert_file is None else str(settings.cert_file),
                keyfile=None if settings.key_file is None else str(settings.key_file),
                tls_version=ssl.PROTOCOL_TLS_CLIENT,
            )
    except (OSError, ssl.SSLError, ValueError) as exc:
        c._reset_sockets()
        raise TransportError(f"cannot load MQTT credentials/TLS files: {exc}") from exc
    except TransportError:
        c._reset_sockets()
        raise
    c.on_socket_open = tcp_no_delay  # never raises
    return c


def connect_properties(settings: MqttSettings) -> Properties:
    """CONNECT properties of a persistent session (Session Expiry Interval)."""
    props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
    props.SessionExpiryInterval = settings.session_expiry
    return props
