"""Pure Sparkplug B rules: topics, bdSeq wrap, seq numbering, rebirth detection."""

from __future__ import annotations

import pytest
from esio_spb_builder.core import sparkplug_b_pb2 as other_pb2

from agent.sparkplug import SparkplugSession, SparkplugTopics, bd_seq_of, is_rebirth
from protocol.errors import TopicError


def test_topics_and_bad_ids() -> None:
    t = SparkplugTopics("acme", "dev1")
    assert (t.nbirth, t.ndeath, t.ncmd) == ("spBv1.0/acme/NBIRTH/dev1",
                                            "spBv1.0/acme/NDEATH/dev1", "spBv1.0/acme/NCMD/dev1")
    assert t.device("DBIRTH", "p1") == "spBv1.0/acme/DBIRTH/dev1/p1"
    for bad in ("", "a/b", "a+", "#"):
        with pytest.raises(TopicError):
            SparkplugTopics(bad, "dev1")


def test_bd_seq_wraps_and_will_matches_birth() -> None:
    assert [bd_seq_of(n) for n in (0, 1, 255, 256, 257)] == [0, 1, 255, 0, 1]
    s = SparkplugSession(SparkplugTopics("acme", "dev1"), 255, ["a"])
    _, will = s.will()
    births = s.births_for({}, 3)
    nd = other_pb2.Payload.FromString(will)
    nb = other_pb2.Payload.FromString(births[0][1])
    assert nd.metrics[0].name == nb.metrics[0].name == "bdSeq"
    assert nd.metrics[0].long_value == nb.metrics[0].long_value == 255
    assert not nd.HasField("seq") and nb.seq == 0
    with pytest.raises(ValueError, match=r"0\.\.255"):
        SparkplugSession(SparkplugTopics("acme", "dev1"), 256)


def test_seq_restarts_at_each_birth_and_wraps() -> None:
    s = SparkplugSession(SparkplugTopics("acme", "dev1"), 0, [f"d{i}" for i in range(300)])
    seqs = [other_pb2.Payload.FromString(p).seq for _, p in s.births_for({}, 0)]
    assert seqs[:3] == [0, 1, 2] and seqs[255] == 255 and seqs[256] == 0
    again = [other_pb2.Payload.FromString(p).seq for _, p in s.births_for({}, 0)][:2]
    assert again == [0, 1]


def test_is_rebirth() -> None:
    p = other_pb2.Payload()
    m = p.metrics.add()
    m.name, m.datatype, m.boolean_value = "Node Control/Rebirth", 11, True
    assert is_rebirth(p.SerializeToString())
    m.boolean_value = False
    assert not is_rebirth(p.SerializeToString())
    assert not is_rebirth(b"\xff\xff not protobuf")
