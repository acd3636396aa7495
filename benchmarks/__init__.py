"""Benchmarks: ratios against a baseline run in the same process; results go to docs/benchmarks.md."""
