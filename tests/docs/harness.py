"""Turn an operator document's shell blocks into commands that run in a scratch root.

Pure text handling (no I/O): :func:`shell_commands` extracts the fenced
```` ```sh ```` blocks of a Markdown document and joins ``\\``-continued lines
into one command each; :func:`config_files` finds the ```` ```toml ```` blocks
captioned by a file name (a line ending in ```NAME.toml`:`` or a heading
holding ```/.../NAME.toml```) that an operator writes before running them;
:func:`plan` maps every command onto the scratch root or says why it is
skipped. The mapping, applied to commands and config files alike:

* ``/etc/``, ``/var/lib/`` -> ``<root>/etc/``, ``<root>/var/lib/``;
* ``/opt/splitfed/venv/bin/`` -> the test interpreter's ``bin/`` (it runs the
  checkout's code: ``PYTHONPATH`` is the checkout), and
  ``/opt/splitfed/venv/lib/python3.11/site-packages/`` -> the checkout;
* ``127.0.0.1:7070`` -> ``127.0.0.1:<a free port>``; ``/dev/ttyUSB0`` -> the
  pty of a simulated meter the test starts;
* ``sudo`` and ``sudo -u USER`` prefixes are dropped, and so are ``install``'s
  ``-o USER``/``-g GROUP`` (the test has no ``splitfed`` user: ownership is the
  one thing not exercised).

Lines skipped, each for a stated reason (:data:`SKIPS`): ``useradd`` (changes
the host's users), venv creation and ``pip install`` into ``/opt`` (done for
real from the wheel by ``tests/packaging``), ``systemctl``/``journalctl`` (no
systemd as PID 1 here; the units are checked by ``systemd-analyze`` in
``tests/unit/deploy/test_systemd_units.py``) and ``splitfed-agent status``
(it reads the status of the service ``systemctl`` would have started).

A command of the form ``splitfed-<role> run --config ...`` is a *service*:
the test starts it in the background, waits for its sd_notify ``READY=1``
and stops it (SIGTERM) after the document's last command.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import PurePath

SKIPS: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"^useradd\b"), "creates a system user: needs root and changes the host"),
    (re.compile(r"-m venv\b"), "creates /opt/splitfed/venv: tests/packaging installs the wheel "
                               "into a fresh venv; here the test's venv stands in"),
    (re.compile(r"\bpip install\b"), "installs the wheel into /opt: done by tests/packaging"),
    (re.compile(r"^(systemctl|journalctl)\b"),
     "no systemd as PID 1 in the test; the units are verified by "
     "tests/unit/deploy/test_systemd_units.py"),
    (re.compile(r"splitfed-agent status\b"), "reads the status of the service that systemctl "
                                             "(skipped) would have started"),
)
SERVICE = re.compile(r"\bsplitfed-[a-z]+ run --config\b")
_FENCE = re.compile(r"^```(\w*)\s*$")
_SUDO = re.compile(r"^sudo(\s+-u\s+\S+)?\s+")
_OWNER = re.compile(r"(?<=\s)-[og]\s+\S+\s+")
_CAPTION = re.compile(r"`([^`\s]*?([\w.-]+\.toml))`")


@dataclass(frozen=True, slots=True)
class Mapping:
    """Where the document's absolute paths and addresses land in the test."""

    root: str
    venv_bin: str
    checkout: str
    port: int
    serial: str = "/dev/ttyUSB0"

    def apply(self, text: str) -> str:
        pairs = (
            ("/opt/splitfed/venv/lib/python3.11/site-packages/", self.checkout.rstrip("/") + "/"),
            ("/opt/splitfed/venv/bin/", self.venv_bin.rstrip("/") + "/"),
            ("/etc/", f"{self.root}/etc/"),
            ("/var/lib/", f"{self.root}/var/lib/"),
            ("127.0.0.1:7070", f"127.0.0.1:{self.port}"),
            ("/dev/ttyUSB0", self.serial),
        )
        for old, new in pairs:
            guard = r"(?<![\w/.-])" if old.startswith("/") else ""  # not inside another path
            text = re.sub(guard + re.escape(old), new.replace("\\", r"\\"), text)
        return text


@dataclass(frozen=True, slots=True)
class Step:
    """One command of a document: what it says, what runs, or why nothing runs."""

    doc_line: int
    written: str
    command: str | None  # None: skipped
    skip_reason: str | None = None
    service: bool = False


def _blocks(text: str, lang: str) -> list[tuple[int, list[str], str]]:
    """``(first line number, lines, caption line)`` of each fenced block of ``lang``."""
    out: list[tuple[int, list[str], str]] = []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        m = _FENCE.match(lines[i])
        if m is None:
            i += 1
            continue
        start, kind = i, m.group(1)
        i += 1
        body = []
        while i < len(lines) and not lines[i].startswith("```"):
            body.append(lines[i])
            i += 1
        i += 1
        if kind == lang:
            caption = next((ln for ln in reversed(lines[:start]) if ln.strip()), "")
            out.append((start + 2, body, caption))
    return out


def shell_commands(text: str) -> list[tuple[int, str]]:
    """``(line number, command)`` for each command of the ``sh`` blocks, continuations joined."""
    out: list[tuple[int, str]] = []
    for first, body, _ in _blocks(text, "sh"):
        pending, at = "", 0
        for n, raw in enumerate(body, start=first):
            line = raw.rstrip()
            if not pending and (not line.strip() or line.lstrip().startswith("#")):
                continue
            if not pending:
                at = n
            if line.endswith("\\"):
                pending += line[:-1].strip() + " "
                continue
            out.append((at, (pending + line.strip()).strip()))
            pending = ""
        if pending:
            raise ValueError(f"line {at}: the block ends inside a continued command")
    return out


def config_files(text: str) -> dict[str, str]:
    """File name -> content of each ``toml`` block captioned with that file's name."""
    files: dict[str, str] = {}
    for _, body, caption in _blocks(text, "toml"):
        c = caption.strip()
        m = _CAPTION.search(c)
        if m and (c.endswith(":") or c.startswith("#")):
            files[PurePath(m.group(2)).name] = "\n".join(body) + "\n"
    return files


def plan(text: str, mapping: Mapping) -> list[Step]:
    """Every shell command of ``text``, mapped, or skipped with its reason."""
    steps = []
    for n, written in shell_commands(text):
        cmd = _SUDO.sub("", written)
        reason = next((why for pat, why in SKIPS if pat.search(cmd)), None)
        if reason is not None:
            steps.append(Step(n, written, None, reason))
            continue
        if cmd.startswith("install "):
            cmd = _OWNER.sub("", cmd + " ").strip()
        steps.append(Step(n, written, mapping.apply(cmd), service=bool(SERVICE.search(cmd))))
    return steps
