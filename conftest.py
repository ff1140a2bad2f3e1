"""The repository root's conftest: pytest puts this folder on sys.path, so tests import ``benchmarks``."""
