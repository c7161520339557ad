"""Runners: each builds one measured thing from a JSON spec and answers `run(n)` (protocol.py)."""
