"""In-process privacy/utility harness for ``python -m bench privacy`` (see bench/bench_privacy.py).

- :mod:`bench.privacy.tasks` datasets, device splits, front ends and LiteRT artifacts
- :mod:`bench.privacy.modes` the private training modes, run with the agent's own mechanisms
"""
