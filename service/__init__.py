"""The shared service layer: I/O plumbing every role runs the same way.

Roles (agent, gateway, server, ledger_node) sit side by side on this package,
:mod:`models` and :mod:`protocol`; they never import each other. What lives
here is role-agnostic adapter code with one behaviour for everybody:

* :mod:`service.mqtt` - one MQTT settings type, one client factory
  (TCP_NODELAY, the TLS file-descriptor fix, jittered reconnect), one
  password-file rule; :mod:`service.link` - the manual-ack subscribe/publish
  link of the gateway and the server (the agent's spool publisher builds its
  client from the same factory);
* :mod:`service.metrics`, :mod:`service.metrics_http` - the metrics registry
  and its HTTP endpoint; :mod:`service.registry` - the cached device registry;
* :mod:`service.ledger_client` (+ :mod:`service.retry`) - the HTTP client of a
  ledger node; :mod:`service.ledger` - the registry and proofs built on it;
* :mod:`service.notify` - systemd ``sd_notify`` and the watchdog;
  :mod:`service.lifecycle` - ``serve``: signals, start, READY, run, close;
* :mod:`service.files` - atomic file writes and the SQLite open sequence;
* :mod:`service.cli` - the CLI exit wrapper (one set of exit codes).

Everything here translates third-party errors into :mod:`protocol.errors`.
"""
