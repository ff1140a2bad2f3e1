"""Benchmarks: flowforge against nflows, zuko and normflows, measured side by side in one run."""
