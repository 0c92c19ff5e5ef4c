from __future__ import annotations

from pathlib import Path

import numpy as np

from protocol.messages import weights_digest
from server.state import load_candidate, load_finalised, save_candidate, save_finalised


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


def test_candidate_is_used_only_for_the_same_proposal(tmp_path: Path) -> None:
    client = (np.full(3, 0.25, np.float32),)
    server = (np.full((2, 2), -1.0, np.float32),)
    save_candidate(tmp_path, 7, 5, client, server)
    got = load_candidate(tmp_path, version=7, weights_sha256=weights_digest(client))
    assert got is not None and got[0] == 5
    np.testing.assert_array_equal(got[2][0], server[0])
    assert load_candidate(tmp_path, version=8, weights_sha256=weights_digest(client)) is None
    assert load_candidate(tmp_path, version=7, weights_sha256="11" * 32) is None
    # the finalised file is a different file: a candidate never passes for a finalised version
    assert load_finalised(tmp_path, version=7, weights_sha256=weights_digest(client)) is None
