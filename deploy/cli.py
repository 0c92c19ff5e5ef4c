"""``splitfed``: operator tools and the one-machine stack (command line).

Exit codes: 0 success, 1 runtime failure, 2 usage or configuration error.
``splitfed inspect`` adds 3 (malformed message or over a limit) and 4
(signature does not verify: forged, altered, wrong key or algorithm).
"""

from __future__ import annotations

import binascii
import json
import sys
from pathlib import Path

import click

from protocol.errors import BadSignature, KeyFileError, ProtocolError
from protocol.keys import verify_key_from_hex
from protocol.summary import summarize_envelope
from service.cli import run_click

EXIT_MALFORMED = 3
EXIT_BAD_SIGNATURE = 4


@click.group(name="splitfed", context_settings={"help_option_names": ["-h", "--help"]})
def cli() -> None:
    """iiot-splitfed operator tools and the one-machine stack."""


class _Failed(click.ClickException):
    """A one-line reason on stderr; subclasses set the exit code."""

    def show(self, file: object = None) -> None:
        click.echo(f"splitfed inspect: {self.format_message()}", err=True)


class _Unreadable(_Failed):
    exit_code = 1


class _Malformed(_Failed):
    exit_code = EXIT_MALFORMED


class _Forged(_Failed):
    exit_code = EXIT_BAD_SIGNATURE


@cli.command()
@click.argument("file", type=click.Path(dir_okay=False, allow_dash=True, path_type=str))
@click.option("--pubkey", metavar="HEX", help="Signer's Ed25519 public key (64 hex characters).")
@click.option("--hex", "is_hex", is_flag=True, help="FILE holds hex text (mosquitto_sub -F %x).")
def inspect(file: str, pubkey: str | None, is_hex: bool) -> None:
    """Decode a captured envelope and print its header and a tensor summary as JSON.

    With --pubkey the signature is verified. Exit codes: 0 decoded (and
    verified), 1 FILE unreadable, 2 usage error or bad --pubkey, 3 malformed
    message or over a limit, 4 signature does not verify.
    """
    verify_key = None
    if pubkey is not None:
        try:
            verify_key = verify_key_from_hex(pubkey)
        except KeyFileError as exc:
            raise click.BadParameter(str(exc), param_hint="--pubkey") from exc
    try:
        data = sys.stdin.buffer.read() if file == "-" else Path(file).read_bytes()
    except OSError as exc:
        raise _Unreadable(f"cannot read {file}: {exc.strerror}") from exc
    if is_hex:
        try:
            data = binascii.unhexlify(b"".join(data.split()))
        except (binascii.Error, ValueError) as exc:
            raise _Malformed(f"malformed: {file} is not hex text") from exc
    try:
        summary = summarize_envelope(data, verify_key=verify_key)
    except BadSignature as exc:
        raise _Forged(f"bad signature: {exc}") from exc
    except ProtocolError as exc:
        raise _Malformed(f"malformed: {exc}") from exc
    click.echo(json.dumps(summary, indent=2, sort_keys=True))


from deploy.stack_cli import demo_cmd, stack_group  # noqa: E402

cli.add_command(demo_cmd)
cli.add_command(stack_group)

from audit.cli import audit_group  # noqa: E402  (a tool beside deploy: see audit/__init__.py)

cli.add_command(audit_group)


def main(argv: list[str] | None = None) -> int:
    """Console-script entry point; returns the process exit code."""
    return run_click(cli, argv, prog_name="splitfed")


if __name__ == "__main__":
    sys.exit(main())
