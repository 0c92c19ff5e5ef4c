"""MQTT topic names of the ``splitfed/v1`` namespace: build, parse, filter.

Namespace (MQTT 5; QoS 1 unless stated)::

    splitfed/v1/{org}/{device}/up           device -> gateway: activations, round-end weights
    splitfed/v1/{org}/{device}/down         gateway -> device: gradients, commands
    splitfed/v1/{org}/{device}/state        retained JSON birth, LWT death (bdSeq)
    splitfed/v1/{org}/{device}/predictions  JSON class probabilities for integrators
    splitfed/v1/{org}/model                 retained: finalised client half + ledger proof
    splitfed/v1/{org}/events                JSON round / model events
    splitfed/v1/central/{org}/up            gateway -> server: endorsed envelopes, aggregates
    splitfed/v1/central/{org}/down          server -> gateway: gradients, commands, predictions

Every id (org, device, group) is 1-64 characters of ``[A-Za-z0-9_.-]`` and does
not start with ``.``; this excludes the MQTT wildcards ``+`` and ``#``, the
level separator ``/``, the ``$`` prefix of system and shared-subscription
topics, whitespace and NUL. ``central`` is reserved and cannot be an org id,
because ``splitfed/v1/central/{org}/up`` would otherwise read as the ``up``
topic of device ``{org}`` in org ``central``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final

from protocol.errors import TopicError

__all__ = [
    "CENTRAL",
    "DEVICE_KINDS",
    "KINDS",
    "PREFIX",
    "Topic",
    "central_down",
    "central_filter",
    "central_up",
    "devices_filter",
    "down",
    "events",
    "model",
    "parse",
    "predictions",
    "shared_central_filter",
    "state",
    "up",
    "validate_id",
]

PREFIX: Final = "splitfed/v1"
CENTRAL: Final = "central"
DEVICE_KINDS: Final = ("up", "down", "state", "predictions")
ORG_KINDS: Final = ("model", "events")
CENTRAL_KINDS: Final = ("up", "down")
KINDS: Final = (*DEVICE_KINDS, *ORG_KINDS, "central_up", "central_down")

_ID = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9_.-]{0,63}")
_MAX_TOPIC_LEN = 512


def validate_id(value: str, *, what: str = "id") -> str:
    """Return ``value`` if it is a valid namespace id, else raise :class:`TopicError`."""
    if not isinstance(value, str):
        raise TopicError(f"{what} must be a string, got {type(value).__name__}")
    if _ID.fullmatch(value) is None:
        shown = value[:70].encode("unicode_escape").decode("ascii")
        raise TopicError(
            f"{what} {shown!r} is not 1-64 characters of [A-Za-z0-9_.-] (not starting with '.')"
        )
    return value


def _org(org: str) -> str:
    validate_id(org, what="org")
    if org == CENTRAL:
        raise TopicError(f"org id {CENTRAL!r} is reserved for gateway <-> server topics")
    return org


def _device_topic(org: str, device: str, kind: str) -> str:
    return f"{PREFIX}/{_org(org)}/{validate_id(device, what='device')}/{kind}"


def up(org: str, device: str) -> str:
    """``splitfed/v1/{org}/{device}/up``"""
    return _device_topic(org, device, "up")


def down(org: str, device: str) -> str:
    """``splitfed/v1/{org}/{device}/down``"""
    return _device_topic(org, device, "down")


def state(org: str, device: str) -> str:
    """``splitfed/v1/{org}/{device}/state``"""
    return _device_topic(org, device, "state")


def predictions(org: str, device: str) -> str:
    """``splitfed/v1/{org}/{device}/predictions``"""
    return _device_topic(org, device, "predictions")


def model(org: str) -> str:
    """``splitfed/v1/{org}/model``"""
    return f"{PREFIX}/{_org(org)}/model"


def events(org: str) -> str:
    """``splitfed/v1/{org}/events``"""
    return f"{PREFIX}/{_org(org)}/events"


def central_up(org: str) -> str:
    """``splitfed/v1/central/{org}/up``"""
    return f"{PREFIX}/{CENTRAL}/{_org(org)}/up"


def central_down(org: str) -> str:
    """``splitfed/v1/central/{org}/down``"""
    return f"{PREFIX}/{CENTRAL}/{_org(org)}/down"


@dataclass(frozen=True, slots=True, kw_only=True)
class Topic:
    """A parsed topic. ``kind`` is one of :data:`KINDS`; ``device`` is None for org topics."""

    kind: str
    org: str
    device: str | None = None

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise TopicError(f"unknown topic kind {self.kind!r}")
        _org(self.org)
        if (self.kind in DEVICE_KINDS) != (self.device is not None):
            raise TopicError(f"topic kind {self.kind!r} and device {self.device!r} do not fit")
        if self.device is not None:
            validate_id(self.device, what="device")

    def __str__(self) -> str:
        if self.device is not None:
            return _device_topic(self.org, self.device, self.kind)
        if self.kind == "central_up":
            return central_up(self.org)
        if self.kind == "central_down":
            return central_down(self.org)
        return f"{PREFIX}/{self.org}/{self.kind}"


def parse(topic: str) -> Topic:
    """Parse a concrete topic name (no wildcards) of the namespace; :class:`TopicError` if not."""
    if not isinstance(topic, str):
        raise TopicError(f"topic must be a string, got {type(topic).__name__}")
    if len(topic) > _MAX_TOPIC_LEN:
        raise TopicError(f"topic longer than {_MAX_TOPIC_LEN} characters")
    parts = topic.split("/")
    if len(parts) < 4 or f"{parts[0]}/{parts[1]}" != PREFIX:
        raise TopicError(f"topic {topic[:80]!r} is not under {PREFIX}/")
    rest = parts[2:]
    if len(rest) == 3 and rest[0] == CENTRAL and rest[2] in CENTRAL_KINDS:
        return Topic(kind=f"central_{rest[2]}", org=rest[1])
    if len(rest) == 3 and rest[2] in DEVICE_KINDS:
        return Topic(kind=rest[2], org=rest[0], device=rest[1])
    if len(rest) == 2 and rest[1] in ORG_KINDS:
        return Topic(kind=rest[1], org=rest[0])
    raise TopicError(f"topic {topic[:80]!r} is not a {PREFIX} topic")


def devices_filter(org: str, kind: str) -> str:
    """Gateway subscription to one kind of every device of ``org``.

    ``splitfed/v1/{org}/+/{kind}``
    """
    if kind not in DEVICE_KINDS:
        raise TopicError(f"kind must be one of {DEVICE_KINDS}, got {kind!r}")
    return f"{PREFIX}/{_org(org)}/+/{kind}"


def central_filter(kind: str = "up") -> str:
    """Subscription for every org's central topic: ``splitfed/v1/central/+/{kind}``."""
    if kind not in CENTRAL_KINDS:
        raise TopicError(f"kind must be one of {CENTRAL_KINDS}, got {kind!r}")
    return f"{PREFIX}/{CENTRAL}/+/{kind}"


def shared_central_filter(group: str, kind: str = "up") -> str:
    """MQTT 5 shared subscription for server workers.

    ``$share/{group}/splitfed/v1/central/+/{kind}``
    """
    return f"$share/{validate_id(group, what='share group')}/{central_filter(kind)}"
