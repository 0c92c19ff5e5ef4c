"""Benchmarks: speed, memory and soak runs. Results go to bench/results/."""
