"""iiot-splitfed wire protocol: pure functions and values, no I/O (except key and genesis files).

Modules: ``envelope`` (COSE_Sign1 / Ed25519), ``admit`` (the one admission
path: size, header, signature, decode, policy), ``tensor`` (tensor codec),
``messages`` (every message type, ``seal`` / ``open_sealed``), ``topics``
(MQTT namespace), ``replay`` (anti-replay windows), ``endorse`` (gateway
endorsement, signer ids), ``effects`` (what the sans-I/O cores return),
``vote`` (the validator vote rule), ``events`` (JSON events feed), ``summary``
(what ``splitfed inspect`` prints), ``merkle`` (RFC 6962), ``ledger`` (the
ledger's wire formats and light client), ``keys`` (Ed25519 key files),
``errors`` (the project's exception tree). Imports nothing else of the project
(``make lint``). See ``docs/protocol.md`` and ``docs/architecture.md``.
"""
