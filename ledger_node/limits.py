"""Sizing of the node's HTTP API (pure settings; see :mod:`ledger_node.httpd`).

Read from the optional ``[http]`` table of ``ledger.toml``
(:mod:`ledger_node.config`); the defaults suit a node on a two-core host
serving one gateway, the server and tools. ``max_long_polls`` must stay below
``threads`` so short requests always find a worker, and ``channel_timeout_s``
above ``max_wait_s`` so a long-poll's connection is not reaped as idle.
"""

from __future__ import annotations

from dataclasses import dataclass

from protocol.errors import ConfigError

__all__ = ["HttpSettings"]


@dataclass(frozen=True, slots=True, kw_only=True)
class HttpSettings:
    threads: int = 16
    max_long_polls: int = 8
    max_wait_s: float = 30.0
    backlog: int = 1024
    connection_limit: int = 512
    channel_timeout_s: int = 60
    max_header_bytes: int = 16 * 1024

    def __post_init__(self) -> None:
        problems = []
        if not 2 <= self.threads <= 256:
            problems.append("http.threads must be in [2, 256]")
        if not 0 <= self.max_long_polls < self.threads:
            problems.append("http.max_long_polls must be in [0, threads): short requests "
                            "need a worker")
        if not 0 < self.max_wait_s <= 300:
            problems.append("http.max_wait_s must be in (0, 300]")
        if self.channel_timeout_s <= self.max_wait_s:
            problems.append("http.channel_timeout_s must exceed max_wait_s")
        if not 1 <= self.backlog <= 65535:
            problems.append("http.backlog must be in [1, 65535]")
        if not 1 <= self.connection_limit <= 10000:
            problems.append("http.connection_limit must be in [1, 10000]")
        if not 1024 <= self.max_header_bytes <= 1 << 20:
            problems.append("http.max_header_bytes must be in [1024, 1 MiB]")
        if problems:
            raise ConfigError(problems)
