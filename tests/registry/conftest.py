"""A real registry for install tests: an HTTPS server on 127.0.0.1 serving an index and wheels, a trust
store with one author's key, and a client whose plugins directory and state live in the test's folder."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from https_server import RegistryServer
from sigstore_helpers import GITHUB_ISSUER, RELEASE_IDENTITY, write_identities

from aperio_plugins import HostSettings, TrustMode
from aperio_plugins._state import SQLiteStateStore
from aperio_plugins._trust import load_trust_store
from aperio_plugins.registry._client import RegistryClient
from aperio_plugins.registry._index import Publisher
from aperio_plugins.registry._publish import add_release
from aperio_plugins.testing import PrivateSigstore, generate_signing_key, sign_wheel_with_key

ACME = Publisher(name="Acme", verified=True)


@dataclass
class Registry:
    """An index kept in a local file and served, with the wheels it lists, by an HTTPS server."""

    server: RegistryServer
    index_path: Path
    published: list[Path] = field(default_factory=list)

    @property
    def index_url(self) -> str:
        return self.server.url("/index.json")

    def publish(self, wheel: Path, *, url: str | None = None, serve: bool = True) -> None:
        add_release(self.index_path, wheel, url or f"wheels/{wheel.name}", ACME, now=datetime.now(timezone.utc))
        if serve:
            self.server.serve(f"/wheels/{wheel.name}", wheel.read_bytes())
        self.published.append(wheel)
        self.refresh()

    def publish_unchecked(self, wheel: Path, plugin_id: str, version: str) -> None:
        """List a wheel that `registry add` would refuse, as a hostile or careless registry might."""
        data = wheel.read_bytes()
        release = {
            "version": version,
            "api_requirement": ">=1.0,<2",
            "url": f"wheels/{wheel.name}",
            "sha256": hashlib.sha256(data).hexdigest(),
            "size": len(data),
            "publisher": {"name": "Mallory"},
        }
        self.server.serve(f"/wheels/{wheel.name}", data)
        self.edit(
            lambda document: next(p for p in document["plugins"] if p["id"] == plugin_id)["versions"].append(release)
        )

    def document(self) -> dict[str, Any]:
        return json.loads(self.index_path.read_text())

    def edit(self, change: Callable[[dict[str, Any]], None], *, bump: bool = True) -> None:
        """Change the index document; `bump` moves updated_at forward as a registry would."""
        document = self.document()
        change(document)
        if bump:
            stamp = datetime.fromisoformat(document["updated_at"].replace("Z", "+00:00")) + timedelta(seconds=1)
            document["updated_at"] = stamp.isoformat()
        self.index_path.write_text(json.dumps(document, indent=2))
        self.refresh()

    def release(self, document: dict[str, Any], plugin_id: str, version: str) -> dict[str, Any]:
        plugin = next(p for p in document["plugins"] if p["id"] == plugin_id)
        return next(r for r in plugin["versions"] if r["version"] == version)

    def refresh(self) -> None:
        self.server.serve("/index.json", self.index_path.read_bytes(), content_type="application/json")


@pytest.fixture
def registry_server(tmp_path: Path) -> Iterator[RegistryServer]:
    with RegistryServer(tmp_path) as server:
        yield server


@pytest.fixture
def plain_http_server(tmp_path: Path) -> Iterator[RegistryServer]:
    with RegistryServer(tmp_path, plain_http=True) as server:
        yield server


@pytest.fixture
def registry(registry_server: RegistryServer, tmp_path: Path) -> Registry:
    return Registry(registry_server, tmp_path / "registry" / "index.json")


@pytest.fixture
def author_key(tmp_path: Path) -> Path:
    """The private key of the plugin author whose public key the host trusts."""
    private, public = generate_signing_key(tmp_path / "author", "author")
    keys = tmp_path / "trusted-keys"
    keys.mkdir(mode=0o700)
    (keys / public.name).write_bytes(public.read_bytes())
    return private


@pytest.fixture
def sign(author_key: Path) -> Callable[[Path], Path]:
    return lambda wheel: sign_wheel_with_key(wheel, author_key)


@pytest.fixture
def make_settings(
    tmp_path: Path, registry: Registry, plugins_dir: Path, author_key: Path
) -> Callable[..., HostSettings]:
    def make_settings(trust: str = "strict", **overrides: Any) -> HostSettings:
        values: dict[str, Any] = {
            "plugins_dir": plugins_dir,
            "state_dir": tmp_path / "state",
            "plugin_trusted_keys_dir": tmp_path / "trusted-keys",
            "plugin_trusted_identities": tmp_path / "trusted-identities.toml",
            "plugin_trust_mode": TrustMode(trust),
            "registry_index": registry.index_url,
            "registry_ca_bundle": registry.server.ca_bundle,
            "registry_connect_timeout": 2.0,
            "registry_read_timeout": 2.0,
            "registry_download_timeout": 10.0,
        }
        values.update(overrides)
        return HostSettings(**values)

    return make_settings


@pytest.fixture
def make_client(make_settings: Callable[..., HostSettings], audit: Any) -> Iterator[Callable[..., RegistryClient]]:
    clients: list[RegistryClient] = []

    def make_client(trust: str = "strict", **overrides: Any) -> RegistryClient:
        settings = make_settings(trust, **overrides)
        client = RegistryClient(
            settings,
            SQLiteStateStore.in_directory(settings.state_dir),
            load_trust_store(settings),
            audit=audit.logger,
        )
        clients.append(client)
        return client

    yield make_client
    for client in clients:
        client.close()


@pytest.fixture
def instance(tmp_path: Path, make_settings: Callable[..., HostSettings]) -> PrivateSigstore:
    """A private Sigstore instance whose release identity the host trusts."""
    created = PrivateSigstore.create(tmp_path / "sigstore")
    identities = make_settings().plugin_trusted_identities
    write_identities(identities, RELEASE_IDENTITY, GITHUB_ISSUER, created.trusted_root_path)
    return created
