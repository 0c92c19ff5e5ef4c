"""`splitfed-agent keys generate|show` and `provision`: what an operator sees."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest

from agent.cli import main
from protocol.ledger.registration import verify_registration_request


def _run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def test_generate_writes_private_key_0600_in_0700_dir(tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    state = tmp_path / "state"
    code, out, _ = _run(capsys, "keys", "generate", "--state-dir", str(state))
    assert code == 0
    info = json.loads(out)
    assert stat.S_IMODE(state.stat().st_mode) == 0o700
    assert stat.S_IMODE((state / "device.key").stat().st_mode) == 0o600
    assert len(info["public_key"]) == 64 and len(info["key_id"]) == 32
    # the private seed is never printed
    assert (state / "device.key").read_text().strip() not in out


def test_generate_names_the_state_directory_it_cannot_create(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # a state dir below a regular file cannot be created (for root too, unlike a 0500 parent)
    (tmp_path / "file").write_text("")
    state = tmp_path / "file" / "splitfed-agent"
    code, _, err = _run(capsys, "keys", "generate", "--state-dir", str(state))
    assert code == 1
    assert f"cannot create state directory {state}: Not a directory" in err
    assert f"install -d -m 0700 -o splitfed -g splitfed {state}" in err


def test_generate_refuses_to_overwrite_without_force(tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    _run(capsys, "keys", "generate", "--state-dir", str(tmp_path))
    first = (tmp_path / "device.key").read_text()
    code, _, err = _run(capsys, "keys", "generate", "--state-dir", str(tmp_path))
    assert code == 1
    assert "--force" in err
    assert (tmp_path / "device.key").read_text() == first
    code, _, _ = _run(capsys, "keys", "generate", "--state-dir", str(tmp_path), "--force")
    assert code == 0
    assert (tmp_path / "device.key").read_text() != first


def test_show_matches_generate_and_rejects_readable_key(tmp_path: Path,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    _, out, _ = _run(capsys, "keys", "generate", "--state-dir", str(tmp_path))
    code, shown, _ = _run(capsys, "keys", "show", "--state-dir", str(tmp_path))
    assert code == 0
    assert json.loads(shown)["public_key"] == json.loads(out)["public_key"]
    (tmp_path / "device.key").chmod(0o644)
    code, _, err = _run(capsys, "keys", "show", "--state-dir", str(tmp_path))
    assert code == 1
    assert "chmod 600" in err


def test_show_without_key_is_a_clear_error(tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = _run(capsys, "keys", "show", "--state-dir", str(tmp_path))
    assert code == 1
    assert "does not exist" in err


def test_provision_writes_request_signed_by_device_key(tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    _, out, _ = _run(capsys, "keys", "generate", "--state-dir", str(tmp_path))
    req = tmp_path / "dev.req"
    code, _, _ = _run(capsys, "provision", "--state-dir", str(tmp_path), "--org", "acme",
                      "--device", "press-07", "--out", str(req), "--capability", "cut=1")
    assert code == 0
    parsed = verify_registration_request(req.read_bytes())
    assert (parsed.org, parsed.device) == ("acme", "press-07")
    assert parsed.pubkey_hex == json.loads(out)["public_key"]
    assert dict(parsed.capabilities) == {"cut": "1"}


@pytest.mark.parametrize("device", ["a/b", "+", "dev#1", ""])
def test_provision_rejects_ids_that_break_topics(tmp_path: Path, device: str,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    _run(capsys, "keys", "generate", "--state-dir", str(tmp_path))
    code, _, _ = _run(capsys, "provision", "--state-dir", str(tmp_path), "--org", "acme",
                      "--device", device, "--out", str(tmp_path / "x.req"))
    assert code == 2
    assert not (tmp_path / "x.req").exists()
