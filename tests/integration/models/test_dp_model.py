"""The committed mlp_dp artifacts send rows of norm 1 (real LiteRT, no TensorFlow)."""

from __future__ import annotations

import numpy as np
import pytest

from models.manifest import artifact_dir
from models.runtime import ClientRuntime


@pytest.mark.parametrize("cut", [1, 2])
def test_rows_have_unit_norm_so_clipping_loses_nothing(cut: int) -> None:
    client = ClientRuntime.from_manifest(artifact_dir("mlp_dp", cut))
    rng = np.random.default_rng(3)
    x = client.normalise(rng.standard_normal((5, 1, 256)).astype(np.float32) * 40.0)
    a = client.forward(x)
    assert a.shape == (5, (16, 8)[cut - 1])
    np.testing.assert_allclose(np.linalg.norm(a, axis=1), 1.0, rtol=1e-5)


def test_all_zero_window_gives_finite_output() -> None:
    client = ClientRuntime.from_manifest(artifact_dir("mlp_dp", 1))
    a = client.forward(np.zeros((2, 1, 256), np.float32))
    assert np.isfinite(a).all()
