"""``splitfed-agent``: edge agent (command line).

Exit codes: 0 success, 1 runtime failure, 2 usage or configuration error.
"""

from __future__ import annotations

import sys

import click

from service.cli import run_click


@click.group(name="splitfed-agent", context_settings={"help_option_names": ["-h", "--help"]})
def cli() -> None:
    """iiot-splitfed edge agent."""


def main(argv: list[str] | None = None) -> int:
    """Console-script entry point; returns the process exit code."""
    return run_click(cli, argv, prog_name="splitfed-agent")


if __name__ == "__main__":
    sys.exit(main())

from agent.keys_cli import keys_group, provision  # noqa: E402

cli.add_command(keys_group)
cli.add_command(provision)

from agent.sensors.cli import sensors_group  # noqa: E402
from agent.simulator.cli import simulate_cmd  # noqa: E402

cli.add_command(sensors_group)
cli.add_command(simulate_cmd)

from agent.run_cli import config_group, run_cmd, status_cmd  # noqa: E402

cli.add_command(config_group)
cli.add_command(run_cmd)
cli.add_command(status_cmd)
