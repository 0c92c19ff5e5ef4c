"""Strict parsing of API query/path numbers and body lengths (pure)."""

from __future__ import annotations

import pytest

from ledger_node.errors import BadRequestError, BodyTooLargeError
from ledger_node.params import (
    MAX_INT,
    DecimalParam,
    FlagParam,
    IntParam,
    QuerySpec,
    body_length,
    parse_query,
    path_int,
)

SPEC: QuerySpec = {"height": IntParam(0), "timeout": DecimalParam(10.0, hi=3600.0),
        "certified": FlagParam()}


def test_defaults_and_good_values() -> None:
    assert parse_query([], SPEC) == {"height": 0, "timeout": 10.0, "certified": False}
    assert parse_query([("height", "17"), ("timeout", "0.250"), ("certified", "1")], SPEC) == {
        "height": 17, "timeout": 0.25, "certified": True}
    assert parse_query([("timeout", "3600")], SPEC)["timeout"] == 3600.0
    assert path_int("height", str(MAX_INT)) == MAX_INT


@pytest.mark.parametrize(("name", "raw"), [
    ("timeout", "nan"), ("timeout", "inf"), ("timeout", "-inf"), ("timeout", "-0.1"),
    ("timeout", "1e3"), ("timeout", "3600.001"), ("timeout", ""), ("timeout", "0x10"),
    ("timeout", "1_0"), ("height", "-1"), ("height", "1.0"), ("height", "１"),
    ("height", " 1"), ("height", "+1"), ("height", "1" * 19), ("certified", "true"),
    ("certified", ""),
])
def test_bad_values_name_the_parameter(name: str, raw: str) -> None:
    with pytest.raises(BadRequestError) as err:
        parse_query([(name, raw)], SPEC)
    assert err.value.name == name and name in str(err.value)


def test_unknown_and_repeated_parameters() -> None:
    with pytest.raises(BadRequestError, match="unknown query parameter"):
        parse_query([("timeuot", "1")], SPEC)
    with pytest.raises(BadRequestError, match="more than once"):
        parse_query([("height", "1"), ("height", "1")], SPEC)
    with pytest.raises(BadRequestError, match=r"allowed: none"):
        parse_query([("x", "1")], {})


def test_body_length() -> None:
    assert body_length("10", cap=10) == 10
    for raw in (None, "", "0"):
        with pytest.raises(BadRequestError, match="body"):
            body_length(raw, cap=10)
    for raw in ("-1", "abc", "1.5", "0x10", "+5", "5, 7", " 5"):
        with pytest.raises(BadRequestError, match="Content-Length") as err:
            body_length(raw, cap=10)
        assert not isinstance(err.value, BodyTooLargeError)
    for raw in ("11", "9" * 40):
        with pytest.raises(BodyTooLargeError):
            body_length(raw, cap=10)
