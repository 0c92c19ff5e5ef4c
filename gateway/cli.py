"""``splitfed-gateway``: organisation gateway (command line).

Exit codes: 0 success (clean stop on SIGTERM/SIGINT), 1 runtime failure
(broker or ledger unusable at start, key file refused), 2 usage or
configuration error (every problem listed).
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import click

from protocol.errors import ConfigError, SplitfedError
from service.cli import run_click
from service.lifecycle import serve


@click.group(name="splitfed-gateway", context_settings={"help_option_names": ["-h", "--help"]})
def cli() -> None:
    """iiot-splitfed organisation gateway."""


@cli.command()
@click.option(
    "--config",
    "config_path",
    required=True,
    type=click.Path(path_type=Path),
    help="TOML config file (see docs/gateway.md).",
)
@click.option(
    "--log-level",
    default="INFO",
    show_default=True,
    type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"]),
)
@click.option("--check", is_flag=True, help="Validate the config and exit.")
def run(config_path: Path, log_level: str, check: bool) -> None:
    """Verify, batch and forward this organisation's device messages."""
    from gateway.app import GatewayApp
    from gateway.config import load_config

    logging.basicConfig(level=log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        cfg = load_config(config_path)
    except ConfigError as exc:
        for p in exc.problems:
            click.echo(f"config error: {p}", err=True)
        raise SystemExit(2) from exc
    if check:
        click.echo(f"config OK: org {cfg.org}, session {cfg.session}")
        return
    try:
        app = GatewayApp(cfg)
    except SplitfedError as exc:
        click.echo(f"error: {exc}", err=True)
        raise SystemExit(1) from exc

    serve(app)


def main(argv: list[str] | None = None) -> int:
    """Console-script entry point; returns the process exit code."""
    return run_click(cli, argv, prog_name="splitfed-gateway", click_error_code=2)


if __name__ == "__main__":
    sys.exit(main())
