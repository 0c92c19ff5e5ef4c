"""``splitfed-agent sensors ...``: commissioning commands.

``sensors read --config FILE`` opens every configured device (or only
``--device NAME``), reads one sample (live) or one window (capture,
replay) from each and prints one JSON line per device. Exit codes: 0 every
device answered, 1 at least one device failed, 2 the configuration is
invalid (every problem is printed, one per line, on stderr).
"""

from __future__ import annotations

import json
import logging
import tomllib
from pathlib import Path
from typing import Any

import click
import numpy as np

from agent.sensors.config import SensorsConfig, parse_sensors_config
from protocol.errors import SensorError


class SensorReadFailed(click.ClickException):
    """At least one device did not answer (exit code 1)."""

    exit_code = 1


def load_sensors_config(path: Path) -> SensorsConfig:
    """Read a TOML file (a ``[sensors]`` table, or the sensors keys at top level)."""
    try:
        with path.open("rb") as fh:
            doc = tomllib.load(fh)
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise click.UsageError(f"{path}: {exc}") from exc
    table = doc.get("sensors", doc)
    config, problems = parse_sensors_config(table)
    if config is None:
        for p in problems:
            click.echo(p, err=True)
        raise click.UsageError(f"{path}: {len(problems)} configuration problem(s)")
    return config


@click.group(name="sensors")
def sensors_group() -> None:
    """Sensor commissioning."""


@sensors_group.command(name="read")
@click.option("--config", "config_path", required=True,
              type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--device", "only", default=None, help="read only this device")
@click.option("--timeout", default=5.0, show_default=True, help="seconds per window")
def read_cmd(config_path: Path, only: str | None, timeout: float) -> None:
    """Read every device once and print one JSON line each."""
    from agent.sensors.app import open_sensors
    from agent.sensors.config import SensorsConfig

    logging.getLogger("pymodbus").setLevel(logging.CRITICAL)
    config = load_sensors_config(config_path)
    if only is not None:
        try:
            config = SensorsConfig(devices=(config.device(only),))
        except KeyError:
            raise click.UsageError(f"no device named {only!r}") from None
    failed = 0
    sensors = open_sensors(config)
    try:
        for d in config.devices:
            out: dict[str, Any] = {"device": d.name}
            try:
                if d.name in sensors.readers:
                    sample = sensors.readers[d.name].read()
                    out.update(ok=True, values=[float(v) for v in sample.values],
                               label=sample.label, seq=sample.seq)
                else:
                    w = sensors.windows[d.name].next_window(timeout=timeout)
                    out.update(ok=True, shape=list(w.x.shape), label=w.label,
                               seq=w.source_seq, mean=[float(v) for v in np.mean(w.x, axis=1)])
            except SensorError as exc:
                failed += 1
                out.update(ok=False, error=f"{type(exc).__name__}: {exc}")
            counters = sensors.counters().get(d.name)
            if counters is not None:
                out["counters"] = {k: getattr(counters, k) for k in
                                   ("reads_ok", "timeouts", "exceptions", "crc_errors",
                                    "connection_errors", "retries")}
            click.echo(json.dumps(out))
    finally:
        sensors.close()
    if failed:
        raise SensorReadFailed(f"{failed} device(s) failed")
