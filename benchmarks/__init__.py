"""Benchmarks of neo-exporter against the fake Neo API: `python -m benchmarks --help`."""
