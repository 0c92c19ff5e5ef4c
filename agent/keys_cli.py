"""``splitfed-agent keys ...`` and ``splitfed-agent provision``: the device's identity.

An operator commissioning a board runs, as the service user::

    splitfed-agent keys generate --state-dir /var/lib/splitfed-agent
    splitfed-agent keys show     --state-dir /var/lib/splitfed-agent
    splitfed-agent provision --org acme --device press-07 --out press-07.req

``provision`` writes a registration request signed by the device key (proof
that the board holds it). The organisation's admin submits it to the ledger
(``splitfed-ledger register-device`` / a ``device_register`` transaction);
the gateways accept the device's messages from the next block on.
The private key never leaves the state directory and is never printed.

Exit codes: 0 ok; 1 key problem (missing, unreadable, permissions, exists);
2 usage error.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import click

from protocol import keys
from protocol.errors import KeyFileError, SplitfedError
from protocol.topics import validate_id

DEFAULT_STATE_DIR = Path("/var/lib/splitfed-agent")
KEY_FILE_NAME = "device.key"

_state_dir_option = click.option(
    "--state-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=lambda: Path(os.environ.get("STATE_DIRECTORY", str(DEFAULT_STATE_DIR)).split(":")[0]),
    show_default="$STATE_DIRECTORY or /var/lib/splitfed-agent",
    help="Directory holding the device key (created 0700).",
)


def key_path(state_dir: Path) -> Path:
    """Where the device's signing key lives inside its state directory."""
    return state_dir / KEY_FILE_NAME


class KeyCommandError(click.ClickException):
    """A key operation failed; exit code 1 with a one-line reason."""

    exit_code = 1


def _ensure_state_dir(state_dir: Path) -> None:
    """Create a missing state directory 0700, or fail naming the directory and the fix."""
    if state_dir.is_dir():
        return
    try:
        state_dir.mkdir(mode=0o700, parents=True)
    except OSError as exc:
        raise KeyCommandError(
            f"cannot create state directory {state_dir}: {exc.strerror}; create it for the "
            f"service user first, e.g. as root: install -d -m 0700 -o splitfed -g splitfed "
            f"{state_dir}") from exc


@click.group(name="keys")
def keys_group() -> None:
    """Create and show the device's Ed25519 identity."""


@keys_group.command(name="generate")
@_state_dir_option
@click.option("--force", is_flag=True, help="Replace an existing key (the old identity is lost).")
def keys_generate(state_dir: Path, force: bool) -> None:
    """Generate the device key (0600 in a 0700 state directory, created if missing)."""
    _ensure_state_dir(state_dir)
    path = key_path(state_dir)
    try:
        key = keys.generate_signing_key()
        keys.save_signing_key(key, path, overwrite=force)
    except KeyFileError as exc:
        hint = " (use --force to replace it)" if path.exists() and not force else ""
        raise KeyCommandError(f"{exc}{hint}") from exc
    click.echo(json.dumps({"key_file": str(path), "public_key": keys.public_key_hex(key),
                           "key_id": keys.key_id(key)}))


@keys_group.command(name="show")
@_state_dir_option
def keys_show(state_dir: Path) -> None:
    """Print the public key and key id (never the private key)."""
    try:
        key = keys.load_signing_key(key_path(state_dir))
    except KeyFileError as exc:
        raise KeyCommandError(str(exc)) from exc
    click.echo(json.dumps({"public_key": keys.public_key_hex(key), "key_id": keys.key_id(key)}))


@click.command(name="provision")
@_state_dir_option
@click.option("--org", required=True, help="Organisation id the device belongs to.")
@click.option("--device", required=True, help="Device id (used in MQTT topics).")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="Where to write the signed registration request.")
@click.option("--capability", "capabilities", multiple=True, metavar="KEY=VALUE",
              help="Declared capability, e.g. cut=1 or cpu=cortex-a72 (repeatable).")
def provision(state_dir: Path, org: str, device: str, out: Path,
              capabilities: tuple[str, ...]) -> None:
    """Write a registration request signed by the device key, for the org admin."""
    from protocol.ledger.registration import make_registration_request

    try:
        validate_id(org, what="org")
        validate_id(device, what="device")
    except SplitfedError as exc:
        raise click.UsageError(str(exc)) from exc
    caps: dict[str, str] = {}
    for item in capabilities:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise click.UsageError(f"--capability must be KEY=VALUE, got {item!r}")
        caps[name] = value
    try:
        key = keys.load_signing_key(key_path(state_dir))
        request = make_registration_request(signing_key=key, org=org, device=device,
                                            capabilities=caps)
        out.write_bytes(request)
    except KeyFileError as exc:
        raise KeyCommandError(str(exc)) from exc
    except OSError as exc:
        raise KeyCommandError(f"cannot write {out}: {exc.strerror}") from exc
    click.echo(json.dumps({"request": str(out), "org": org, "device": device,
                           "public_key": keys.public_key_hex(key)}))
