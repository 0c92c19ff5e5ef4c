"""Transport and privacy costs on this machine: accounting, noise, spool, MQTT end to end.

Run: ``.venv/bin/python -m bench transport``.  Ratios are measured side by side in one run.
"""

from __future__ import annotations

import math
import tempfile
import time
from pathlib import Path

import numpy as np

from agent.mqtt import MqttConfig, PahoPublisher
from agent.outbox import Outbox
from agent.privacy import (
    Accountant,
    GaussianRelease,
    analytic_gaussian_epsilon,
    privatize_activations,
    secure_rng,
)
from agent.privacy.composition import _pld_epsilon
from agent.spool import Spool
from bench.common import peak_rss_mib, time_per_call, write_results
from deploy.broker import MosquittoBroker


def _bench_accounting(tmp: Path) -> dict[str, float]:
    acc = Accountant(epsilon_budget=1e9, delta=1e-5, state_path=tmp / "acc.json")
    rec = iter(range(10**9))
    batch = 32

    def spend_batch() -> None:
        acc.spend([GaussianRelease(noise_multiplier=2.0,
                                   records=tuple(next(rec) for _ in range(batch)))])

    t_spend = time_per_call(spend_batch, min_time=1.0, repeat=3)
    mus = iter(np.linspace(0.1, 50.0, 10**6))
    t_analytic = time_per_call(lambda: analytic_gaussian_epsilon(mu=float(next(mus)),
                                                                 delta=1e-5), repeat=3)
    counts = iter(range(1, 10**6))
    t0 = time.perf_counter()
    n_pld = 5
    for _ in range(n_pld):
        _pld_epsilon(next(counts) / 4.0, (), 1e-5)
    t_pld = (time.perf_counter() - t0) / n_pld
    size = sum(f.stat().st_size for f in tmp.glob("acc.json*"))
    acc.close()
    return {"spend_batch32_s": t_spend, "records_tracked": float(acc.records_tracked),
            "analytic_epsilon_s": t_analytic, "pld_epsilon_s": t_pld,
            "state_file_bytes": float(size)}


def _bench_noise() -> dict[str, float]:
    a = np.random.default_rng(0).normal(size=(32, 256)).astype(np.float32)
    philox, pcg = secure_rng(), np.random.default_rng()
    t_philox = time_per_call(lambda: privatize_activations(a, clip_norm=1.0,
                                                           noise_multiplier=1.0, rng=philox))
    t_pcg = time_per_call(lambda: privatize_activations(a, clip_norm=1.0, noise_multiplier=1.0,
                                                        rng=pcg))
    return {"privatize_32x256_philox_s": t_philox, "privatize_32x256_pcg64_s": t_pcg}


def _bench_spool(tmp: Path) -> dict[str, float]:
    sp = Spool(tmp / "spool.db")
    payload = b"x" * 16_384

    def put_ack() -> None:
        sp.ack(sp.put("t", payload))

    t = time_per_call(put_ack, repeat=3)
    sp.close()
    return {"spool_put_ack_16k_s": t}


PAYLOAD = b"y" * 8192


def _build(seq: int) -> tuple[str, bytes]:
    return "splitfed/v1/acme/dev1/up", PAYLOAD


def _bench_mqtt(tmp: Path, n: int = 1500) -> dict[str, float]:
    out: dict[str, float] = {}
    users = {"dev1": "pw"}
    with MosquittoBroker(tmp / "broker", users=users) as broker:
        (tmp / "pw").write_text("pw\n")
        for inflight in (1, 20):
            d = tmp / f"dev-{inflight}"
            d.mkdir()
            spool = Spool(d / "spool.db")
            acc = Accountant(epsilon_budget=1e9, delta=1e-5, state_path=d / "acc.json")
            pub = PahoPublisher(MqttConfig(host=broker.host, port=broker.port, org="acme",
                                           device="dev1", username="dev1",
                                           password_file=tmp / "pw", max_inflight=inflight),
                                spool)
            outbox = Outbox(acc, spool, pub)
            for _ in range(n):   # spool first, then measure the drain alone
                outbox.release(_build,
                               [GaussianRelease(noise_multiplier=4.0, records=(0,))])
            t0 = time.perf_counter()
            pub.start()
            while spool.depth and time.perf_counter() - t0 < 300:
                time.sleep(0.01)
            out[f"drain_msgs_per_s_inflight_{inflight}"] = n / (time.perf_counter() - t0)
            t0 = time.perf_counter()
            for _ in range(200):
                outbox.release(_build,
                               [GaussianRelease(noise_multiplier=4.0, records=(0,))])
            out[f"release_s_inflight_{inflight}"] = (time.perf_counter() - t0) / 200
            pub.close()
            spool.close()
            acc.close()
    return out


def main() -> None:
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        data = {**_bench_accounting(tmp), **_bench_noise(), **_bench_spool(tmp),
                **_bench_mqtt(tmp)}
    data["peak_rss_mib"] = peak_rss_mib()
    ms = 1e3
    table = [
        ("accountant.spend, batch of 32 records (fsync'd)",
         f"{data['spend_batch32_s'] * ms:.2f} ms ({int(data['records_tracked'])} records "
         f"tracked, state {data['state_file_bytes'] / 1024:.0f} KiB)"),
        ("epsilon: analytic Gaussian vs dp_accounting PLD (same composition)",
         f"{data['analytic_epsilon_s'] * 1e6:.1f} us vs {data['pld_epsilon_s'] * ms:.1f} ms "
         f"(x{data['pld_epsilon_s'] / data['analytic_epsilon_s']:.0f})"),
        ("privatize 32x256: Philox (secure_rng) vs PCG64",
         f"{data['privatize_32x256_philox_s'] * 1e6:.0f} us vs "
         f"{data['privatize_32x256_pcg64_s'] * 1e6:.0f} us (x"
         f"{data['privatize_32x256_philox_s'] / data['privatize_32x256_pcg64_s']:.2f})"),
        ("spool put+ack, 16 KiB, synchronous=FULL", f"{data['spool_put_ack_16k_s'] * ms:.2f} ms"),
        ("MQTT drain 8 KiB msgs via Mosquitto, inflight 1 vs 20",
         f"{data['drain_msgs_per_s_inflight_1']:.0f} vs "
         f"{data['drain_msgs_per_s_inflight_20']:.0f} msg/s (x"
         f"{data['drain_msgs_per_s_inflight_20'] / data['drain_msgs_per_s_inflight_1']:.1f})"),
        ("Outbox.release while connected (spend+put), inflight 20",
         f"{data['release_s_inflight_20'] * ms:.2f} ms"),
        ("peak RSS", f"{data['peak_rss_mib']:.0f} MiB"),
    ]
    assert all(math.isfinite(v) for v in data.values())
    write_results("transport", data, table)


if __name__ == "__main__":
    main()
