from __future__ import annotations

from pathlib import Path

import numpy as np

from protocol.messages import weights_digest
from server.state import load_finalised, save_finalised


def test_finalised_halves_survive_a_restart_only_for_the_ledger_version(tmp_path: Path) -> None:
    client = (np.arange(6, dtype=np.float32).reshape(2, 3), np.ones(3, np.float32))
    server = (np.full((3, 2), 0.5, np.float32),)
    save_finalised(tmp_path, 4, client, server)
    got = load_finalised(tmp_path, version=4, weights_sha256=weights_digest(client))
    assert got is not None
    np.testing.assert_array_equal(got[0][0], client[0])
    np.testing.assert_array_equal(got[1][0], server[0])
    assert load_finalised(tmp_path, version=5, weights_sha256=weights_digest(client)) is None
    assert load_finalised(tmp_path, version=4, weights_sha256="00" * 32) is None
    (tmp_path / "finalised.npz").write_bytes(b"garbage")
    assert load_finalised(tmp_path, version=4, weights_sha256=weights_digest(client)) is None
    assert load_finalised(tmp_path / "none", version=1, weights_sha256="00" * 32) is None
