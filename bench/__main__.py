"""Run every ``bench/bench_*.py`` module's ``main()``; each writes bench/results/<name>.json + .md.

Usage: ``python -m bench [name ...]`` (names without the ``bench_`` prefix).

``chaos`` (``bench_chaos``) is the soak: the slow ``tests/chaos`` suite, one real
stack per (service, fault, phase) case, about two minutes per case; it writes
``bench/results/chaos.md``. ``CHAOS_K`` selects cases (a pytest ``-k`` expression).
"""

from __future__ import annotations

import importlib
import sys
import traceback
from pathlib import Path


def main(argv: list[str]) -> int:
    here = Path(__file__).parent
    names = argv or sorted(p.stem.removeprefix("bench_") for p in here.glob("bench_*.py"))
    failed = []
    for name in names:
        print(f"== bench {name}", flush=True)
        try:
            importlib.import_module(f"bench.bench_{name}").main()
        except Exception:
            traceback.print_exc()
            failed.append(name)
    if failed:
        print(f"benchmarks failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
