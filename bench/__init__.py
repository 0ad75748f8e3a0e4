"""Benchmarks: run each module with `python -m bench.<name>`; each prints JSON lines."""
