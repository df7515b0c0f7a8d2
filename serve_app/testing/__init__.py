"""Offline builders of random-weight pipelines for tests, benchmarks and ``make run`` (never served
in production)."""
