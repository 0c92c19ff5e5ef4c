"""OPC UA adapter: an asyncua client behind the synchronous ``SensorReader`` interface.

Threading model: each :class:`OpcuaReader` owns one private asyncio event
loop running in one daemon thread (``opcua-<device>``). Every call into
asyncua is posted to that loop and waited for with a deadline of the
device ``timeout`` (connect: ``timeout`` per step plus the endpoint
discovery of ``set_security``), so a hung server costs the caller at most
that long; the request is then cancelled. ``close()`` disconnects, cancels
what is left on the loop and joins the thread.

Acquisition. ``poll``: every ``read()`` reads the Value attribute of all
nodes in one Read request. ``subscription``: after connecting, one
subscription with one monitored item per node (sampling and publishing
interval ``1/sample_rate``, queue size 1) keeps the last value of every
node; ``read()`` returns that snapshot (sample-and-hold between changes,
paced by the caller as for any live device) once every node has reported
at least once, waiting up to ``timeout`` for the first values.

Faults and reconnect. The same :class:`~agent.sensors.health.DeviceHealth`
as the Modbus readers counts every failed attempt by kind (``timeouts``,
``connection_errors``, ``exceptions`` = Bad status codes, ``crc_errors`` =
unusable values) and backs off ``min(max, base*2^(k-1))`` with jitter. A
connection error or timeout drops the session (the subscription goes with
it); the next attempt after the backoff connects again and re-creates the
subscription. asyncua's own ``auto_reconnect`` is off so that every
reconnect is counted and paced by our policy. A lost connection is noticed
through asyncua's ``connection_lost_callback`` (its watchdog probes the
server every ``timeout`` seconds) and on the next failed request.

Security. ``security_policy = "None"`` or ``"Basic256Sha256"`` with
``security_mode = "Sign" | "SignAndEncrypt"`` and the client certificate
and private key files (PEM or DER). ``server_certificate`` pins the
server's certificate; without it the certificate is taken from the
endpoint list (trust on first use, said in ``docs/sensors.md``). The
client's application URI is taken from the certificate's
subjectAltName URI unless ``application_uri`` is set. ``username`` and
``password`` add a user-name identity token (encrypted by asyncua with the
server's key when the endpoint asks for it).

This is the only module that imports asyncua: its exceptions become
:mod:`agent.sensors.errors` here with ``raise X from exc``.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import threading
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar

from asyncua import ua
from asyncua.client.client import Client
from asyncua.crypto import security_policies
from asyncua.ua.attribute_ids import AttributeIds
from asyncua.ua.uaerrors import UaError, UaStatusCodeError

from agent.sensors.base import Sample
from agent.sensors.config import OpcuaTransport
from agent.sensors.errors import (
    DeviceUnavailableError,
    FrameError,
    NodeStatusError,
    SensorConfigError,
    SensorConnectionError,
    SensorTimeoutError,
)
from agent.sensors.health import BackoffPolicy, DeviceCounters, DeviceHealth, FailureKind
from agent.sensors.opcua_nodes import NodeMap, sample_from_values
from protocol.errors import SensorError

log = logging.getLogger(__name__)
T = TypeVar("T")
Values = dict[str, tuple[object, str]]


def classify(exc: SensorError) -> FailureKind:
    """Counter kind of an OPC UA failure."""
    if isinstance(exc, SensorTimeoutError):
        return "timeout"
    if isinstance(exc, SensorConnectionError):
        return "connection"
    if isinstance(exc, NodeStatusError):
        return "exception"
    return "frame"


class _Loop:
    """A private asyncio loop in one daemon thread; ``run`` waits with a deadline."""

    def __init__(self, name: str) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name=name, daemon=True)
        self._thread.start()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float, what: str) -> T:
        fut = asyncio.run_coroutine_threadsafe(coro, self.loop)
        try:
            return fut.result(timeout)
        except concurrent.futures.TimeoutError:
            fut.cancel()
            raise SensorTimeoutError(f"{what}: no answer within {timeout} s") from None

    def stop(self) -> None:
        if self.loop.is_closed():
            return

        async def drain() -> None:
            me = asyncio.current_task()
            tasks = [t for t in asyncio.all_tasks() if t is not me]
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(drain(), self.loop).result(5.0)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(5.0)
        if not self._thread.is_alive():
            self.loop.run_until_complete(self.loop.shutdown_asyncgens())
            self.loop.run_until_complete(self.loop.shutdown_default_executor())
            self.loop.close()


def _status_name(code: Any) -> str:
    try:
        return str(ua.StatusCode(ua.UInt32(int(code))).name)
    except Exception:
        return f"0x{int(code):08X}"


def _cert_uri(path: str) -> str | None:
    """The subjectAltName URI of a PEM or DER certificate (the client application URI)."""
    from cryptography import x509

    data = Path(path).read_bytes()
    cert = (x509.load_pem_x509_certificate(data) if b"-----BEGIN" in data
            else x509.load_der_x509_certificate(data))
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return None
    uris = san.get_values_for_type(x509.UniformResourceIdentifier)
    return uris[0] if uris else None


class _Handler:
    """Subscription callbacks (run on the loop thread): keep the last value of each node."""

    def __init__(self, ids: dict[ua.NodeId, str]) -> None:
        self._ids = ids
        self._lock = threading.Lock()
        self.values: Values = {}
        self.bad: dict[str, str] = {}
        self.notifications = 0

    def datachange_notification(self, node: Any, val: Any, data: Any) -> None:
        key = self._ids.get(node.nodeid)
        if key is None:
            return
        dv = data.monitored_item.Value
        with self._lock:
            self.notifications += 1
            if dv.StatusCode is not None and not dv.StatusCode.is_good():
                self.bad[key] = _status_name(dv.StatusCode.value)
                self.values.pop(key, None)
                return
            self.bad.pop(key, None)
            if dv.Value is not None:
                self.values[key] = (dv.Value.Value, dv.Value.VariantType.name)

    def status_change_notification(self, status: Any) -> None:
        log.debug("subscription status change: %s", status)

    def snapshot(self) -> tuple[Values, dict[str, str]]:
        with self._lock:
            return dict(self.values), dict(self.bad)


class OpcuaSession:
    """One connected asyncua client (poll or subscription); every call has a deadline."""

    def __init__(self, t: OpcuaTransport, *, name: str, timeout: float, sample_rate: float,
                 loop: _Loop) -> None:
        self.t = t
        self.name = name
        self.timeout = timeout
        self.period_ms = max(1.0, 1000.0 / sample_rate)
        self._loop = loop
        self._client: Client | None = None
        self._nodes: list[Any] = []
        self._ids = {ua.NodeId.from_string(s.node_id): s.node_id for s in t.nodes.all_specs}
        self.handler: _Handler | None = None
        self.lost: str | None = None

    def _what(self) -> str:
        return f"{self.name} ({self.t.endpoint})"

    def _call(self, coro: Coroutine[Any, Any, T], *, timeout: float | None = None,
              connecting: bool = False) -> T:
        try:
            return self._loop.run(coro, timeout or self.timeout, self._what())
        except SensorError:
            raise
        except TimeoutError as exc:
            raise SensorTimeoutError(f"{self._what()}: request timed out") from exc
        except UaStatusCodeError as exc:
            name = _status_name(exc.code)
            if connecting:
                raise SensorConnectionError(f"{self._what()}: refused ({name})") from exc
            raise NodeStatusError(name, f"{self._what()}: {name}") from exc
        except (OSError, ConnectionError) as exc:
            raise SensorConnectionError(f"{self._what()}: {type(exc).__name__}") from exc
        except UaError as exc:
            raise (SensorConnectionError if connecting else FrameError)(
                f"{self._what()}: {type(exc).__name__}: {exc}") from exc
        except ValueError as exc:  # asyncua: no endpoint with this policy and mode, bad cert
            raise (SensorConnectionError if connecting else FrameError)(
                f"{self._what()}: {exc}") from exc

    async def _on_lost(self, exc: Exception) -> None:
        self.lost = type(exc).__name__

    async def _connect(self) -> None:
        t = self.t
        client = Client(t.endpoint, timeout=self.timeout, watchdog_intervall=self.timeout)
        self._client = client
        client.connection_lost_callback = self._on_lost
        client.session_timeout = 600_000  # ms; what servers commonly grant
        if t.username is not None:
            client.set_user(t.username)
            client.set_password(t.password or "")
        if t.security_policy == "Basic256Sha256":
            assert t.certificate is not None and t.private_key is not None
            uri = t.application_uri or _cert_uri(t.certificate)
            if uri:
                client.application_uri = uri
            mode = (ua.MessageSecurityMode.Sign if t.security_mode == "Sign"
                    else ua.MessageSecurityMode.SignAndEncrypt)
            await client.set_security(security_policies.SecurityPolicyBasic256Sha256,
                                      certificate=t.certificate, private_key=t.private_key,
                                      server_certificate=t.server_certificate, mode=mode)
        elif t.application_uri:
            client.application_uri = t.application_uri
        await client.connect()
        self._nodes = [client.get_node(s.node_id) for s in t.nodes.all_specs]
        if t.acquisition == "subscription":
            self.handler = _Handler(self._ids)
            sub = await client.create_subscription(self.period_ms, self.handler)
            handles: list[Any] = await sub.subscribe_data_change(
                self._nodes, queuesize=1, sampling_interval=ua.Double(self.period_ms))
            for spec, h in zip(t.nodes.all_specs, handles, strict=True):
                if isinstance(h, ua.StatusCode):
                    name = _status_name(h.value)
                    raise NodeStatusError(name, f"{self._what()}: cannot monitor "
                                                f"{spec.node_id} ({name})")

    def connect(self) -> None:
        """Open the secure channel and session (and the subscription); translated errors."""
        for path in (self.t.certificate, self.t.private_key, self.t.server_certificate):
            if path is not None and not Path(path).is_file():
                raise SensorConfigError(f"{self.name}: no such file {path}")
        # connect = endpoint discovery (with security) + channel + session + subscription
        try:
            self._call(self._connect(), timeout=3 * self.timeout, connecting=True)
        except BaseException:
            self.close()
            raise

    async def _read(self) -> Values:
        assert self._client is not None
        dvs = await self._client.read_attributes(self._nodes, AttributeIds.Value)
        out: Values = {}
        for spec, dv in zip(self.t.nodes.all_specs, dvs, strict=True):
            if dv.StatusCode is not None and not dv.StatusCode.is_good():
                name = _status_name(dv.StatusCode.value)
                raise NodeStatusError(name, f"{self._what()}: {spec.node_id}: {name}")
            if dv.Value is None:
                raise FrameError(f"{self._what()}: {spec.node_id}: empty value")
            out[spec.node_id] = (dv.Value.Value, dv.Value.VariantType.name)
        return out

    def read(self, *, clock: Callable[[], float], sleep: Callable[[float], None]) -> Values:
        """Current values of every node, ``{node_id: (value, variant type name)}``."""
        if self.lost is not None:
            raise SensorConnectionError(f"{self._what()}: connection lost ({self.lost})")
        if self.handler is None:
            return self._call(self._read())
        deadline = clock() + self.timeout
        want = set(self._ids.values())
        while True:
            values, bad = self.handler.snapshot()
            if bad:
                key, name = sorted(bad.items())[0]
                raise NodeStatusError(name, f"{self._what()}: {key}: {name}")
            if want <= values.keys():
                return values
            if self.lost is not None:
                raise SensorConnectionError(f"{self._what()}: connection lost ({self.lost})")
            if clock() >= deadline:
                missing = sorted(want - values.keys())
                raise SensorTimeoutError(f"{self._what()}: no value yet for {missing}")
            sleep(min(0.01, self.period_ms / 1000.0))

    def close(self) -> None:
        """Disconnect (best effort, bounded by the timeout)."""
        client, self._client = self._client, None
        self.handler = None
        if client is None:
            return
        with contextlib.suppress(Exception):
            self._loop.run(client.disconnect(), self.timeout, self._what())


class OpcuaReader:
    """:class:`SensorReader` for one OPC UA server: retries, backoff, reconnect, counters."""

    def __init__(self, *, name: str, transport: OpcuaTransport, timeout: float,
                 policy: BackoffPolicy, sample_rate: float,
                 health: DeviceHealth | None = None,
                 clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        if timeout <= 0:
            raise SensorConfigError("timeout must be > 0")
        self.name = name
        self.transport = transport
        self.timeout = timeout
        self.policy = policy
        self.sample_rate = sample_rate
        self.health = health or DeviceHealth(policy)
        self.connects = 0
        self._clock = clock
        self._sleep = sleep
        self._loop: _Loop | None = _Loop(f"opcua-{name}")
        self._session: OpcuaSession | None = None
        self._lock = threading.Lock()

    @property
    def node_map(self) -> NodeMap:
        """The configured nodes."""
        return self.transport.nodes

    def _drop(self) -> None:
        if self._session is not None:
            self._session.close()
            self._session = None

    def _read_once(self) -> Sample:
        if self._loop is None:
            raise SensorConnectionError(f"{self.name}: reader is closed")
        if self._session is None:
            s = OpcuaSession(self.transport, name=self.name, timeout=self.timeout,
                             sample_rate=self.sample_rate, loop=self._loop)
            s.connect()
            self._session = s
            self.connects += 1
        try:
            values = self._session.read(clock=self._clock, sleep=self._sleep)
        except (SensorConnectionError, SensorTimeoutError):
            self._drop()
            raise
        return sample_from_values(self.transport.nodes, values, self._clock())

    def attempt(self) -> Sample:
        """Exactly one try; counted; failures start the backoff."""
        with self._lock:
            if not self.health.ready(self._clock()):
                raise DeviceUnavailableError(f"{self.name} is backing off")
            try:
                sample = self._read_once()
            except SensorError as exc:
                self.health.record_failure(classify(exc), self._clock(), type(exc).__name__)
                raise
            self.health.record_success()
            return sample

    def read(self) -> Sample:
        """Up to ``1 + retries`` attempts, waiting out the backoff between them."""
        i = 0
        while True:
            wait = self.health.next_attempt - self._clock()
            if wait > 0:
                self._sleep(wait)
            try:
                return self.attempt()
            except SensorError:
                if i >= self.policy.retries:
                    raise
            i += 1
            self.health.record_retry()

    def counters(self) -> DeviceCounters:
        """Counter snapshot."""
        return self.health.snapshot()

    def close(self) -> None:
        """Disconnect and stop the loop thread (idempotent)."""
        with self._lock:
            self._drop()
            if self._loop is not None:
                self._loop.stop()
                self._loop = None
