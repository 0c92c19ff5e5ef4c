"""A real asyncua OPC UA server for the tests, in its own event-loop thread.

``OpcuaTestServer(port, ...)`` serves, in namespace 2 (``urn:splitfed:test``):
``ns=2;s=Line1.Temp`` (Double 21.5), ``ns=2;i=1001`` (Int32 7, the flow),
``ns=2;s=Line1.Label`` (UInt16 3), ``ns=2;s=Line1.Count`` (UInt32 0) and
``ns=2;s=Line1.Text`` (String). ``secure=True`` offers only Basic256Sha256
Sign/SignAndEncrypt with the given server certificate and key; ``users``
turns on user-name authentication (anonymous refused). ``make_certificate``
writes a self-signed certificate + key (PEM) with a subjectAltName URI.
"""

from __future__ import annotations

import asyncio
import datetime
import threading
from pathlib import Path
from typing import Any

from asyncua import ua
from asyncua.crypto.permission_rules import SimpleRoleRuleset, User, UserRole
from asyncua.server.server import Server
from asyncua.server.user_managers import UserManager
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

NS_URI = "urn:splitfed:test"
SERVER_URI = "urn:splitfed:test:server"


def make_certificate(directory: Path, name: str, uri: str) -> tuple[Path, Path]:
    """Self-signed RSA-2048 certificate (PEM) + private key (PEM) for ``uri``."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=30))
            .add_extension(x509.SubjectAlternativeName(
                [x509.UniformResourceIdentifier(uri), x509.DNSName("localhost")]), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=True,
                                         key_encipherment=True, data_encipherment=True,
                                         key_agreement=False, key_cert_sign=False,
                                         crl_sign=False, encipher_only=False,
                                         decipher_only=False), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH,
                                                  ExtendedKeyUsageOID.CLIENT_AUTH]),
                           critical=False)
            .sign(key, hashes.SHA256()))
    cert_path = directory / f"{name}-cert.pem"
    key_path = directory / f"{name}-key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.TraditionalOpenSSL,
                                           serialization.NoEncryption()))
    return cert_path, key_path


class _Users(UserManager):
    def __init__(self, users: dict[str, str]) -> None:
        self.users = users

    def get_user(self, iserver: Any, username: str | None = None, password: str | None = None,
                 certificate: Any = None) -> User | None:
        if username is not None and self.users.get(username) == password:
            return User(role=UserRole.User)
        return None


class OpcuaTestServer:
    """Start with :meth:`start`, change values with :meth:`write`, :meth:`stop` at the end."""

    def __init__(self, port: int, *, secure: bool = False, cert: Path | None = None,
                 key: Path | None = None, users: dict[str, str] | None = None) -> None:
        self.port = port
        self.endpoint = f"opc.tcp://127.0.0.1:{port}/splitfed/"
        self._secure = secure
        self._cert, self._key = cert, key
        self._users = users
        self._loop = asyncio.new_event_loop()
        self._thread: threading.Thread | None = None
        self._server: Server | None = None
        self.nodes: dict[str, Any] = {}

    def _run(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(30.0)

    async def _start(self) -> None:
        server = Server(user_manager=_Users(self._users)) if self._users is not None else Server()
        await server.init()
        server.set_endpoint(self.endpoint)
        server.set_server_name("splitfed test server")
        await server.set_application_uri(SERVER_URI)
        if self._secure:
            assert self._cert is not None and self._key is not None
            await server.load_certificate(str(self._cert))
            await server.load_private_key(str(self._key))
            server.set_security_policy([ua.SecurityPolicyType.Basic256Sha256_Sign,
                                        ua.SecurityPolicyType.Basic256Sha256_SignAndEncrypt],
                                       permission_ruleset=SimpleRoleRuleset())
        else:
            server.set_security_policy([ua.SecurityPolicyType.NoSecurity])
        if self._users is not None:
            server.set_identity_tokens([ua.UserNameIdentityToken])
        idx = await server.register_namespace(NS_URI)
        line = await server.nodes.objects.add_object(idx, "Line1")
        spec = [("ns=2;s=Line1.Temp", "Temp", 21.5, ua.VariantType.Double),
                ("ns=2;i=1001", "Flow", 7, ua.VariantType.Int32),
                ("ns=2;s=Line1.Label", "Label", 3, ua.VariantType.UInt16),
                ("ns=2;s=Line1.Count", "Count", 0, ua.VariantType.UInt32),
                ("ns=2;s=Line1.Text", "Text", "hello", ua.VariantType.String)]
        for node_id, name, value, vt in spec:
            node = await line.add_variable(ua.NodeId.from_string(node_id), name,
                                           ua.Variant(value, vt))
            self.nodes[node_id] = (node, vt)
        await server.start()
        self._server = server

    def start(self) -> OpcuaTestServer:
        self._thread = threading.Thread(target=self._loop.run_forever, name="opcua-test-server",
                                        daemon=True)
        self._thread.start()
        try:
            self._run(self._start())
        except BaseException:
            self.stop()
            raise
        return self

    def write(self, node_id: str, value: Any) -> None:
        node, vt = self.nodes[node_id]
        self._run(node.write_value(ua.Variant(value, vt)))

    def write_status(self, node_id: str, status: int) -> None:
        node, _ = self.nodes[node_id]
        self._run(node.write_value(ua.DataValue(StatusCode_=ua.StatusCode(status))))

    def stop(self) -> None:
        if self._thread is None:
            return
        if self._server is not None:
            self._run(self._server.stop())
            self._server = None

        async def drain() -> None:
            me = asyncio.current_task()
            tasks = [t for t in asyncio.all_tasks() if t is not me]
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        self._run(drain())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10.0)
        self._thread = None
        self._loop.run_until_complete(self._loop.shutdown_asyncgens())
        self._loop.run_until_complete(self._loop.shutdown_default_executor())
        self._loop.close()
