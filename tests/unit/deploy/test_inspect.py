"""``splitfed inspect``: JSON summary on stdout and one documented exit code per outcome."""

from __future__ import annotations

import json
from pathlib import Path

import cbor2
import pytest

from deploy.cli import EXIT_BAD_SIGNATURE, EXIT_MALFORMED, main
from protocol.envelope import sign
from protocol.keys import public_key_hex
from protocol.messages import Endorsement, seal
from tests.unit.protocol.keys_for_tests import DEVICE_KEY, OTHER_KEY, SERVER_KEY, sample_batch

DEVICE_PUB = public_key_hex(DEVICE_KEY)


@pytest.fixture
def captured(tmp_path: Path) -> Path:
    path = tmp_path / "msg.cbor"
    path.write_bytes(seal(sample_batch(), signing_key=DEVICE_KEY, kid="dev-01"))
    return path


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(["inspect", *args])
    out, err = capsys.readouterr()
    return code, out, err


def test_exit_0_prints_header_and_tensor_summary(
    captured: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run(capsys, str(captured), "--pubkey", DEVICE_PUB)
    assert code == 0, err
    doc = json.loads(out)
    assert doc["signature"] == "valid"
    assert doc["envelope"]["kid"] == "dev-01"
    assert doc["envelope"]["content_type"] == "application/vnd.splitfed.activations+cbor"
    assert doc["envelope"]["alg"] == "EdDSA"
    msg = doc["message"]
    assert msg["type"] == "ActivationBatch"
    assert (msg["session"], msg["round"], msg["step"], msg["seq"]) == ("sess-1", 2, 5, 1)
    assert msg["activations"]["dtype"] == "float16"
    assert msg["activations"]["shape"] == [32, 64]
    acts = sample_batch().activations.astype("float64")
    assert msg["activations"]["max"] == pytest.approx(float(acts.max()))
    assert msg["labels"] == {"dtype": "int64", "shape": [32]}  # no label values printed
    assert msg["dp"]["noise_multiplier"] == pytest.approx(1.1)


def test_exit_0_without_key_says_signature_not_checked(
    captured: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run(capsys, str(captured))
    assert code == 0
    assert json.loads(out)["signature"].startswith("not checked")


def test_hex_input_and_stdin(
    captured: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    hex_file = captured.with_suffix(".hex")
    hex_file.write_text(captured.read_bytes().hex() + "\n")
    code, out, _ = run(capsys, "--hex", str(hex_file), "--pubkey", DEVICE_PUB)
    assert code == 0
    assert json.loads(out)["signature"] == "valid"

    class FakeStdin:
        buffer = captured.open("rb")

    monkeypatch.setattr("sys.stdin", FakeStdin)
    try:
        code, out, _ = run(capsys, "-")
    finally:
        FakeStdin.buffer.close()
    assert code == 0
    assert json.loads(out)["message"]["device"] == "dev-01"


def test_exit_1_unreadable_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, str(tmp_path / "missing.cbor"))
    assert code == 1
    assert out == ""
    assert err.count("\n") == 1
    assert "cannot read" in err


@pytest.mark.parametrize("args", [[], ["--pubkey", "nothex"], ["--pubkey", "00" * 31], ["--bogus"]])
def test_exit_2_usage(captured: Path, capsys: pytest.CaptureFixture[str], args: list[str]) -> None:
    code, out, _ = run(capsys, *args, *([str(captured)] if args else []))
    assert code == 2
    assert out == ""


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"garbage",
        b"\xd2\x84",  # truncated COSE_Sign1
        sign(b"\xa0", signing_key=DEVICE_KEY, kid="dev-01", content_type="application/json"),
        sign(
            b"\xa0",
            signing_key=DEVICE_KEY,
            kid="dev-01",
            content_type="application/vnd.splitfed.activations+cbor",
        ),
    ],
)
def test_exit_3_malformed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], data: bytes
) -> None:
    path = tmp_path / "bad.cbor"
    path.write_bytes(data)
    code, out, err = run(capsys, str(path), "--pubkey", DEVICE_PUB)
    assert code == EXIT_MALFORMED == 3
    assert out == ""
    assert err.startswith("splitfed inspect: malformed")
    assert err.count("\n") == 1


def test_exit_3_bad_hex(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "bad.hex"
    path.write_text("d2zz")
    assert run(capsys, "--hex", str(path))[0] == EXIT_MALFORMED


def test_exit_4_forged(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    forged = tmp_path / "forged.cbor"
    forged.write_bytes(seal(sample_batch(), signing_key=OTHER_KEY, kid="dev-01"))
    code, out, err = run(capsys, str(forged), "--pubkey", DEVICE_PUB)
    assert code == EXIT_BAD_SIGNATURE == 4
    assert out == ""
    assert err.startswith("splitfed inspect: bad signature")
    assert err.count("\n") == 1


def test_exit_4_altered_payload(captured: Path, capsys: pytest.CaptureFixture[str]) -> None:
    item = cbor2.loads(captured.read_bytes())
    protected, _, payload, signature = item.value
    wire = cbor2.loads(payload)
    wire["seq"] = 999
    captured.write_bytes(
        cbor2.dumps(cbor2.CBORTag(18, [protected, {}, cbor2.dumps(wire), signature]))
    )
    assert run(capsys, str(captured), "--pubkey", DEVICE_PUB)[0] == EXIT_BAD_SIGNATURE
    # without a key the forged message still decodes: the output says it was not checked
    code, out, _ = run(capsys, str(captured))
    assert code == 0
    assert json.loads(out)["message"]["seq"] == 999


def test_endorsed_message_shows_inner_header(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    inner = seal(sample_batch(), signing_key=DEVICE_KEY, kid="dev-01")
    outer = seal(
        Endorsement(org="acme", gateway="gw-acme", seq=3, envelope=inner),
        signing_key=SERVER_KEY,
        kid="gw-acme",
    )
    path = tmp_path / "endorsed.cbor"
    path.write_bytes(outer)
    code, out, _ = run(capsys, str(path), "--pubkey", public_key_hex(SERVER_KEY))
    assert code == 0
    msg = json.loads(out)["message"]
    assert msg["inner"]["kid"] == "dev-01"
    assert msg["envelope"]["bytes"] == len(inner)
