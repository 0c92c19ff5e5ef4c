"""The one console-script wrapper: run a click group, return the process exit code.

Every ``splitfed-*`` command uses :func:`run_click` as its ``main()``. Exit codes
are the same everywhere: 0 success, 1 runtime failure, 2 usage or configuration
error (click's own usage errors carry 2). click runs with
``standalone_mode=False`` so the wrapper, not click, decides:

* ``SystemExit`` / ``click.exceptions.Exit`` from a command: its code;
* a ``click.ClickException``: shown on stderr, then ``click_error_code`` if the
  command set one for all of them, else the exception's own ``exit_code``;
* ``click.exceptions.Abort`` (Ctrl-C at a prompt): 1;
* each ``(exception types, code)`` pair of ``errors``, in order: ``error: ...``
  on stderr and that code. Anything else is a bug and propagates.
"""

from __future__ import annotations

from collections.abc import Sequence

import click

__all__ = ["EXIT_FAILURE", "EXIT_OK", "EXIT_USAGE", "run_click"]

EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2

ErrorCodes = Sequence[tuple[type[BaseException] | tuple[type[BaseException], ...], int]]


def run_click(
    group: click.Command,
    argv: list[str] | None,
    *,
    prog_name: str,
    errors: ErrorCodes = (),
    click_error_code: int | None = None,
) -> int:
    """Run ``group`` on ``argv``; see the module docstring for the exit codes."""
    try:
        group.main(args=argv, prog_name=prog_name, standalone_mode=False)
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except click.exceptions.Exit as exc:
        return int(exc.exit_code)
    except click.ClickException as exc:
        exc.show()
        return int(exc.exit_code) if click_error_code is None else click_error_code
    except click.exceptions.Abort:
        return EXIT_FAILURE
    except BaseException as exc:
        for kinds, code in errors:
            if isinstance(exc, kinds):
                click.echo(f"error: {exc}", err=True)
                return code
        raise
    return EXIT_OK
