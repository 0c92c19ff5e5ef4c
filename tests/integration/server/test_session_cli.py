"""`splitfed-server session create` against a real solo ledger node (in-process API)."""

from __future__ import annotations

from pathlib import Path

import pytest

from models.manifest import list_artifacts
from protocol.keys import generate_signing_key, save_signing_key
from server.cli import main
from service.ledger_client import LedgerClient
from tests.unit.ledger_node.conftest import Consortium

pytestmark = pytest.mark.integration


def _write(tmp_path: Path, url: str, chain: str, key: Path, **session: object) -> Path:
    sess = {
        "model_id": '"cnn1d"',
        "cut": "1",
        "rounds": "4",
        "sfl_mode": '"v2"',
        "groups": '{ g1 = ["org1", "org2"], g2 = ["org3"] }',
        "min_noise_multiplier": "1.1",
        "clip": "1.0",
        "max_epsilon": "6.0",
        "delta": "1e-5",
        "vote_quorum": "2",
    }
    sess.update({k: str(v) for k, v in session.items()})
    text = (
        f'[server]\nsession = "s7"\nsigning_key = "{key}"\n\n[ledger]\nurl = "{url}"\n'
        f'chain_id = "{chain}"\n\n[session]\n' + "\n".join(f"{k} = {v}" for k, v in sess.items())
    )
    p = tmp_path / "server.toml"
    p.write_text(text + "\n")
    return p


def test_session_create_writes_policy_and_hashes(
    tmp_path: Path, ledger: tuple[LedgerClient, Consortium], capsys: pytest.CaptureFixture[str]
) -> None:
    if not any(m.model_id == "cnn1d" and m.cut == 1 for m in list_artifacts()):
        pytest.fail("model artifacts are missing (models/artifacts is part of the package)")
    client, c = ledger
    key = save_signing_key(c.keys["server"], tmp_path / "k" / "server.key")
    cfg = _write(tmp_path, client.base_url, c.genesis.chain_id, key)
    assert main(["session", "create", "--config", str(cfg)]) == 0
    s = client.session("s7")
    m = next(a for a in list_artifacts() if a.model_id == "cnn1d" and a.cut == 1)
    assert s is not None and s.client_sha256 == m.client_sha256
    assert s.dp["min_noise_multiplier"] == 1.1 and s.rounds == 4 and s.sfl_mode == "v2"
    assert s.groups == {"g1": ["org1", "org2"], "g2": ["org3"]} and s.vote_quorum == 2
    # a second create is refused by the contract: runtime failure, exit 1
    assert main(["session", "create", "--config", str(cfg)]) == 1
    assert "invalid" in capsys.readouterr().err


def test_session_create_exit_codes(
    tmp_path: Path, ledger: tuple[LedgerClient, Consortium], capsys: pytest.CaptureFixture[str]
) -> None:
    client, c = ledger
    stranger = save_signing_key(generate_signing_key(), tmp_path / "k" / "x.key")
    bad = _write(
        tmp_path,
        client.base_url,
        c.genesis.chain_id,
        stranger,
        clip="-1",
        sfl_mode='"v3"',
        rounds="0",
    )
    assert main(["session", "create", "--config", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "session.clip" in err and "session.sfl_mode" in err and "session.rounds" in err
    if any(m.model_id == "cnn1d" and m.cut == 1 for m in list_artifacts()):
        # a key the ledger does not know as `server`: the node refuses the tx
        good = _write(tmp_path, client.base_url, c.genesis.chain_id, stranger)
        assert main(["session", "create", "--config", str(good)]) == 1
    assert main(["session", "create", "--config", str(tmp_path / "missing.toml")]) == 2
