"""iiot-splitfed wire protocol: pure functions and values, no I/O (except ``keys``).

Modules: ``envelope`` (COSE_Sign1 / Ed25519), ``tensor`` (tensor codec),
``messages`` (every message type, ``seal`` / ``open_sealed``), ``topics``
(MQTT namespace), ``replay`` (anti-replay windows), ``events`` (JSON events
feed), ``summary`` (what ``splitfed inspect`` prints), ``merkle`` (RFC 6962),
``keys`` (Ed25519 key files), ``errors`` (the project's exception tree).
See ``docs/protocol.md``.
"""
