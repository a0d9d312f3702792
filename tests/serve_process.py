"""`aperio serve` as a real subprocess on a free port of 127.0.0.1, for every test that needs the whole
service: started with an environment and arguments, ready once uvicorn listens and `/healthz` answers,
its output (the admin token printed on first start included) collected by a thread, stopped with Ctrl-C."""

from __future__ import annotations

import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx

APERIO = str(Path(sys.executable).with_name("aperio"))
# What `aperio serve` and `aperio token create` print: the secret itself, shown once.
TOKEN = re.compile(r"aperio_[A-Za-z0-9_-]{40,}")
READY = "Uvicorn running"


def free_port() -> int:
    """A port of 127.0.0.1 that nothing listens on now (the server binds it a moment later)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def run_aperio(environment: dict[str, str], *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """`aperio ARGS…` run to its end with `environment`; its exit code is for the test to judge."""
    return subprocess.run(
        [APERIO, *args], capture_output=True, text=True, env=environment, timeout=timeout, check=False
    )


class ServeProcess:
    """One `aperio serve --port PORT ARGS…` process.

    `command` replaces the `aperio` script (the console test runs the CLI under `python -S`). The
    constructor returns once the server answers `/healthz`, and raises `AssertionError` with the
    output if it exits or is not ready within `startup_timeout` seconds.
    """

    def __init__(
        self,
        environment: dict[str, str],
        *args: str,
        command: Sequence[str] = (APERIO,),
        name: str = "",
        startup_timeout: float = 90,
    ) -> None:
        self.name = name
        self.environment = environment
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process = subprocess.Popen(
            [*command, "serve", "--port", str(self.port), *args],
            env=environment,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.lines: list[str] = []
        # A thread drains the pipe, so that a chatty server never blocks on a full pipe buffer.
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()
        self._wait_until_ready(time.monotonic() + startup_timeout)

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append(line)

    def _wait_until_ready(self, deadline: float) -> None:
        while not self._healthy():
            if time.monotonic() > deadline or self.process.poll() is not None:
                self.kill()
                raise AssertionError(f"{self.label} did not start:\n{self.output}")
            time.sleep(0.05)

    def _healthy(self) -> bool:
        if not any(READY in line for line in self.lines):
            return False
        try:
            return self.get("/healthz", timeout=5).status_code == 200
        except httpx.TransportError:
            return False

    @property
    def label(self) -> str:
        return f"aperio serve {self.name}".rstrip()

    @property
    def output(self) -> str:
        """Everything the server printed so far, stdout and stderr interleaved."""
        return "".join(self.lines)

    @property
    def printed_tokens(self) -> list[str]:
        """The API tokens the server printed (on a first start, the one admin token; later, none)."""
        return TOKEN.findall(self.output)

    def get(self, path: str, token: str | None = None, **options: Any) -> httpx.Response:
        return httpx.get(f"{self.url}{path}", headers=_bearer(token), **{"timeout": 15, **options})

    def post(self, path: str, token: str | None = None, **options: Any) -> httpx.Response:
        return httpx.post(f"{self.url}{path}", headers=_bearer(token), **{"timeout": 15, **options})

    def stop(self) -> int:
        """Ctrl-C, and return the exit code; a server still running 30 s later is killed and the test fails."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
        try:
            code = self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(f"{self.label} ignored Ctrl-C for 30 s:\n{self.output}") from None
        self.reader.join(timeout=5)
        return code

    def kill(self) -> None:
        """SIGKILL if still running (a fixture's last resort, or a test's crash), and reap it."""
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(timeout=30)
        self.reader.join(timeout=5)


def _bearer(token: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"} if token else {}
