"""Benchmarks of a run and its stages (see bench/__init__.py)."""
