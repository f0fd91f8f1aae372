"""Benchmarks of the served app (see bench/__init__.py)."""
