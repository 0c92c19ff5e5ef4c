"""Device registry view for admission: which key may publish as which device.

The ledger is the source of truth (device register / revoke txs). The
gateway and the server ask it through the :class:`DeviceRegistry` role and
keep a :class:`CachedRegistry` in front: answers (positive *and* negative, so a
flood of unknown key ids cannot hammer the ledger API) are kept until the
ledger height moves, and :meth:`CachedRegistry.on_block` drops them all on
every new block. A revocation therefore takes effect at the first message
checked after the process has seen the block that carries it.
Pure apart from the injected registry; not thread-safe (one admission thread).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import nacl.signing

from protocol.errors import KeyFileError
from protocol.keys import verify_key_from_hex

__all__ = ["CachedRegistry", "DeviceInfo", "DeviceRegistry", "StaticRegistry"]


@dataclass(frozen=True, slots=True, kw_only=True)
class DeviceInfo:
    """A registered device: its org, id, public key and revocation state."""

    org: str
    device: str
    pubkey_hex: str
    revoked: bool = False


class DeviceRegistry(Protocol):
    """Look a device up in the ledger state (``None`` if never registered)."""

    def lookup(self, org: str, device: str) -> DeviceInfo | None: ...


class StaticRegistry:
    """An in-memory registry (tests, benchmarks, and an offline gateway)."""

    def __init__(self, devices: list[DeviceInfo] | None = None) -> None:
        self._d: dict[tuple[str, str], DeviceInfo] = {}
        for d in devices or []:
            self.put(d)
        self.calls = 0

    def put(self, info: DeviceInfo) -> None:
        self._d[(info.org, info.device)] = info

    def lookup(self, org: str, device: str) -> DeviceInfo | None:
        self.calls += 1
        return self._d.get((org, device))


class CachedRegistry:
    """Per-block cache over a :class:`DeviceRegistry`, with parsed verify keys."""

    def __init__(self, inner: DeviceRegistry, *, max_entries: int = 100_000) -> None:
        self._inner = inner
        self._max = max_entries
        self._height = -1
        self._cache: dict[
            tuple[str, str], tuple[DeviceInfo | None, nacl.signing.VerifyKey | None]
        ] = {}

    @property
    def height(self) -> int:
        """The last block height the cache was refreshed for (-1 before any)."""
        return self._height

    def on_block(self, height: int) -> None:
        """A new block was seen: forget every cached answer if the height moved."""
        if height != self._height:
            self._height = height
            self._cache.clear()

    def lookup(
        self, org: str, device: str
    ) -> tuple[DeviceInfo | None, nacl.signing.VerifyKey | None]:
        """``(info, verify_key)``; key is ``None`` if unknown or its hex is invalid."""
        key = (org, device)
        hit = self._cache.get(key)
        if hit is not None:
            return hit
        info = self._inner.lookup(org, device)
        vk: nacl.signing.VerifyKey | None = None
        if info is not None:
            try:
                vk = verify_key_from_hex(info.pubkey_hex)
            except KeyFileError:
                vk = None
        if len(self._cache) >= self._max:
            self._cache.clear()
        self._cache[key] = (info, vk)
        return info, vk
