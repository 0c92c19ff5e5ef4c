"""Run a Mosquitto 2 broker from a generated configuration (tests, one-machine stack).

Theory of operation
-------------------
:class:`MosquittoBroker` owns one working directory.  ``start()`` writes
``mosquitto.conf`` (one listener on 127.0.0.1:<port>, ``allow_anonymous
false``, a password file made with ``mosquitto_passwd -b``, an ACL file,
persistence in ``<workdir>/data/``, optional TLS), starts ``mosquitto -c``
and polls until the port accepts TCP connections or a deadline passes.  The
port is chosen once (a free one when ``port=None``) and kept across
``restart()``, so clients reconnect to the same address and the broker
reloads its persisted sessions and queued messages.  ``stop()`` sends
SIGTERM (Mosquitto saves persistence on a clean exit), ``kill()`` sends
SIGKILL (nothing saved since the last autosave).

Production brokers use the templates in ``deploy/mosquitto/`` instead; the
ACL here follows the same rules: a device may only publish under its own
``splitfed/v1/<org>/<device>/`` (``pattern`` with ``%u`` = username = device id).

Hardening (same settings as the production template; numbers in
:class:`BrokerLimits`, reasons in docs/operations.md "Broker hardening"):

* ``use_username_as_clientid true`` whenever users are configured: the broker
  replaces the client id a client sends with its username, so one user's
  password cannot open a session under another client's id (Mosquitto would
  otherwise disconnect the victim and hand its queued messages to the
  newcomer). Each service therefore needs a username of its own.
* ``max_packet_size`` / ``message_size_limit``: the largest legal message
  (:data:`protocol.envelope.MAX_MQTT_PAYLOAD`) plus MQTT framing; a bigger
  PUBLISH gets the client disconnected before the broker buffers it.
* ``max_queued_bytes`` / ``max_queued_messages`` / ``max_inflight_messages``
  per client, and ``memory_limit`` for the whole broker: a flood of large
  messages towards a slow subscriber can no longer grow the broker's memory
  without bound.
"""

from __future__ import annotations

import logging
import os
import pwd
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from protocol.envelope import MAX_MQTT_PACKET, MAX_MQTT_PAYLOAD
from protocol.errors import TransportError

log = logging.getLogger(__name__)

MOSQUITTO = "mosquitto"
MOSQUITTO_PASSWD = "mosquitto_passwd"  # noqa: S105 - a program name, not a password


class BrokerError(TransportError):
    """The broker could not be configured, started or stopped."""


@dataclass(frozen=True, slots=True, kw_only=True)
class BrokerTls:
    """Server-side TLS files; ``require_certificate`` demands client certificates."""

    cafile: Path
    certfile: Path
    keyfile: Path
    require_certificate: bool = False

    def __post_init__(self) -> None:
        for f in (self.cafile, self.certfile, self.keyfile):
            if not Path(f).is_file():
                raise BrokerError(f"TLS file {f} does not exist")


@dataclass(frozen=True, slots=True, kw_only=True)
class BrokerLimits:
    """Per-client and broker-wide resource limits (defaults: docs/operations.md)."""

    max_packet_size: int = MAX_MQTT_PACKET
    message_size_limit: int = MAX_MQTT_PAYLOAD
    max_queued_messages: int = 10_000
    max_queued_bytes: int = 64 * 1024 * 1024
    max_inflight_messages: int = 20
    memory_limit: int = 1024 * 1024 * 1024

    def __post_init__(self) -> None:
        if not 0 < self.message_size_limit < self.max_packet_size:
            raise BrokerError("message_size_limit must be > 0 and below max_packet_size")
        if min(self.max_queued_messages, self.max_queued_bytes, self.max_inflight_messages,
               self.memory_limit) < 1:
            raise BrokerError("broker limits must be >= 1")

    def config_lines(self) -> list[str]:
        return [
            f"max_packet_size {self.max_packet_size}",
            f"message_size_limit {self.message_size_limit}",
            f"max_queued_messages {self.max_queued_messages}",
            f"max_queued_bytes {self.max_queued_bytes}",
            f"max_inflight_messages {self.max_inflight_messages}",
            f"memory_limit {self.memory_limit}",
        ]


def device_acl(org: str, *, readers: tuple[str, ...] = ()) -> str:
    """ACL text: each device (username) writes only its own topics, reads its down/model.

    ``readers`` (e.g. the gateway user) may read and write everything under the org.
    """
    lines = []
    for user in readers:
        lines += [f"user {user}", f"topic readwrite splitfed/v1/{org}/#", ""]
    lines += [
        f"pattern write splitfed/v1/{org}/%u/up",
        f"pattern readwrite splitfed/v1/{org}/%u/state",
        f"pattern write splitfed/v1/{org}/%u/predictions",
        f"pattern read splitfed/v1/{org}/%u/down",
        f"pattern read splitfed/v1/{org}/model",  # every device (mosquitto warns: no %u)
        "",
    ]
    return "\n".join(lines)


@dataclass(frozen=True, slots=True, kw_only=True)
class LocalPki:
    """A throw-away CA with a server certificate for 127.0.0.1 and client certificates."""

    ca: Path
    server: BrokerTls
    clients: dict[str, tuple[Path, Path]]  # name -> (certfile, keyfile)


def make_local_pki(directory: str | Path, *, clients: tuple[str, ...] = (),
                   days: int = 2) -> LocalPki:
    """Generate a P-256 CA, a server cert (SAN IP:127.0.0.1, DNS:localhost) and client certs.

    Uses the ``openssl`` command line (no network).  For tests and the one-machine demo
    only: the CA key sits next to the certificates, unencrypted.
    """
    if shutil.which("openssl") is None:
        raise BrokerError("openssl is not installed")
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)

    def run(*args: str) -> None:
        res = subprocess.run(["openssl", *args], capture_output=True, timeout=60, check=False,
                             cwd=d)
        if res.returncode != 0:
            raise BrokerError(f"openssl {args[0]} failed: {res.stderr.decode(errors='replace')}")

    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    run("req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.crt", "-days", str(days),
        "-subj", "/CN=splitfed-local-ca")

    def issue(name: str, ext: str) -> tuple[Path, Path]:
        (d / f"{name}.ext").write_text(ext + "\n")
        run("req", *ec, "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={name}")
        run("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
            "-CAcreateserial", "-out", f"{name}.crt", "-days", str(days),
            "-extfile", f"{name}.ext")
        (d / f"{name}.key").chmod(0o600)
        return d / f"{name}.crt", d / f"{name}.key"

    scrt, skey = issue("server", "subjectAltName=IP:127.0.0.1,DNS:localhost\n"
                                 "extendedKeyUsage=serverAuth")
    issued = {c: issue(c, "extendedKeyUsage=clientAuth") for c in clients}
    server = BrokerTls(cafile=d / "ca.crt", certfile=scrt, keyfile=skey, require_certificate=True)
    return LocalPki(ca=d / "ca.crt", server=server, clients=issued)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class MosquittoBroker:
    """A Mosquitto process on loopback with generated config (see module docstring)."""

    def __init__(self, workdir: str | Path, *, port: int | None = None,
                 users: Mapping[str, str] | None = None, acl: str | None = None,
                 tls: BrokerTls | None = None, start_timeout: float = 10.0,
                 limits: BrokerLimits | None = None) -> None:
        if shutil.which(MOSQUITTO) is None:
            raise BrokerError("mosquitto is not installed (Debian package 'mosquitto')")
        self.workdir = Path(workdir)
        self.port = port if port is not None else free_port()
        self.host = "127.0.0.1"
        self.users = dict(users or {})
        self.acl = acl
        self.tls = tls
        self.limits = limits if limits is not None else BrokerLimits()
        self.start_timeout = start_timeout
        self._proc: subprocess.Popen[bytes] | None = None
        self._log_file = self.workdir / "mosquitto.log"

    # -- configuration ---------------------------------------------------------------
    def write_config(self) -> Path:
        self.workdir.mkdir(parents=True, exist_ok=True)
        (self.workdir / "data").mkdir(exist_ok=True)
        lines = [
            "per_listener_settings false",
            # small QoS 1 messages in request/response: without it Nagle + delayed ACKs add
            # ~40-90 ms per exchange (bench/results/server.md)
            "set_tcp_nodelay true",
            f"listener {self.port} {self.host}",
            "persistence true",
            f"persistence_location {self.workdir / 'data'}/",
            "autosave_interval 1",
            f"log_dest file {self._log_file}",
            "log_type error", "log_type warning", "log_type notice", "log_type information",
            "connection_messages true",
            *self.limits.config_lines(),
        ]
        if os.geteuid() == 0:
            # mosquitto drops root privileges to this user; keep the owner of workdir
            lines.append(f"user {pwd.getpwuid(self.workdir.stat().st_uid).pw_name}")
        if self.users:
            # bind client ids to usernames (no session takeover with another user's password)
            lines += ["allow_anonymous false", f"password_file {self._write_passwords()}",
                      "use_username_as_clientid true"]
        else:
            lines.append("allow_anonymous true")
        if self.acl is not None:
            acl_path = self.workdir / "acl"
            acl_path.write_text(self.acl)
            acl_path.chmod(0o600)
            lines.append(f"acl_file {acl_path}")
        if self.tls is not None:
            lines += [f"cafile {self.tls.cafile}", f"certfile {self.tls.certfile}",
                      f"keyfile {self.tls.keyfile}",
                      f"require_certificate {'true' if self.tls.require_certificate else 'false'}"]
        conf = self.workdir / "mosquitto.conf"
        conf.write_text("\n".join(lines) + "\n")
        return conf

    def _write_passwords(self) -> Path:
        if shutil.which(MOSQUITTO_PASSWD) is None:
            raise BrokerError("mosquitto_passwd is not installed")
        path = self.workdir / "passwd"
        path.unlink(missing_ok=True)
        path.touch(mode=0o600)
        for user, password in self.users.items():
            res = subprocess.run([MOSQUITTO_PASSWD, "-b", str(path), user, password],
                                 capture_output=True, timeout=30, check=False)
            if res.returncode != 0:
                raise BrokerError(f"mosquitto_passwd failed for {user!r}: "
                                  f"{res.stderr.decode(errors='replace').strip()}")
        path.chmod(0o600)
        return path

    # -- process -----------------------------------------------------------------------
    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def start(self) -> None:
        if self.running:
            return
        conf = self.write_config()
        self._proc = subprocess.Popen([MOSQUITTO, "-c", str(conf)], stdin=subprocess.DEVNULL,
                                      stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                err = self._reap()
                raise BrokerError(f"mosquitto exited at start-up: {err} {self.log_tail()}")
            try:
                with socket.create_connection((self.host, self.port), timeout=0.5):
                    log.info("mosquitto listening on %s:%d", self.host, self.port)
                    return
            except OSError:
                time.sleep(0.05)
        self.kill()
        raise BrokerError(f"mosquitto did not accept connections within {self.start_timeout}s: "
                          f"{self.log_tail()}")

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM (persistence saved), SIGKILL if it does not exit in ``timeout``."""
        if self._proc is None:
            return
        if self._proc.poll() is None:
            self._proc.send_signal(signal.SIGTERM)
            try:
                self._proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self._proc.kill()
        self._reap()

    def kill(self) -> None:
        """SIGKILL: an abrupt broker crash."""
        if self._proc is None:
            return
        if self._proc.poll() is None:
            self._proc.kill()
        self._reap()

    def restart(self) -> None:
        self.stop()
        self.start()

    def _reap(self) -> str:
        proc, self._proc = self._proc, None
        if proc is None:
            return ""
        proc.wait()
        err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
        if proc.stderr:
            proc.stderr.close()
        return err.strip()

    def log_tail(self, n: int = 20) -> str:
        try:
            return "\n".join(self._log_file.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""

    def __enter__(self) -> MosquittoBroker:
        self.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()
