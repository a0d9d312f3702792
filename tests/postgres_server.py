"""A real PostgreSQL server on 127.0.0.1 for the tests: initdb into a temporary directory, pg_ctl start
on a free port, password authentication over TCP, stopped and removed at the end.

`pg_ctl` refuses to run as root (CI runs as root), so as root the server runs as the `postgres` user
through `runuser`, in a directory that user owns. Without PostgreSQL's binaries `find_bindir()`
returns None and the tests that need a server skip, saying why.
"""

from __future__ import annotations

import glob
import os
import pwd
import secrets
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

SUPERUSER = "aperio_test"
MISSING = (
    "PostgreSQL server binaries (initdb, pg_ctl) not found: apt-get install postgresql"
    " (scripts/quickstart.sh does), or set APERIO_TEST_PG_BINDIR"
)


def find_bindir() -> Path | None:
    """Return the directory holding initdb and pg_ctl: APERIO_TEST_PG_BINDIR, Debian's newest, or PATH."""
    candidates = [os.environ.get("APERIO_TEST_PG_BINDIR", "")]
    debian = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(Path(p).parent.name or 0))
    candidates += reversed(debian)
    on_path = shutil.which("pg_ctl")
    if on_path:
        candidates.append(str(Path(on_path).parent))
    for candidate in candidates:
        if candidate and (Path(candidate) / "initdb").exists() and (Path(candidate) / "pg_ctl").exists():
            return Path(candidate)
    return None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class PostgresServer:
    bindir: Path
    directory: Path
    port: int
    password: str
    run_as: str | None

    @property
    def data(self) -> Path:
        return self.directory / "data"

    def url(self, database: str = "postgres", *, password: str | None = None) -> str:
        return f"postgresql://{SUPERUSER}:{password or self.password}@127.0.0.1:{self.port}/{database}"

    def _command(self, *argv: str) -> list[str]:
        return ["runuser", "-u", self.run_as, "--", *argv] if self.run_as else list(argv)

    def pg_ctl(self, *argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            self._command(str(self.bindir / "pg_ctl"), "-D", str(self.data), *argv),
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    def start(self) -> None:
        options = (
            f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.directory}"
            " -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=200"
        )
        result = self.pg_ctl("-w", "-t", "60", "-l", str(self.directory / "server.log"), "-o", options, "start")
        if result.returncode != 0:
            log = (self.directory / "server.log").read_text(errors="replace")[-2000:]
            raise RuntimeError(f"pg_ctl start failed: {result.stderr}{result.stdout}\n{log}")

    def stop(self) -> None:
        self.pg_ctl("-w", "-m", "fast", "stop")

    def create_database(self, name: str) -> str:
        """Create an empty database `name` and return its URL."""
        import psycopg

        with psycopg.connect(self.url(), autocommit=True) as connection:
            connection.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)


def start_server(bindir: Path) -> PostgresServer:
    """initdb and start a server; the caller stops it and removes `server.directory`."""
    run_as = None
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            raise RuntimeError("running as root, and there is no `postgres` user to run the server as") from None
        run_as = "postgres"
    # Not under pytest's tmp_path: its parents are private to root and the server user must reach it.
    directory = Path(tempfile.mkdtemp(prefix="aperio-pg-"))
    password = secrets.token_urlsafe(16)
    server = PostgresServer(bindir, directory, _free_port(), password, run_as)
    (directory / "pwfile").write_text(password + "\n")
    if run_as:
        entry = pwd.getpwnam(run_as)
        for path in (directory, directory / "pwfile"):
            os.chown(path, entry.pw_uid, entry.pw_gid)
    result = subprocess.run(
        server._command(
            str(bindir / "initdb"),
            "-D",
            str(server.data),
            "-U",
            SUPERUSER,
            f"--pwfile={directory / 'pwfile'}",
            # Password checked over TCP (the tests of a wrong password need it); the socket is private.
            "--auth-host=scram-sha-256",
            "--auth-local=trust",
            "--no-sync",
            "-E",
            "UTF8",
        ),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if result.returncode != 0:
        shutil.rmtree(directory, ignore_errors=True)
        raise RuntimeError(f"initdb failed: {result.stderr}{result.stdout}")
    server.start()
    return server


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """A PostgreSQL server on 127.0.0.1 for the whole session (the test is skipped where none is
    installed), stopped and removed at the end. Import it into a conftest or helper to use it."""
    bindir = find_bindir()
    if bindir is None:
        pytest.skip(MISSING)
    server = start_server(bindir)
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(server.directory, ignore_errors=True)
