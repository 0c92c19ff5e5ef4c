"""Chaos soak: the ``tests/chaos`` suite (kill / stop each service at each protocol phase).

Runs ``pytest tests/chaos -m slow`` in a subprocess (the same suite as ``make
test-all`` runs; one case is one (service, fault, phase) on a real stack),
reads its JUnit report and writes ``bench/results/chaos.json`` and
``bench/results/chaos.md``: one row per case, pass or fail, with the first
line of the failure and the case's wall time. ``CHAOS_K`` (a pytest ``-k``
expression) runs a subset. Run: ``.venv/bin/python -m bench chaos``.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

from bench.common import write_results

REPO = Path(__file__).resolve().parent.parent


def parse_junit(path: Path) -> list[dict[str, Any]]:
    """One dict per test case: id, outcome (passed/failed/error/skipped), seconds, reason."""
    root = ET.parse(path).getroot()  # noqa: S314 - written by our own pytest run
    cases = []
    for tc in root.iter("testcase"):
        name = tc.get("name", "")
        case = name[name.find("[") + 1:name.rfind("]")] if "[" in name else name
        outcome, reason = "passed", ""
        for tag in ("failure", "error", "skipped"):
            el = tc.find(tag)
            if el is not None:
                outcome = {"failure": "failed"}.get(tag, tag)
                reason = (el.get("message") or el.text or "").strip().splitlines()[0][:240]
                break
        cases.append({"case": case, "outcome": outcome, "seconds": float(tc.get("time", 0)),
                      "reason": reason})
    return cases


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "chaos.xml"
        argv = [sys.executable, "-m", "pytest", "tests/chaos", "-m", "slow", "-v", "-rfE",
                "-p", "no:cacheprovider", f"--junitxml={report}"]
        if os.environ.get("CHAOS_K"):
            argv += ["-k", os.environ["CHAOS_K"]]
        res = subprocess.run(argv, cwd=REPO, check=False, timeout=6 * 3600)
        cases = parse_junit(report) if report.exists() else []
    passed = sum(c["outcome"] == "passed" for c in cases)
    table = [("cases passed", f"{passed} of {len(cases)}"),
             ("pytest exit status", str(res.returncode))]
    table += [(c["case"], f"{c['outcome']} ({c['seconds']:.0f} s)"
               + (f": {c['reason']}" if c["reason"] else "")) for c in cases]
    write_results("chaos", {"cases": cases, "passed": passed, "total": len(cases),
                            "pytest_exit": res.returncode}, table)


if __name__ == "__main__":
    main()
