"""Where datasets are read from by default, and the error when they are not there."""

from __future__ import annotations

from pathlib import Path

import pytest

from models.data import DATA_DIR_ENV, SHIPPED_DATA_DIR, check_dataset, default_data_dir
from protocol.errors import ConfigError

REPO = Path(__file__).resolve().parents[3]


def test_default_is_the_shipped_folder_without_the_env_var(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(DATA_DIR_ENV, raising=False)
    assert default_data_dir() == SHIPPED_DATA_DIR == REPO / "data"
    monkeypatch.setenv(DATA_DIR_ENV, "  ")
    assert default_data_dir() == SHIPPED_DATA_DIR


def test_env_var_overrides(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv(DATA_DIR_ENV, str(tmp_path))
    assert default_data_dir() == tmp_path


@pytest.mark.parametrize("name", ["PLAID", "ACSF1"])
def test_the_checkout_ships_what_demo_and_tests_need(name: str) -> None:
    train, test = check_dataset(SHIPPED_DATA_DIR, name)
    assert train.name == f"{name}_TRAIN.ts" and test.name == f"{name}_TEST.ts"
    assert train.read_text(encoding="utf-8").count("@data") == 1
    readme = (SHIPPED_DATA_DIR / "README.md").read_text()
    assert name in readme and "Dau" in readme


def test_missing_files_name_each_file_and_the_fix(tmp_path: Path) -> None:
    (tmp_path / "PLAID_TRAIN.ts").write_text("@data\n")
    with pytest.raises(ConfigError) as err:
        check_dataset(tmp_path, "PLAID")
    text = str(err.value)
    assert f"{tmp_path / 'PLAID_TEST.ts'} is missing" in text
    assert "PLAID_TRAIN.ts is missing" not in text
    assert DATA_DIR_ENV in text and str(SHIPPED_DATA_DIR) in text


def test_unreadable_file_is_reported(tmp_path: Path) -> None:
    (tmp_path / "X_TRAIN.ts").write_text("@data\n")
    (tmp_path / "X_TEST.ts").mkdir()  # unreadable as a file, for root too
    with pytest.raises(ConfigError, match=r"X_TEST.ts is unreadable: Is a directory"):
        check_dataset(tmp_path, "X")
