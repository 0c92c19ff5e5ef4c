"""`splitfed-server keys generate|public`: the command that produces server.pub."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest

from ledger_node.cli import main as ledger_main
from protocol.keys import load_signing_key, load_verify_key, public_key_hex
from server.cli import main


def test_public_writes_the_genesis_server_key(tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    assert ledger_main(["genesis", "--out", str(tmp_path / "c"), "--orgs", "org1"]) == 0
    capsys.readouterr()
    pub = tmp_path / "server.pub"
    assert main(["keys", "public", "--key", str(tmp_path / "c/keys/server.key"),
                 "--out", str(pub)]) == 0
    info = json.loads(capsys.readouterr().out)
    genesis = json.loads((tmp_path / "c/genesis.json").read_text())
    assert pub.read_text() == genesis["server"] + "\n" == info["public_key"] + "\n"
    assert bytes(load_verify_key(pub)).hex() == genesis["server"]


def test_generate_writes_a_private_key_and_its_pub(tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    key, pub = tmp_path / "keys" / "server.key", tmp_path / "server.pub"
    assert main(["keys", "generate", "--key", str(key), "--out", str(pub)]) == 0
    out = capsys.readouterr().out
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert pub.read_text().strip() == public_key_hex(load_signing_key(key))
    assert key.read_text().strip() not in out  # the seed is never printed
    assert main(["keys", "generate", "--key", str(key), "--out", str(pub)]) == 1
    assert "--force" in capsys.readouterr().err


def test_public_of_a_missing_key_is_a_clear_error(tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["keys", "public", "--key", str(tmp_path / "nope.key"),
                 "--out", str(tmp_path / "server.pub")]) == 1
    assert "nope.key does not exist" in capsys.readouterr().err
    assert not (tmp_path / "server.pub").exists()
