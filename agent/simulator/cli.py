"""``splitfed-agent simulate``: a simulated Modbus device for demos and tests.

Serves a ``.ts`` dataset (``--dataset PATH``, optionally only the record
indices listed in ``--indices FILE``) or the synthetic vibration generator
(``--dataset synthetic-vibration``) over Modbus TCP (``--tcp-port``, 0 =
any free port) and/or RTU on a serial device (``--serial DEV``) or on a new
pty pair (``--pty``; the agent opens the printed ``serial`` path).

When listening it prints ONE JSON line on stdout, e.g.
``{"ready": true, "tcp_port": 5020, "serial": "/dev/pts/7", "unit": 1,
"mode": "capture", "channels": 1, "length": 256}``, then serves until
SIGTERM or SIGINT and exits 0. Exit 2: bad options; 1: cannot start.
"""

from __future__ import annotations

import json
import logging
import signal
import sys
import threading
from pathlib import Path

import click

from agent.simulator.build import build_core
from agent.simulator.core import FaultPlan
from protocol.errors import SplitfedError


class SimulatorStartFailed(click.ClickException):
    """The servers could not start (exit code 1)."""

    exit_code = 1


def _read_indices(path: Path) -> list[int]:
    text = path.read_text()
    try:
        values = json.loads(text) if text.lstrip().startswith("[") else \
            [int(t) for t in text.replace(",", " ").split()]
    except ValueError as exc:
        raise click.UsageError(f"{path}: not a list of integers") from exc
    if not values or not all(isinstance(v, int) and v >= 0 for v in values):
        raise click.UsageError(f"{path}: need non-negative integers")
    return [int(v) for v in values]


@click.command(name="simulate")
@click.option("--dataset", required=True, help="PATH to a .ts file, or synthetic-vibration")
@click.option("--indices", "indices_path", type=click.Path(exists=True, dir_okay=False,
                                                         path_type=Path))
@click.option("--mode", type=click.Choice(["live", "capture"]), default=None,
              help="default: capture for datasets, live for synthetic-vibration")
@click.option("--tcp-port", type=click.IntRange(0, 65535), default=None)
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--serial", "serial_dev", default=None, help="serve RTU on this serial device")
@click.option("--pty", "use_pty", is_flag=True, help="serve RTU on a new pty pair")
@click.option("--baudrate", default=115200, show_default=True)
@click.option("--unit", type=click.IntRange(1, 247), default=1, show_default=True)
@click.option("--length", type=click.IntRange(1, 16000), default=256, show_default=True)
@click.option("--channels", type=click.IntRange(1, 64), default=1, show_default=True)
@click.option("--sample-rate", type=click.FloatRange(min=0.1), default=100.0, show_default=True)
@click.option("--period", type=click.FloatRange(min=0.0), default=0.0, show_default=True,
              help="advance the capture every PERIOD s even without ack (0: ack only)")
@click.option("--seed", default=0, show_default=True)
@click.option("--fail-rate", type=click.FloatRange(0, 1), default=0.0)
@click.option("--silent-rate", type=click.FloatRange(0, 1), default=0.0)
@click.option("--delay-ms", type=click.FloatRange(min=0), default=0.0)
@click.option("--exception-code", type=click.IntRange(1, 255), default=4)
@click.option("--window-mode", type=click.Choice(["resample", "pad", "crop"]),
              default="resample", show_default=True,
              help="how a dataset record becomes a capture of --length samples "
                   "(use the model manifest's window mode)")
@click.option("--once", is_flag=True,
              help="serve each dataset record once (no looping), then keep the last capture")
def simulate_cmd(dataset: str, indices_path: Path | None, mode: str | None,
                 tcp_port: int | None, host: str, serial_dev: str | None, use_pty: bool,
                 baudrate: int, unit: int, length: int, channels: int, sample_rate: float,
                 period: float, seed: int, fail_rate: float, silent_rate: float,
                 delay_ms: float, exception_code: int, window_mode: str, once: bool) -> None:
    """Serve a simulated Modbus device until SIGTERM/SIGINT."""
    from agent.simulator.pty import PtyLink
    from agent.simulator.server import SimulatedDevice

    if tcp_port is None and serial_dev is None and not use_pty:
        raise click.UsageError("give --tcp-port, --serial or --pty")
    if serial_dev is not None and use_pty:
        raise click.UsageError("--serial and --pty are exclusive")
    logging.getLogger("pymodbus").setLevel(logging.CRITICAL)
    mode = mode or ("live" if dataset == "synthetic-vibration" else "capture")
    faults = FaultPlan(fail_rate=fail_rate, silent_rate=silent_rate, delay_ms=delay_ms,
                       exception_code=exception_code)
    indices = _read_indices(indices_path) if indices_path is not None else None
    try:
        core = build_core(dataset=dataset, indices=indices, mode=mode, length=length,
                          channels=channels, seed=seed, sample_rate=sample_rate,
                          period=period, faults=faults, loop=not once,
                          window_mode=window_mode)
    except (ValueError, SplitfedError) as exc:
        raise click.UsageError(f"--dataset/--indices: {exc}") from exc
    stop = threading.Event()
    old = {s: signal.signal(s, lambda *_: stop.set()) for s in (signal.SIGTERM, signal.SIGINT)}
    link = PtyLink().start() if use_pty else None
    agent_serial = link.agent_path if link is not None else serial_dev
    sim = SimulatedDevice(core, unit=unit, tcp_host=host, tcp_port=tcp_port,
                          serial=link.device_path if link is not None else serial_dev,
                          baudrate=baudrate, sample_rate=sample_rate)
    try:
        try:
            sim.start()
        except RuntimeError as exc:
            raise SimulatorStartFailed(str(exc)) from exc
        n_ch = core.channels
        click.echo(json.dumps({"ready": True, "tcp_port": sim.tcp_port, "serial": agent_serial,
                               "unit": unit, "mode": mode, "channels": n_ch,
                               "length": length}), nl=True)
        sys.stdout.flush()
        while not stop.wait(0.5):
            pass
    finally:
        sim.stop()
        if link is not None:
            link.stop()
        for s, h in old.items():
            signal.signal(s, h)
