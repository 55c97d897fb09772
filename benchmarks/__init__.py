"""Benchmarks of e6auth, run as scripts (``python -m benchmarks.<name>``), not shipped."""
