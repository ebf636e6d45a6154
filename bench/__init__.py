"""Benchmark scenarios that are run by hand or by `make`, never as tests (see bench/history.py)."""
