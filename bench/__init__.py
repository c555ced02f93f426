"""Benchmarks, each run from the repository root as `python -m bench.NAME` (figures in BENCHMARKS.md)."""
