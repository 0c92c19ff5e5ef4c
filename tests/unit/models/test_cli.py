"""``splitfed-models`` exit codes and output (inspect/list need no TensorFlow)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from models.cli import main
from models.manifest import artifact_dir


def test_inspect_manifest_prints_signatures_and_hashes(capsys: pytest.CaptureFixture[str]) -> None:
    d = artifact_dir("cnn1d", 1)
    assert main(["inspect", str(d)]) == 0
    out = capsys.readouterr().out
    assert "sha256 OK" in out and "MISMATCH" not in out
    assert "signature train" in out and "grad_activations float32[32, 64, 8]" in out


def test_inspect_single_file(capsys: pytest.CaptureFixture[str]) -> None:
    path = artifact_dir("mlp", 2) / "client.tflite"
    assert main(["inspect", str(path)]) == 0
    assert "signature grads" in capsys.readouterr().out


def test_inspect_tampered_copy_exits_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    shutil.copytree(artifact_dir("mlp", 1), tmp_path / "a")
    server = tmp_path / "a" / "server.tflite"
    data = bytearray(server.read_bytes())
    data[-100] ^= 0x01
    server.write_bytes(bytes(data))
    assert main(["inspect", str(tmp_path / "a")]) == 1
    captured = capsys.readouterr()
    assert "MISMATCH" in captured.out and "sha256" in captured.err


def test_inspect_garbage_exits_1(tmp_path: Path) -> None:
    bad = tmp_path / "x.tflite"
    bad.write_bytes(b"hello world, not a model")
    assert main(["inspect", str(bad)]) == 1


def test_usage_errors_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["inspect", "/nonexistent/file"]) == 2
    assert main(["build", "--model", "resnet"]) == 2
    assert main(["frobnicate"]) == 2


def test_list(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    assert "cnn1d cut1" in out and "mlp cut2" in out
