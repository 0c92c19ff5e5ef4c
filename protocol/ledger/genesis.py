"""Genesis: the chain's founding document and the initial state it implies.

A genesis file is JSON (human-reviewable; every org signs off on it out of
band before the chain starts)::

    {"chain_id": "plant-consortium", "time_ms": 1700000000000,
     "orgs": [{"id": "org1", "admin": "<hex>", "validator": "<hex>|null",
               "gateway": "<hex>|null"}, ...],
     "server": "<hex>|null",
     "ordering": {"kind": "solo"|"etcd", "block_max_txs": 100, "block_max_ms": 200}}

An org with a ``validator`` key is a validator organisation. Block 0's
``prev_hash`` is SHA-256 of the canonical CBOR of this document, so two nodes
with different genesis files disagree from the very first header.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from protocol.errors import ConfigError
from protocol.keys import generate_signing_key, public_key_hex, save_signing_key
from protocol.ledger.codec import dumps, sha256

__all__ = ["Genesis", "OrgSpec", "load_genesis", "write_genesis_with_keys"]

_ORDERINGS = ("solo", "etcd")


def _is_hex_key(v: object) -> bool:
    if not isinstance(v, str) or len(v) != 64:
        return False
    try:
        bytes.fromhex(v)
    except ValueError:
        return False
    return True


@dataclass(frozen=True, slots=True, kw_only=True)
class OrgSpec:
    id: str
    admin: str
    validator: str | None = None
    gateway: str | None = None

    def __post_init__(self) -> None:
        problems = []
        if not self.id or "/" in self.id or len(self.id) > 64:
            problems.append(f"org id {self.id!r} is not a valid id")
        for name in ("admin", "validator", "gateway"):
            v = getattr(self, name)
            if (v is not None or name == "admin") and not _is_hex_key(v):
                problems.append(f"org {self.id}: {name} must be a 64-hex-character public key")
        if problems:
            raise ConfigError(problems)


@dataclass(frozen=True, slots=True, kw_only=True)
class Genesis:
    chain_id: str
    time_ms: int
    orgs: tuple[OrgSpec, ...]
    server: str | None = None
    ordering: str = "solo"
    block_max_txs: int = 100
    block_max_ms: int = 200

    def __post_init__(self) -> None:
        problems = []
        if not self.chain_id or "/" in self.chain_id or len(self.chain_id) > 64:
            problems.append("chain_id must be 1..64 characters without '/'")
        if not self.orgs:
            problems.append("genesis needs at least one org")
        ids = [o.id for o in self.orgs]
        if len(set(ids)) != len(ids):
            problems.append("org ids must be unique")
        if not any(o.validator for o in self.orgs):
            problems.append("at least one org must have a validator key")
        if self.server is not None and not _is_hex_key(self.server):
            problems.append("server must be a 64-hex-character public key")
        if self.ordering not in _ORDERINGS:
            problems.append(f"ordering must be one of {_ORDERINGS}")
        if not 1 <= self.block_max_txs <= 10_000:
            problems.append("block_max_txs must be in [1, 10000]")
        if not 1 <= self.block_max_ms <= 600_000:
            problems.append("block_max_ms must be in [1, 600000]")
        if self.time_ms < 0:
            problems.append("time_ms must be >= 0")
        if problems:
            raise ConfigError(problems)

    def to_json_obj(self) -> dict[str, Any]:
        return {
            "chain_id": self.chain_id,
            "time_ms": self.time_ms,
            "orgs": [
                {"id": o.id, "admin": o.admin, "validator": o.validator, "gateway": o.gateway}
                for o in self.orgs
            ],
            "server": self.server,
            "ordering": {
                "kind": self.ordering,
                "block_max_txs": self.block_max_txs,
                "block_max_ms": self.block_max_ms,
            },
        }

    @classmethod
    def from_json_obj(cls, obj: Mapping[str, Any]) -> Genesis:
        try:
            ordering = obj.get("ordering", {})
            return cls(
                chain_id=obj["chain_id"],
                time_ms=int(obj.get("time_ms", 0)),
                orgs=tuple(
                    OrgSpec(
                        id=o["id"],
                        admin=o["admin"],
                        validator=o.get("validator"),
                        gateway=o.get("gateway"),
                    )
                    for o in obj["orgs"]
                ),
                server=obj.get("server"),
                ordering=ordering.get("kind", "solo"),
                block_max_txs=int(ordering.get("block_max_txs", 100)),
                block_max_ms=int(ordering.get("block_max_ms", 200)),
            )
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise ConfigError(f"genesis document is malformed: {exc!r}") from exc

    def digest(self) -> bytes:
        """SHA-256 of the canonical CBOR of the document: block 0's prev_hash."""
        return sha256(dumps(self.to_json_obj()))

    def initial_state(self) -> dict[str, Any]:
        state: dict[str, Any] = {
            "chain": {"chain_id": self.chain_id, "ordering": self.ordering},
            "validators": {o.id: o.validator for o in self.orgs if o.validator},
        }
        for o in self.orgs:
            state[f"org/{o.id}"] = {
                "admin": o.admin,
                "validator": o.validator,
                "gateway": o.gateway,
                "added_height": 0,
            }
            state[f"id/{o.id}/admin"] = o.admin
            if o.validator:
                state[f"id/{o.id}/validator"] = o.validator
            if o.gateway:
                state[f"id/{o.id}/gateway"] = o.gateway
        if self.server:
            state["id/server"] = self.server
        return state


def load_genesis(path: str | Path) -> Genesis:
    try:
        obj = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read genesis file {path}: {exc}") from exc
    return Genesis.from_json_obj(obj)


def write_genesis_with_keys(
    out_dir: str | Path,
    *,
    chain_id: str,
    org_ids: Sequence[str],
    ordering: str = "solo",
    block_max_txs: int = 100,
    block_max_ms: int = 200,
    time_ms: int = 0,
    validators: Sequence[str] | None = None,
) -> Genesis:
    """Generate keys for every org role and the server; write ``genesis.json``.

    Keys go to ``out_dir/keys/<org>-{admin,validator,gateway}.key`` and
    ``out_dir/keys/server.key`` (0600 in a 0700 directory). ``validators``
    lists the validator orgs (default: all).
    """
    out = Path(out_dir)
    keys = out / "keys"
    vset = set(org_ids if validators is None else validators)
    orgs = []
    for org in org_ids:
        pubs: dict[str, str | None] = {}
        for role in ("admin", "validator", "gateway"):
            if role == "validator" and org not in vset:
                pubs[role] = None
                continue
            k = generate_signing_key()
            save_signing_key(k, keys / f"{org}-{role}.key")
            pubs[role] = public_key_hex(k)
        orgs.append(
            OrgSpec(
                id=org,
                admin=str(pubs["admin"]),
                validator=pubs["validator"],
                gateway=pubs["gateway"],
            )
        )
    server = generate_signing_key()
    save_signing_key(server, keys / "server.key")
    g = Genesis(
        chain_id=chain_id,
        time_ms=time_ms,
        orgs=tuple(orgs),
        server=public_key_hex(server),
        ordering=ordering,
        block_max_txs=block_max_txs,
        block_max_ms=block_max_ms,
    )
    (out / "genesis.json").write_text(json.dumps(g.to_json_obj(), indent=2) + "\n")
    return g
