"""Benchmarks of leap_sync against its peers: ``python -m benchmarks`` (see README.md)."""
