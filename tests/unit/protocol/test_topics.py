"""Topic namespace: builders, parser, filters, and ids that must be refused."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocol import topics
from protocol.errors import TopicError
from protocol.topics import Topic, parse, validate_id
from tests.unit.protocol.strategies import ids


def test_builders() -> None:
    assert topics.up("acme", "pump-7") == "splitfed/v1/acme/pump-7/up"
    assert topics.down("acme", "pump-7") == "splitfed/v1/acme/pump-7/down"
    assert topics.state("acme", "pump-7") == "splitfed/v1/acme/pump-7/state"
    assert topics.predictions("acme", "pump-7") == "splitfed/v1/acme/pump-7/predictions"
    assert topics.model("acme") == "splitfed/v1/acme/model"
    assert topics.events("acme") == "splitfed/v1/acme/events"
    assert topics.central_up("acme") == "splitfed/v1/central/acme/up"
    assert topics.central_down("acme") == "splitfed/v1/central/acme/down"


def test_filters() -> None:
    assert topics.devices_filter("acme", "up") == "splitfed/v1/acme/+/up"
    assert topics.devices_filter("acme", "state") == "splitfed/v1/acme/+/state"
    assert topics.central_filter() == "splitfed/v1/central/+/up"
    assert topics.shared_central_filter("workers") == "$share/workers/splitfed/v1/central/+/up"
    assert topics.shared_central_filter("w", "down") == "$share/w/splitfed/v1/central/+/down"
    with pytest.raises(TopicError):
        topics.devices_filter("acme", "model")
    with pytest.raises(TopicError):
        topics.shared_central_filter("a/b")
    with pytest.raises(TopicError):
        topics.central_filter("state")


@pytest.mark.parametrize(
    ("topic", "expected"),
    [
        ("splitfed/v1/acme/pump-7/up", Topic(kind="up", org="acme", device="pump-7")),
        ("splitfed/v1/acme/p.7/predictions", Topic(kind="predictions", org="acme", device="p.7")),
        ("splitfed/v1/acme/model", Topic(kind="model", org="acme")),
        ("splitfed/v1/acme/events", Topic(kind="events", org="acme")),
        ("splitfed/v1/central/acme/up", Topic(kind="central_up", org="acme")),
        ("splitfed/v1/central/acme/down", Topic(kind="central_down", org="acme")),
        # a device may be called "model" or "central": the level count disambiguates
        ("splitfed/v1/acme/central/up", Topic(kind="up", org="acme", device="central")),
    ],
)
def test_parse(topic: str, expected: Topic) -> None:
    assert parse(topic) == expected
    assert str(expected) == topic


@pytest.mark.parametrize(
    "topic",
    [
        "splitfed/v1/acme/+/up",
        "splitfed/v1/#",
        "splitfed/v1/acme/pump/up/extra",
        "splitfed/v2/acme/pump/up",
        "splitfed/v1/acme/pump/sideways",
        "splitfed/v1/acme//up",
        "splitfed/v1/central/model",
        "splitfed/v1/central/acme/state",
        "splitfed/v1/acme",
        "$share/g/splitfed/v1/central/acme/up",
        "/splitfed/v1/acme/model",
        "",
        "splitfed/v1/" + "a" * 65 + "/model",
        "splitfed/v1/acme/pump 7/up",
        "splitfed/v1/acme/pump\x00/up",
        "splitfed/v1/.hidden/model",
    ],
)
def test_parse_refuses(topic: str) -> None:
    with pytest.raises(TopicError):
        parse(topic)


@pytest.mark.parametrize(
    "bad",
    ["", "+", "#", "a+b", "a#", "a/b", "$SYS", "$share", " a", "a b", "a\tb", "a\nb",
     "a\x00", ".hidden", "a" * 65, "émile", "a:b", 7, None, b"abc"],
)  # fmt: skip
def test_bad_ids_are_refused(bad: object) -> None:
    with pytest.raises(TopicError):
        validate_id(bad)  # type: ignore[arg-type]
    if isinstance(bad, str):
        with pytest.raises(TopicError):
            topics.up("acme", bad)
        with pytest.raises(TopicError):
            topics.up(bad, "pump")


def test_good_ids() -> None:
    for good in ("a", "A-b_c.d", "0", "-x", "_", "a" * 64, "pump.7."):
        assert validate_id(good) == good


def test_central_is_reserved_as_org() -> None:
    for build in (topics.model, topics.events, topics.central_up):
        with pytest.raises(TopicError, match="reserved"):
            build("central")
    with pytest.raises(TopicError, match="reserved"):
        topics.up("central", "pump")


@settings(max_examples=200, deadline=None)
@given(
    kind=st.sampled_from(topics.KINDS),
    org=ids.filter(lambda o: o != "central"),
    device=ids,
)
def test_build_parse_round_trip(kind: str, org: str, device: str) -> None:
    t = Topic(kind=kind, org=org, device=device if kind in topics.DEVICE_KINDS else None)
    assert parse(str(t)) == t


def test_topic_dataclass_validates() -> None:
    with pytest.raises(TopicError):
        Topic(kind="up", org="acme")
    with pytest.raises(TopicError):
        Topic(kind="model", org="acme", device="pump")
    with pytest.raises(TopicError):
        Topic(kind="nope", org="acme")
