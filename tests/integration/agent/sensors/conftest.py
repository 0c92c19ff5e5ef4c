"""Real pymodbus servers (the simulator) on loopback TCP and on linked ptys."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest

from agent.simulator.pty import PtyLink


@pytest.fixture(autouse=True)
def _quiet_pymodbus() -> Iterator[None]:
    # pymodbus dumps its debug ring buffer on every timeout; the fault tests cause many
    logger = logging.getLogger("pymodbus")
    old = logger.level
    logger.setLevel(logging.CRITICAL)
    yield
    logger.setLevel(old)


@pytest.fixture
def pty_link() -> Iterator[PtyLink]:
    with PtyLink() as link:
        yield link
