"""Sensor read speed: live samples and capture windows over Modbus TCP loopback and RTU on a pty.

Run: ``.venv/bin/python -m bench sensors``. Both transports are measured side by
side in the same run against the in-process simulator (pymodbus 3.16 server).
A pty moves bytes as fast as the kernel copies them and ignores the baud
rate, so the RTU figures are the software cost; the wire time the same
frames would need on a real 115200-baud 8N1 line (10 bits per byte, plus the
3.5-character inter-frame gaps) is reported next to them.
"""

from __future__ import annotations

import logging

import numpy as np

from agent.sensors.device import CaptureLayout, CaptureReader, RegisterMap, RegisterPoller
from agent.sensors.health import BackoffPolicy
from agent.sensors.modbus import PymodbusTransport, rtu_transport, tcp_transport
from agent.sensors.windowing import SampleWindower
from agent.simulator.core import LiveLayout, SimulatorCore
from agent.simulator.pty import PtyLink
from agent.simulator.server import SimulatedDevice
from agent.simulator.signals import ArraySignal, RecordCaptures
from bench.common import time_per_call, write_results

CHANNELS = 4
WINDOW = 256
BAUD = 115200


def _rtu_wire_s(frames: list[tuple[int, int]]) -> float:
    """Seconds on a real 8N1 line for (request bytes, response bytes) pairs, with 3.5-char gaps."""
    char = 10.0 / BAUD
    return sum((q + r + 7) * char for q, r in frames)


def _live_frames(rm: RegisterMap) -> list[tuple[int, int]]:
    return [(8, 5 + 2 * b.count) for b in rm.blocks]


def _capture_frames(channels: int, length: int) -> list[tuple[int, int]]:
    regs = [5] + [min(125, 2 * channels * length - a) for a in range(0, 2 * channels * length, 125)]
    regs += [2]
    frames = [(8, 5 + 2 * n) for n in regs]
    return [*frames, (13, 8)]  # ack write


def _measure(tr: PymodbusTransport, rm: RegisterMap, sim: SimulatedDevice) -> dict[str, float]:
    pol = BackoffPolicy(retries=0)
    live = RegisterPoller(name="live", unit=1, timeout=1.0, register_map=rm, policy=pol,
                          transport=tr)
    read_s = time_per_call(live.attempt, min_time=1.0)
    cap = CaptureReader(RegisterPoller(name="cap", unit=1, timeout=1.0, register_map=rm,
                                       policy=pol, transport=tr), CaptureLayout(base=2000))

    def one_capture() -> None:
        while cap.poll() is None:
            pass

    capture_s = time_per_call(one_capture, min_time=1.0)
    windower = SampleWindower(length=WINDOW, hop=WINDOW)

    def live_window() -> None:
        while windower.push(live.attempt()) is None:
            pass

    live_window_s = time_per_call(live_window, min_time=1.0, repeat=3)
    return {"live_read_ms": read_s * 1e3, "live_reads_per_s": 1.0 / read_s,
            "live_window_ms": live_window_s * 1e3, "capture_window_ms": capture_s * 1e3,
            "capture_windows_per_s": 1.0 / capture_s,
            "failures": float(live.health.snapshot().failures)}


def main() -> None:
    logging.getLogger("pymodbus").setLevel(logging.CRITICAL)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(CHANNELS, 4096)).astype(np.float32)
    layout = LiveLayout.default(CHANNELS)
    rm = RegisterMap(channels=layout.channels, label=layout.label, counter=layout.counter)
    records = [rng.normal(size=(1, 1000)).astype(np.float32) for _ in range(8)]
    results: dict[str, dict[str, float]] = {}
    with PtyLink() as link:
        core = SimulatorCore(live=ArraySignal(x, 1), layout=layout,
                             captures=RecordCaptures(records, list(range(8)), length=WINDOW),
                             capture_layout=CaptureLayout(base=2000))
        sim = SimulatedDevice(core, tcp_port=0, serial=link.device_path, baudrate=BAUD,
                              sample_rate=10_000.0).start()
        try:
            tcp = tcp_transport("127.0.0.1", sim.tcp_port or 0)
            rtu = rtu_transport(link.agent_path, baudrate=BAUD)
            try:
                results["tcp"] = _measure(tcp, rm, sim)
                results["rtu_pty"] = _measure(rtu, rm, sim)
            finally:
                tcp.close()
                rtu.close()
        finally:
            sim.stop()
    wire_live = _rtu_wire_s(_live_frames(rm))
    wire_cap = _rtu_wire_s(_capture_frames(1, WINDOW))
    results["rtu_115200_wire_only"] = {"live_read_ms": wire_live * 1e3,
                                       "live_reads_per_s": 1 / wire_live,
                                       "capture_window_ms": wire_cap * 1e3}
    t, r = results["tcp"], results["rtu_pty"]
    table = [
        ("live sample (4 x float32 + counter + label, 2 requests), TCP loopback",
         f"{t['live_read_ms']:.2f} ms ({t['live_reads_per_s']:.0f} reads/s)"),
        ("live sample, RTU on pty",
         f"{r['live_read_ms']:.2f} ms ({r['live_reads_per_s']:.0f} reads/s)"),
        ("live sample, RTU wire time at 115200 8N1 (computed)",
         f"{wire_live * 1e3:.2f} ms ({1 / wire_live:.0f} reads/s)"),
        (f"live window of {WINDOW} samples polled back to back, TCP",
         f"{t['live_window_ms']:.0f} ms"),
        (f"live window of {WINDOW} samples, RTU on pty", f"{r['live_window_ms']:.0f} ms"),
        (f"capture window 1 x {WINDOW} float32 (8 reads + ack), TCP",
         f"{t['capture_window_ms']:.2f} ms ({t['capture_windows_per_s']:.0f} windows/s)"),
        (f"capture window 1 x {WINDOW}, RTU on pty",
         f"{r['capture_window_ms']:.2f} ms ({r['capture_windows_per_s']:.0f} windows/s)"),
        (f"capture window 1 x {WINDOW}, RTU wire time at 115200 (computed)",
         f"{wire_cap * 1e3:.1f} ms"),
        ("RTU-pty / TCP time ratio (live sample, capture window)",
         f"{r['live_read_ms'] / t['live_read_ms']:.2f}, "
         f"{r['capture_window_ms'] / t['capture_window_ms']:.2f}"),
    ]
    write_results("sensors", {"channels": CHANNELS, "window": WINDOW, "baud": BAUD,
                              "results": results}, table)


if __name__ == "__main__":
    main()
