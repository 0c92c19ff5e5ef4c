"""Time to target and curve extraction from both systems' outputs."""

from __future__ import annotations

from bench.peers.measure import ProcSample
from bench.peers.report import (
    Curve,
    curve_from_flower,
    curve_from_ours,
    fmt_target,
    time_to_target,
)


def test_time_to_target_is_the_first_round_reaching_it() -> None:
    c = Curve(rounds=(1, 2, 3, 4), accuracy=(0.2, 0.61, 0.5, 0.7), wall_s=(5, 6, 7, 8))
    assert time_to_target(c, 0.6) == (2, 6)
    assert time_to_target(c, 0.9) is None
    assert fmt_target(None, 4) == "not reached in 4 rounds"
    assert fmt_target((2, 6.0), 4) == "round 2, 6.0 s"


def test_curves_from_both_outputs() -> None:
    flower = {"rounds": [{"round": 0, "accuracy": 0.1, "wall_s": 0.1, "since_launch_s": 4.0},
                         {"round": 1, "accuracy": 0.4, "wall_s": 1.0, "since_launch_s": 5.0}]}
    fc = curve_from_flower(flower)
    assert fc.rounds == (1,) and fc.accuracy == (0.4,) and fc.wall_s == (5.0,)
    ours = {"per_round": [{"round": 0, "accuracy": 0.3, "elapsed_s": 20.0},
                          {"round": 1, "accuracy": None, "elapsed_s": 21.0},
                          {"round": 2, "accuracy": 0.5, "elapsed_s": 22.0}]}
    oc = curve_from_ours(ours)
    assert oc.rounds == (1, 3) and oc.final == 0.5


def test_socket_bytes_filtered_by_peer_port() -> None:
    s = ProcSample(pid=1, cmdline=["x"], sockets={
        "127.0.0.1:5000 127.0.0.1:1883": (100, 10),
        "127.0.0.1:5001 127.0.0.1:502": (7, 3)})
    assert s.bytes_to(1883) == (100, 10)
    assert s.bytes_to(None) == (107, 13)
