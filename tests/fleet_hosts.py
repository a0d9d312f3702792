"""Several real `aperio serve` processes sharing one state store, for tests/fleet: a real PostgreSQL on 127.0.0.1
(tests/postgres_server.py), or one SQLite file (the polling path)."""

from __future__ import annotations

import itertools
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from postgres_server import MISSING, PostgresServer, find_bindir, start_server

APERIO = str(Path(sys.executable).with_name("aperio"))
TOKEN = re.compile(r"aperio_[A-Za-z0-9_-]{40,}")
_databases = itertools.count(1)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    bindir = find_bindir()
    if bindir is None:
        pytest.skip(MISSING)
    server = start_server(bindir)
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(server.directory, ignore_errors=True)


class Served:
    """One `aperio serve` process: its own plugins directory and name, the fleet's shared store."""

    def __init__(self, name: str, environment: dict[str, str]) -> None:
        self.name = name
        self.environment = environment
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process = subprocess.Popen(
            [APERIO, "serve", "--port", str(self.port)],
            env=environment,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.lines: list[str] = []
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()
        deadline = time.monotonic() + 90
        while not any("Uvicorn running" in line for line in self.lines):
            if time.monotonic() > deadline or self.process.poll() is not None:
                self.process.kill()
                raise AssertionError(f"aperio serve {name} did not start:\n" + "".join(self.lines))
            time.sleep(0.05)

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append(line)

    @property
    def output(self) -> str:
        return "".join(self.lines)

    def get(self, path: str, token: str | None = None, **options: Any) -> httpx.Response:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.get(f"{self.url}{path}", headers=headers, timeout=15, **options)

    def post(self, path: str, token: str) -> httpx.Response:
        return httpx.post(f"{self.url}{path}", headers={"Authorization": f"Bearer {token}"}, timeout=15)

    def state_of(self, plugin_id: str, token: str) -> str:
        return str(self.get(f"/api/v1/plugins/{plugin_id}", token).json()["state"])

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
        code = self.process.wait(timeout=30)
        self.reader.join(timeout=5)
        return code


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
        issued = TOKEN.findall(served.output)
        if issued and self.token is None:
            self.token = issued[0]
        return served

    def aperio(self, *args: str, on: str = "host-a") -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [APERIO, *args], capture_output=True, text=True, env=self.environment(on), timeout=120, check=False
        )


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
            if host.process.poll() is None:
                host.process.kill()
                host.process.wait(timeout=30)


def wait_for(check: Callable[[], bool], timeout: float, interval: float = 0.05) -> float:
    """Wait until `check()` holds; return the seconds it took, or fail after `timeout`."""
    start = time.monotonic()
    while not check():
        if time.monotonic() - start > timeout:
            raise AssertionError(f"not within {timeout} s")
        time.sleep(interval)
    return time.monotonic() - start
