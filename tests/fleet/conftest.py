"""The fleet tests' fixtures live in tests/fleet_hosts.py, beside the helpers the tests import."""

from fleet_hosts import fleet, postgres_server

__all__ = ["fleet", "postgres_server"]
