"""Sessions: tests on every supported Python, lint, typecheck, and plugin API compatibility."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import nox

PYTHONS = ["3.10", "3.11", "3.12", "3.13"]
EXAMPLES = ["./example_plugins/box-connector", "./example_plugins/box-remediation", "./example_plugins/splunk-hec"]

nox.options.sessions = ["tests", "lint", "typecheck", "compat"]

# pyenv's python3.X shims fail unless that version is selected, so offer every
# installed version to nox when the caller did not choose.
if shutil.which("pyenv") and "PYENV_VERSION" not in os.environ:
    installed = os.popen("pyenv versions --bare").read().split()  # noqa: S605, S607 - a fixed command
    versions = [version for version in installed if ".".join(version.split(".")[:2]) in PYTHONS]
    if versions:
        os.environ["PYENV_VERSION"] = ":".join(versions)


@nox.session(python=PYTHONS)
def tests(session: nox.Session) -> None:
    session.install("-e", "./hookspecs[http]", "-e", ".[dev,server]", *EXAMPLES)
    session.run("pytest", *session.posargs)


@nox.session(python="3.11")
def lint(session: nox.Session) -> None:
    session.install("ruff")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")


@nox.session(python="3.11")
def typecheck(session: nox.Session) -> None:
    # The optional extras too: mypy checks the API (server) and the PostgreSQL store (postgres) as well.
    session.install("-e", "./hookspecs[http]", "-e", ".[server,postgres]", "mypy")
    session.run("mypy")


@nox.session(python="3.11")
def compat(session: nox.Session) -> None:
    """A plugin built against plugin API 1.1 loads on a host whose API is a newer 1.x minor;
    a plugin that needs 2.x is refused."""
    work = Path(session.create_tmp())
    newer = work / "hookspecs-1.2"
    shutil.rmtree(newer, ignore_errors=True)
    shutil.copytree("hookspecs", newer, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    version_file = newer / "src" / "aperio_hookspecs" / "_version.py"
    version_file.write_text(version_file.read_text().replace('__version__ = "1.1.0"', '__version__ = "1.2.0"'))
    session.install(f"{newer}[http]")
    session.install("-e", ".")
    session.run("python", "scripts/compat_check.py", "--expect-api", "1.2.1", str(work / "check"))
