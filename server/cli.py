"""``splitfed-server``: central server (command line).

Commands: ``run --config FILE`` (train the session), ``session create
--config FILE`` (write the ``session_create`` tx and wait for its block),
``keys generate|public`` (the server key and ``server.pub``,
:mod:`server.keys_cli`).

Exit codes: 0 success, 1 runtime failure (ledger refused or unreachable,
broker unusable, key refused), 2 usage or configuration error (every
problem listed).
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import click

from protocol.errors import ConfigError, SplitfedError
from server.config import ServerConfig, load_config
from server.keys_cli import keys_group
from service.cli import run_click
from service.lifecycle import serve


@click.group(name="splitfed-server", context_settings={"help_option_names": ["-h", "--help"]})
def cli() -> None:
    """iiot-splitfed central server."""


def _config(path: Path) -> ServerConfig:
    try:
        return load_config(path)
    except ConfigError as exc:
        for p in exc.problems:
            click.echo(f"config error: {p}", err=True)
        raise SystemExit(2) from exc


@cli.command()
@click.option("--config", "config_path", required=True, type=click.Path(path_type=Path))
@click.option(
    "--log-level",
    default="INFO",
    show_default=True,
    type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"]),
)
def run(config_path: Path, log_level: str) -> None:
    """Train the session's server half, aggregate, evaluate and propose versions."""
    from server.app import ServerApp

    logging.basicConfig(level=log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    cfg = _config(config_path)
    try:
        app = ServerApp(cfg)
    except ConfigError as exc:
        click.echo(f"config error: {exc}", err=True)
        raise SystemExit(2) from exc
    except SplitfedError as exc:
        click.echo(f"error: {exc}", err=True)
        raise SystemExit(1) from exc

    serve(app)


@cli.group()
def session() -> None:
    """Session set-up on the ledger."""


@session.command("create")
@click.option("--config", "config_path", required=True, type=click.Path(path_type=Path))
@click.option("--timeout", default=30.0, show_default=True, help="Seconds to wait for the block.")
def session_create(config_path: Path, timeout: float) -> None:
    """Write the session tx (model hashes, DP policy, rounds, groups) to the ledger."""
    from models.manifest import artifact_dir, find_manifest, load_manifest
    from protocol.keys import load_signing_key
    from protocol.ledger.tx import make_tx
    from server.session import session_body
    from service.ledger_client import LedgerClient

    cfg = _config(config_path)
    spec = cfg.session_spec
    if spec is None:
        click.echo("config error: a [session] table is required", err=True)
        raise SystemExit(2)
    try:
        if cfg.manifest is not None:
            m = load_manifest(cfg.manifest)
        else:
            m = load_manifest(artifact_dir(spec.model_id, spec.cut) / "manifest.json")
        find_manifest(m.client_sha256, cfg.manifest)
        body = session_body(cfg.session, spec, m)
        tx = make_tx(
            "session_create",
            body,
            signing_key=load_signing_key(cfg.signing_key),
            submitter="server",
            chain_id=cfg.chain_id,
        )
        receipt = LedgerClient(cfg.ledger_url).submit_and_wait(tx, timeout=timeout)
    except ConfigError as exc:
        click.echo(f"config error: {exc}", err=True)
        raise SystemExit(2) from exc
    except SplitfedError as exc:
        click.echo(f"error: {exc}", err=True)
        raise SystemExit(1) from exc
    if not receipt.valid:
        click.echo(f"error: the ledger marked the session tx invalid: {receipt.reason}", err=True)
        raise SystemExit(1)
    click.echo(f"session {cfg.session} created at height {receipt.height} (tx {receipt.txid})")


cli.add_command(keys_group)


def main(argv: list[str] | None = None) -> int:
    """Console-script entry point; returns the process exit code."""
    # ClickException keeps its own code: 2 for usage errors, 1 for KeyCommandError
    return run_click(cli, argv, prog_name="splitfed-server")


if __name__ == "__main__":
    sys.exit(main())
