"""``splitfed-agent run``, ``status`` and ``config check``.

Exit codes (all ``splitfed-agent`` commands):

====  =====================================================================
0     success
1     runtime failure (key, model, state or broker problem; reason on stderr)
2     usage error or invalid configuration (every problem listed)
3     ``status``: the agent is halted (privacy budget exhausted)
====  =====================================================================
"""

from __future__ import annotations

import json
import logging
import signal
import sys
from pathlib import Path
from types import FrameType

import click

from agent.config import load_config
from agent.status import read_status
from protocol.errors import ConfigError, SplitfedError

log = logging.getLogger(__name__)

EXIT_HALTED = 3


class ConfigInvalid(click.ClickException):
    """Configuration problems, one per line; exit code 2."""

    exit_code = 2

    def __init__(self, problems: list[str]) -> None:
        super().__init__("invalid configuration:\n" + "\n".join(f"  - {p}" for p in problems))


class RuntimeFailure(click.ClickException):
    exit_code = 1


class AgentHalted(click.ClickException):
    """``status`` of a halted agent: exit code 3, the reason on stderr.

    A ClickException, not ``click.exceptions.Exit``: with ``standalone_mode=False``
    click turns ``Exit`` into a return value that :func:`agent.cli.main` drops.
    """

    exit_code = EXIT_HALTED


_config_arg = click.option("--config", "config_path", required=True,
                           type=click.Path(dir_okay=False, path_type=Path),
                           help="Agent TOML file, e.g. /etc/splitfed/agent.toml.")


@click.group(name="config")
def config_group() -> None:
    """Validate configuration files."""


@config_group.command(name="check")
@click.argument("path", type=click.Path(dir_okay=False, path_type=Path))
def config_check(path: Path) -> None:
    """Report every problem in PATH at once (exit 2), or print a summary (exit 0)."""
    try:
        cfg = load_config(path)
    except ConfigError as exc:
        raise ConfigInvalid(exc.problems) from exc
    click.echo(json.dumps({"ok": True, "org": cfg.device.org, "device": cfg.device.id,
                           "sensors": [d.name for d in cfg.sensors.devices],
                           "epsilon_budget": cfg.privacy.epsilon_budget}))


@click.command(name="run")
@_config_arg
@click.option("--log-level", default="INFO", show_default=True,
              type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"]))
def run_cmd(config_path: Path, log_level: str) -> None:
    """Run the agent until SIGTERM/SIGINT (as the systemd service does)."""
    logging.basicConfig(level=log_level, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        cfg = load_config(config_path)
    except ConfigError as exc:
        raise ConfigInvalid(exc.problems) from exc
    from agent.app import AgentApp  # LiteRT and paho load only when running

    try:
        app = AgentApp(cfg)
    except SplitfedError as exc:
        raise RuntimeFailure(str(exc)) from exc

    def _term(signum: int, _frame: FrameType | None) -> None:
        log.info("signal %d: stopping", signum)
        app.stop()

    signal.signal(signal.SIGTERM, _term)
    signal.signal(signal.SIGINT, _term)
    try:
        app.run()
    except SplitfedError as exc:
        raise RuntimeFailure(str(exc)) from exc


@click.command(name="status")
@click.option("--config", "config_path", type=click.Path(dir_okay=False, path_type=Path),
              help="Agent TOML file (to find the state directory).")
@click.option("--state-dir", type=click.Path(file_okay=False, path_type=Path),
              help="State directory (instead of --config).")
def status_cmd(config_path: Path | None, state_dir: Path | None) -> None:
    """Print the running agent's status (connection, spool, epsilon, round, sensors)."""
    if state_dir is None:
        if config_path is None:
            raise click.UsageError("give --config or --state-dir")
        try:
            state_dir = load_config(config_path).device.state_dir
        except ConfigError as exc:
            raise ConfigInvalid(exc.problems) from exc
    try:
        st = read_status(state_dir / "status.json")
    except SplitfedError as exc:
        raise RuntimeFailure(str(exc)) from exc
    click.echo(json.dumps(st, indent=1, sort_keys=True))
    privacy = st.get("privacy", {})
    if privacy.get("halted"):
        reason = privacy.get("halt_reason") or "privacy budget exhausted"
        raise AgentHalted(f"agent halted: {reason}")
