"""Several real `aperio serve` processes sharing one state store, for tests/fleet: a real PostgreSQL on 127.0.0.1
(tests/postgres_server.py), or one SQLite file (the polling path)."""

from __future__ import annotations

import itertools
import os
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from postgres_server import PostgresServer, postgres_server
from serve_process import APERIO, TOKEN, ServeProcess, free_port, run_aperio

# Re-exported: tests import these names from here.
__all__ = ["APERIO", "TOKEN", "Fleet", "Served", "fleet", "free_port", "postgres_server", "wait_for"]
_databases = itertools.count(1)


class Served(ServeProcess):
    """One `aperio serve` process: its own plugins directory and name, the fleet's shared store."""

    def __init__(self, name: str, environment: dict[str, str]) -> None:
        super().__init__(environment, name=name)

    def state_of(self, plugin_id: str, token: str) -> str:
        return str(self.get(f"/api/v1/plugins/{plugin_id}", token).json()["state"])


@dataclass
class Fleet:
    """Hosts started on one store; `aperio` runs the CLI as if on host `on`."""

    tmp_path: Path
    shared: dict[str, str]
    hosts: list[Served]
    token: str | None = None

    def environment(self, name: str) -> dict[str, str]:
        plugins = self.tmp_path / name / "plugins"
        plugins.mkdir(parents=True, exist_ok=True)
        return {
            **os.environ,
            **self.shared,
            "APERIO_PLUGINS_DIR": str(plugins),
            "APERIO_HOST_NAME": name,
            "APERIO_PLUGIN_TRUST_MODE": "warn",
            "APERIO_STATE_DIR": self.shared.get("APERIO_STATE_DIR", str(self.tmp_path / name / "state")),
        }

    def plugins_dir(self, name: str) -> Path:
        return Path(self.environment(name)["APERIO_PLUGINS_DIR"])

    def start(self, name: str) -> Served:
        served = Served(name, self.environment(name))
        self.hosts.append(served)
        issued = served.printed_tokens
        if issued and self.token is None:
            self.token = issued[0]
        return served

    def aperio(self, *args: str, on: str = "host-a") -> subprocess.CompletedProcess[str]:
        return run_aperio(self.environment(on), *args)


@pytest.fixture(params=["postgres", "sqlite"])
def fleet(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Fleet]:
    if request.param == "postgres":
        server: PostgresServer = request.getfixturevalue("postgres_server")
        shared = {"APERIO_STATE_URL": server.create_database(f"fleet_{next(_databases)}")}
    else:
        shared = {"APERIO_STATE_DIR": str(tmp_path / "shared-state")}
    made = Fleet(tmp_path, shared, [])
    try:
        yield made
    finally:
        for host in made.hosts:
            host.kill()


def wait_for(check: Callable[[], bool], timeout: float, interval: float = 0.05) -> float:
    """Wait until `check()` holds; return the seconds it took, or fail after `timeout`."""
    start = time.monotonic()
    while not check():
        if time.monotonic() - start > timeout:
            raise AssertionError(f"not within {timeout} s")
        time.sleep(interval)
    return time.monotonic() - start
