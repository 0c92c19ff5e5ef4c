"""``splitfed``: operator tools and the one-machine stack (command line).

Exit codes: 0 success, 1 runtime failure, 2 usage or configuration error.
"""

from __future__ import annotations

import sys

import click


@click.group(name="splitfed", context_settings={"help_option_names": ["-h", "--help"]})
def cli() -> None:
    """iiot-splitfed operator tools and the one-machine stack."""


def main(argv: list[str] | None = None) -> int:
    """Console-script entry point; returns the process exit code."""
    try:
        cli.main(args=argv, prog_name="splitfed", standalone_mode=False)
    except click.exceptions.Exit as exc:
        return int(exc.exit_code)
    except click.ClickException as exc:
        exc.show()
        return int(exc.exit_code)
    except click.exceptions.Abort:
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
