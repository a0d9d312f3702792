"""Fixtures for plugin authors that need the host (pytest plugin, entry point `pytest11`).

`aperio_host` is the project pytest runs in (its rootdir), built into a wheel with its own build
backend, signed with a throwaway key, installed with pip into a temporary host in strict trust mode
and loaded: the plugin as an operator would get it, without touching `~/.aperio`.

    def test_loads_verified(aperio_host):
        assert aperio_host.get("acme.hello").signature_status is SignatureStatus.VERIFIED

The wheel is built and signed once per session (`aperio_project_wheel`); each test gets a fresh host.
The SDK's own fixtures (`aperio_context`, `aperio_envelopes`, ...) come from aperio-hookspecs.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from ._host import PluginHost

# The host is imported inside the fixtures: pytest loads this module for every test run in an
# environment that has aperio-plugins, and most of those runs never ask for a host.


@pytest.fixture(scope="session")
def aperio_project_wheel(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The project under test (pytest's rootdir) as a signed wheel: (wheel, public key that verifies it)."""
    from .testing import build_project_wheel, generate_signing_key, sign_wheel_with_key

    directory = tmp_path_factory.mktemp("aperio-project")
    wheel = build_project_wheel(Path(request.config.rootpath), directory / "dist")
    private_key, public_key = generate_signing_key(directory / "key", "throwaway")
    return sign_wheel_with_key(wheel, private_key), public_key


@pytest.fixture
def aperio_host(aperio_project_wheel: tuple[Path, Path], tmp_path: Path) -> Iterator[PluginHost]:
    """A loaded strict host with the project's signed wheel installed in its private plugins directory."""
    from ._project_host import strict_host

    wheel, public_key = aperio_project_wheel
    with strict_host([wheel], tmp_path / "aperio-host", public_keys=[public_key]) as host:
        yield host
