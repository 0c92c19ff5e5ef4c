from __future__ import annotations

import urllib.request

import pytest

from gateway.metrics import MetricsRegistry
from gateway.metrics_http import MetricsServer
from gateway.ratelimit import LogLimiter


def test_counter_and_gauge_render_in_exposition_format() -> None:
    reg = MetricsRegistry(prefix="splitfed_gateway_")
    reg.inc("rejected", {"reason": "replay", "device": "d1"}, help_text="Rejected messages")
    reg.inc("rejected", {"reason": "replay", "device": "d1"})
    reg.inc("rejected", {"reason": "bad_signature", "device": 'we"ird\n'})
    reg.set("round", 3, help_text="Current round")
    text = reg.render()
    assert "# TYPE splitfed_gateway_rejected_total counter" in text
    assert 'splitfed_gateway_rejected_total{device="d1",reason="replay"} 2' in text
    assert 'device="we\\"ird\\n"' in text
    assert "# TYPE splitfed_gateway_round gauge\nsplitfed_gateway_round 3\n" in text
    assert reg.value("rejected", {"device": "d1", "reason": "replay"}) == 2


def test_counter_cannot_go_down_and_kinds_do_not_mix() -> None:
    reg = MetricsRegistry()
    with pytest.raises(ValueError):
        reg.inc("x", amount=-1)
    reg.inc("x")
    with pytest.raises(ValueError):
        reg.set("x", 1.0)
    with pytest.raises(ValueError):
        reg.inc("bad name")


def test_http_endpoint_serves_metrics() -> None:
    reg = MetricsRegistry(prefix="t_")
    reg.inc("accepted", {"device": "a"})
    with (
        MetricsServer(reg, port=0) as srv,
        urllib.request.urlopen(f"http://127.0.0.1:{srv.port}/metrics", timeout=5) as r,
    ):
        body = r.read().decode()
        ctype = r.headers["Content-Type"]
    assert ctype.startswith("text/plain; version=0.0.4")
    assert 't_accepted_total{device="a"} 1' in body


def test_log_limiter_once_per_device_reason_per_interval() -> None:
    now = [1000.0]
    lim = LogLimiter(clock=lambda: now[0], interval=60.0)
    assert lim.check("d1", "replay").emit
    for _ in range(5):
        assert not lim.check("d1", "replay").emit
    assert lim.check("d1", "bad_signature").emit
    assert lim.check("d2", "replay").emit
    now[0] += 59.9
    assert not lim.check("d1", "replay").emit
    now[0] += 0.2
    d = lim.check("d1", "replay")
    assert d.emit and d.suppressed == 6
