"""Ed25519 key files: 0600 in a 0700 directory, permissive files refused, hex and key id."""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path

import nacl.signing
import pytest

from protocol.errors import KeyFileError
from protocol.keys import (
    generate_signing_key,
    key_id,
    load_signing_key,
    load_verify_key,
    public_key_hex,
    save_signing_key,
    verify_key_from_hex,
)

# RFC 8032 section 7.1, TEST 1: secret (seed) and public key.
RFC8032_SEED = "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60"
RFC8032_PUBLIC = "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a"


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_save_creates_0600_file_in_0700_dir(tmp_path: Path) -> None:
    key = generate_signing_key()
    target = save_signing_key(key, tmp_path / "state" / "keys" / "device.key")
    assert mode(target) == 0o600
    assert mode(target.parent) == 0o700
    assert target.read_text() == bytes(key).hex() + "\n"
    assert not list(target.parent.glob("*.tmp"))
    assert bytes(load_signing_key(target)) == bytes(key)


def test_save_tightens_an_existing_directory(tmp_path: Path) -> None:
    d = tmp_path / "keys"
    d.mkdir(mode=0o755)
    d.chmod(0o755)
    save_signing_key(generate_signing_key(), d / "k")
    assert mode(d) == 0o700


def test_save_refuses_to_overwrite(tmp_path: Path) -> None:
    first = generate_signing_key()
    path = save_signing_key(first, tmp_path / "k")
    with pytest.raises(KeyFileError, match="refusing to overwrite"):
        save_signing_key(generate_signing_key(), path)
    assert bytes(load_signing_key(path)) == bytes(first)
    second = generate_signing_key()
    save_signing_key(second, path, overwrite=True)
    assert bytes(load_signing_key(path)) == bytes(second)


@pytest.mark.parametrize("perm", [0o644, 0o640, 0o604, 0o660, 0o666, 0o620])
def test_group_or_world_accessible_key_is_refused(tmp_path: Path, perm: int) -> None:
    path = save_signing_key(generate_signing_key(), tmp_path / "k")
    path.chmod(perm)
    with pytest.raises(KeyFileError, match="chmod 600"):
        load_signing_key(path)
    path.chmod(0o400)  # owner read-only is fine
    load_signing_key(path)


def test_missing_and_malformed_key_files(tmp_path: Path) -> None:
    with pytest.raises(KeyFileError, match="does not exist"):
        load_signing_key(tmp_path / "nope")
    with pytest.raises(KeyFileError, match="regular file"):
        load_signing_key(tmp_path)
    bad = tmp_path / "bad"
    for content in ("abc", "zz" * 32, "00" * 31):
        bad.write_text(content)
        bad.chmod(0o600)
        with pytest.raises(KeyFileError):
            load_signing_key(bad)


def test_rfc8032_vector_hex_and_key_id(tmp_path: Path) -> None:
    path = tmp_path / "k"
    path.write_text(RFC8032_SEED + "\n")
    os.chmod(path, 0o600)  # noqa: PTH101
    key = load_signing_key(path)
    assert public_key_hex(key) == RFC8032_PUBLIC
    assert public_key_hex(key.verify_key) == RFC8032_PUBLIC
    expected_id = hashlib.sha256(bytes.fromhex(RFC8032_PUBLIC)).digest()[:16].hex()
    assert key_id(key) == key_id(key.verify_key) == expected_id
    assert len(expected_id) == 32
    pub = tmp_path / "k.pub"
    pub.write_text(RFC8032_PUBLIC + "\n")
    pub.chmod(0o644)  # public keys may be world-readable
    assert bytes(load_verify_key(pub)) == bytes.fromhex(RFC8032_PUBLIC)
    signature = key.sign(b"").signature
    verify_key_from_hex(RFC8032_PUBLIC).verify(b"", signature)


def test_verify_key_from_hex_refuses_garbage(tmp_path: Path) -> None:
    for bad in ("xyz", "00" * 31, "00" * 33, ""):
        with pytest.raises(KeyFileError):
            verify_key_from_hex(bad)
    with pytest.raises(KeyFileError):
        load_verify_key(tmp_path / "absent.pub")
    assert isinstance(verify_key_from_hex(" " + RFC8032_PUBLIC + "\n"), nacl.signing.VerifyKey)
