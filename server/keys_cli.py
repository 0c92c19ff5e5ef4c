"""``splitfed-server keys ...``: the server's Ed25519 identity and ``server.pub``.

Every gradient and round command the server sends is signed with its key;
devices verify them with the public key in ``server.pub`` (``[model]
server_key`` of ``agent.toml``), and the consortium's ``genesis.json`` carries
the same key in its ``server`` field. Two ways to get both:

* the consortium already ran ``splitfed-ledger genesis`` (it writes
  ``keys/server.key`` and puts its public key in ``genesis.json``)::

      splitfed-server keys public --key consortium/keys/server.key --out server.pub

* a new server key (then give the printed ``public_key`` to whoever writes
  the genesis document)::

      splitfed-server keys generate --key /etc/splitfed/keys/server.key --out server.pub

``server.pub`` is one line of 64 hex characters (``protocol.keys``), public,
readable by anyone. The private key is written 0600 in a 0700 directory and
is never printed.

Exit codes: 0 ok; 1 key problem (missing, unreadable, permissions, exists);
2 usage error.
"""

from __future__ import annotations

import json
from pathlib import Path

import click
import nacl.signing

from protocol import keys
from protocol.errors import KeyFileError


class KeyCommandError(click.ClickException):
    """A key operation failed; exit code 1 with a one-line reason."""

    exit_code = 1


def write_public_key(key: nacl.signing.SigningKey, out: Path) -> None:
    """Write ``out`` as one line of hex (0644), the format ``load_verify_key`` reads."""
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(keys.public_key_hex(key) + "\n", encoding="ascii")
        out.chmod(0o644)
    except OSError as exc:
        raise KeyCommandError(f"cannot write public key file {out}: {exc.strerror}") from exc


def _report(key: nacl.signing.SigningKey, key_file: Path, out: Path) -> None:
    click.echo(json.dumps({"key_file": str(key_file), "public_key_file": str(out),
                           "public_key": keys.public_key_hex(key), "key_id": keys.key_id(key)}))


_key_option = click.option("--key", "key_file", type=click.Path(dir_okay=False, path_type=Path),
                           required=True, help="The server's private key file.")
_out_option = click.option("--out", type=click.Path(dir_okay=False, path_type=Path),
                           required=True, help="Where to write server.pub (hex public key).")


@click.group(name="keys")
def keys_group() -> None:
    """Create the server key and write server.pub (the genesis `server` field)."""


@keys_group.command(name="generate")
@_key_option
@_out_option
@click.option("--force", is_flag=True, help="Replace an existing key (the old identity is lost).")
def keys_generate(key_file: Path, out: Path, force: bool) -> None:
    """Generate a server key (0600, directory 0700) and write its server.pub."""
    try:
        key = keys.generate_signing_key()
        keys.save_signing_key(key, key_file, overwrite=force)
    except KeyFileError as exc:
        hint = " (use --force to replace it)" if key_file.exists() and not force else ""
        raise KeyCommandError(f"{exc}{hint}") from exc
    write_public_key(key, out)
    _report(key, key_file, out)


@keys_group.command(name="public")
@_key_option
@_out_option
def keys_public(key_file: Path, out: Path) -> None:
    """Write server.pub for an existing key, e.g. consortium/keys/server.key from genesis."""
    try:
        key = keys.load_signing_key(key_file)
    except KeyFileError as exc:
        raise KeyCommandError(str(exc)) from exc
    write_public_key(key, out)
    _report(key, key_file, out)
