"""Benchmark harness used by `fastpeft demo`, `fastpeft bench` and benchmarks/."""
