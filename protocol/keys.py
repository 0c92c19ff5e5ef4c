"""Ed25519 key files.

A device, gateway, server, validator or org admin holds one Ed25519 signing
key. On disk it is the 32-byte seed, hex-encoded on one line, in a file of
mode 0600 inside a directory of mode 0700. :func:`load_signing_key` refuses a
key file that group or others can read, as OpenSSH does, because a readable
seed lets anyone on the board impersonate the device.

The *key id* is what goes in COSE ``kid`` headers and ledger registrations
when no human-chosen id is given: the first 16 bytes of SHA-256 over the raw
32-byte public key, hex-encoded (32 characters).

This module does file I/O and is therefore an adapter; the rest of
``protocol/`` is pure.
"""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path

import nacl.exceptions
import nacl.signing

from protocol.errors import KeyFileError

__all__ = [
    "generate_signing_key",
    "key_id",
    "load_signing_key",
    "load_verify_key",
    "public_key_hex",
    "save_signing_key",
    "verify_key_from_hex",
]

_SEED_HEX_LEN = 64


def generate_signing_key() -> nacl.signing.SigningKey:
    """A fresh Ed25519 key from the operating system's CSPRNG."""
    return nacl.signing.SigningKey.generate()


def public_key_hex(key: nacl.signing.SigningKey | nacl.signing.VerifyKey) -> str:
    """The raw 32-byte public key as lowercase hex."""
    vk = key.verify_key if isinstance(key, nacl.signing.SigningKey) else key
    return bytes(vk).hex()


def key_id(key: nacl.signing.SigningKey | nacl.signing.VerifyKey) -> str:
    """First 16 bytes of SHA-256(public key), hex: a stable, short key id."""
    vk = key.verify_key if isinstance(key, nacl.signing.SigningKey) else key
    return hashlib.sha256(bytes(vk)).digest()[:16].hex()


def verify_key_from_hex(text: str) -> nacl.signing.VerifyKey:
    """Parse a 64-hex-character public key; :class:`KeyFileError` if invalid."""
    try:
        raw = bytes.fromhex(text.strip())
    except ValueError as exc:
        raise KeyFileError(f"public key is not hex: {exc}") from exc
    if len(raw) != 32:
        raise KeyFileError(f"public key must be 32 bytes, got {len(raw)}")
    return nacl.signing.VerifyKey(raw)


def save_signing_key(
    key: nacl.signing.SigningKey, path: str | os.PathLike[str], *, overwrite: bool = False
) -> Path:
    """Write the seed to ``path`` (0600) creating its directory (0700).

    The file is written to a temporary name, fsynced and renamed, so a power
    cut leaves either the old key or the new one, never half a key.
    Refuses to replace an existing key unless ``overwrite`` is true.
    """
    target = Path(path)
    if target.exists() and not overwrite:
        raise KeyFileError(f"{target} already exists; refusing to overwrite a key")
    try:
        target.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        target.parent.chmod(0o700)
        tmp = target.with_name(target.name + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.fchmod(fd, 0o600)
            os.write(fd, (bytes(key).hex() + "\n").encode("ascii"))
            os.fsync(fd)
        finally:
            os.close(fd)
        tmp.replace(target)
        dir_fd = os.open(target.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except OSError as exc:
        raise KeyFileError(f"cannot write key file {target}: {exc.strerror}") from exc
    return target


def load_signing_key(path: str | os.PathLike[str]) -> nacl.signing.SigningKey:
    """Read a key written by :func:`save_signing_key`.

    Raises :class:`KeyFileError` if the file is missing, not a regular file,
    readable or writable by group/others, or does not hold a 32-byte hex seed.
    """
    p = Path(path)
    try:
        st = p.stat()
    except FileNotFoundError as exc:
        raise KeyFileError(f"key file {p} does not exist") from exc
    except OSError as exc:
        raise KeyFileError(f"cannot stat key file {p}: {exc.strerror}") from exc
    if not stat.S_ISREG(st.st_mode):
        raise KeyFileError(f"key file {p} is not a regular file")
    if st.st_mode & 0o077:
        raise KeyFileError(
            f"key file {p} has mode {stat.S_IMODE(st.st_mode):04o}; it must not be accessible "
            f"by group or others (run: chmod 600 {p})"
        )
    try:
        text = p.read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise KeyFileError(f"cannot read key file {p}: {exc}") from exc
    if len(text) != _SEED_HEX_LEN:
        raise KeyFileError(f"key file {p} must hold a 64-character hex seed")
    try:
        return nacl.signing.SigningKey(bytes.fromhex(text))
    except (ValueError, nacl.exceptions.CryptoError) as exc:
        raise KeyFileError(f"key file {p} does not hold a valid Ed25519 seed") from exc


def load_verify_key(path: str | os.PathLike[str]) -> nacl.signing.VerifyKey:
    """Read a public key file (64 hex characters); permissions are not checked."""
    p = Path(path)
    try:
        return verify_key_from_hex(p.read_text(encoding="ascii"))
    except OSError as exc:
        raise KeyFileError(f"cannot read public key file {p}: {exc.strerror}") from exc
