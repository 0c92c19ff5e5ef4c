"""Suite-wide fixtures.

The autouse ``_no_leaks`` check fails a test that leaves behind threads, child
processes or sockets it started: a real broker, pymodbus server or MQTT loop
left running would make later tests pass or fail for the wrong reason.
"""

from __future__ import annotations

import os
import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from models.data import DATA_DIR_ENV, check_dataset, default_data_dir
from protocol.errors import ConfigError

REPO = Path(__file__).resolve().parent.parent
# $SPLITFED_DATA_DIR or the shipped data/ (PLAID, ACSF1): one rule, in models.data
DATA_DIR = default_data_dir()
# datasets too big to ship (WATCH): $SPLITFED_DATA_DIR or ../shared/data beside the checkout
EXTRA_DATA_DIRS = tuple(dict.fromkeys(
    p for p in (os.environ.get(DATA_DIR_ENV, "").strip(), str(REPO.parent / "shared" / "data"))
    if p))

# Threads owned by third-party runtimes that live for the whole process once started.
_ALLOWED_THREADS = re.compile(r"^(asyncio_\d+|ThreadPoolExecutor-\d+_\d+|pydevd\..*|Dummy-\d+)$")
_GRACE_S = 5.0


def _children() -> set[int]:
    pids: set[int] = set()
    task_dir = Path(f"/proc/{os.getpid()}/task")
    for task in task_dir.iterdir():
        try:
            text = (task / "children").read_text()
        except OSError:
            continue
        pids.update(int(p) for p in text.split())
    alive = set()
    for pid in pids:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state != "Z":
            alive.add(pid)
    return alive


def _socket_fds() -> set[str]:
    out = set()
    fd_dir = Path("/proc/self/fd")
    for fd in fd_dir.iterdir():
        try:
            target = str(fd.readlink())
        except OSError:
            continue
        if target.startswith("socket:"):
            out.add(target)
    return out


@pytest.fixture(autouse=True)
def _no_leaks(request: pytest.FixtureRequest) -> Iterator[None]:
    if request.node.get_closest_marker("allow_leaks"):
        yield
        return
    threads_before = set(threading.enumerate())
    children_before = _children()
    sockets_before = _socket_fds()
    yield
    deadline = time.monotonic() + _GRACE_S
    while True:
        threads = [
            t for t in threading.enumerate()
            if t not in threads_before and t.is_alive() and not _ALLOWED_THREADS.match(t.name)
        ]
        children = _children() - children_before
        sockets = _socket_fds() - sockets_before
        if not (threads or children or sockets) or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    problems = []
    if threads:
        problems.append(f"threads left running: {[t.name for t in threads]}")
    if children:
        problems.append(f"child processes left running: {sorted(children)}")
    if sockets:
        problems.append(f"sockets left open: {len(sockets)}")
    if problems:
        pytest.fail("test leaked resources: " + "; ".join(problems), pytrace=False)


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """The real-data directory (UCR/UEA ``.ts`` files): PLAID and ACSF1 must be there."""
    try:
        for name in ("PLAID", "ACSF1"):
            check_dataset(DATA_DIR, name)
    except ConfigError as exc:
        pytest.fail(str(exc), pytrace=False)
    return DATA_DIR


def extra_dataset_dir(name: str) -> Path:
    """Where an unshipped dataset (e.g. ``WATCH``) is, or skip the test saying where it looked."""
    for d in EXTRA_DATA_DIRS:
        try:
            check_dataset(d, name)
        except ConfigError:
            continue
        return Path(d)
    pytest.skip(f"{name}_TRAIN.ts/_TEST.ts are not shipped (too large); looked in "
                f"{', '.join(EXTRA_DATA_DIRS)}; set {DATA_DIR_ENV} to a directory holding them")
