from __future__ import annotations

import urllib.request

import pytest

from gateway.ratelimit import LogLimiter
from service.metrics import MetricsRegistry
from service.metrics_http import MetricsServer


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
    reg = MetricsRegistry(prefix="splitfed_t_")
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


def _exposed_by_the_real_stack() -> str:
    """Exposition of the gateway's and server's registries as their cores declare them."""
    from gateway.core import M_ACCEPTED, M_DEVICE_EPSILON, M_DUPLICATE, M_REJECTED

    reg = MetricsRegistry(prefix="splitfed_gateway_")
    for name, kind in [(M_ACCEPTED, "counter"), (M_REJECTED, "counter"),
                       (M_DUPLICATE, "counter"), ("forwarded", "counter"),
                       ("relayed", "counter"), ("server_rejected", "counter"),
                       ("rounds", "counter"), ("votes", "counter"), ("round", "gauge"),
                       ("block_height", "gauge"), ("devices_online", "gauge"),
                       (M_DEVICE_EPSILON, "gauge")]:
        reg.declare(name, kind, "help")
    reg.inc(M_ACCEPTED, {"type": "activations"})
    reg.set(M_DEVICE_EPSILON, 1.5, {"org": "acme", "device": "d1"})
    srv = MetricsRegistry(prefix="splitfed_server_")
    for name, kind in [("batches", "counter"), ("predictions", "counter"),
                       ("rejected", "counter"), ("round", "gauge"),
                       ("accuracy_ratio", "gauge"), ("model_version", "gauge")]:
        srv.declare(name, kind, "help")
    srv.set("accuracy_ratio", 0.5)
    texts = []
    for r in (reg, srv):
        with MetricsServer(r, host="127.0.0.1", port=0) as server, urllib.request.urlopen(
                f"http://127.0.0.1:{server.port}/metrics", timeout=5) as resp:
            texts.append(resp.read().decode())
    return "".join(texts)


def test_every_exposed_name_follows_the_naming_guide() -> None:
    from service.metrics import check_metric_name

    text = _exposed_by_the_real_stack()
    types = dict(line.split()[2:4] for line in text.splitlines() if line.startswith("# TYPE"))
    assert types["splitfed_device_epsilon_spent"] == "gauge"
    assert "splitfed_server_accuracy_ratio" in types
    for name, kind in types.items():
        family = name.removesuffix("_total") if kind == "counter" else name
        assert check_metric_name(family, kind) is None, name
        assert kind != "counter" or name.endswith("_total"), name
    for line in text.splitlines():
        if line and not line.startswith("#") and "{" in line:
            labels = {kv.split("=")[0] for kv in line[line.index("{") + 1:line.index("}")]
                      .split(",")}
            name = line[:line.index("{")]
            # per-device series only for the epsilon gauge; never per record or per seq
            assert "seq" not in labels and "record" not in labels, line
            assert "device" not in labels or name == "splitfed_device_epsilon_spent", line
    from prometheus_client.parser import text_string_to_metric_families

    fams = {f.name: f for f in text_string_to_metric_families(text)}
    assert fams["splitfed_gateway_accepted"].type == "counter"
    eps = fams["splitfed_device_epsilon_spent"].samples[0]
    assert eps.labels == {"org": "acme", "device": "d1"} and eps.value == 1.5


@pytest.mark.parametrize("name", ["x", "splitfed_X", "splitfed_rounds_total",
                                  "splitfed_latency_ms", "splitfed_a:b", "other_thing"])
def test_names_against_the_guide_are_refused(name: str) -> None:
    reg = MetricsRegistry(prefix="")
    with pytest.raises(ValueError, match="bad metric name"):
        reg.declare(name, "gauge", "help")
