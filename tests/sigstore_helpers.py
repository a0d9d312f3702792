"""Helpers shared by the Sigstore tests: statements, bundle surgery, no network."""

from __future__ import annotations

import base64
import hashlib
import importlib
import json
import socket
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pytest

GITHUB_ISSUER = "https://token.actions.githubusercontent.com"
RELEASE_IDENTITY = "https://github.com/acme/box/.github/workflows/release.yml@refs/tags/v1.0.0"

# Imported lazily by aperio_plugins._sigstore. tests/conftest.py drops every module
# a test imports, so these are imported once per test module, before that snapshot.
_LAZY_MODULES = (
    "sigstore.models",
    "sigstore.verify",
    "sigstore.verify.policy",
    "sigstore.errors",
    "sigstore._store",
    "sigstore.oidc",
    "sigstore.sign",
)


def preload_sigstore() -> None:
    for name in _LAZY_MODULES:
        importlib.import_module(name)


def forbid_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make any outgoing connection fail loudly, so that "offline" is checked, not assumed."""

    def refuse(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("network access attempted during offline Sigstore verification")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


def in_toto_statement(files: Mapping[str, bytes]) -> bytes:
    """An in-toto Statement v1 listing `files` with their sha256, as canonical JSON."""
    statement = {
        "_type": "https://in-toto.io/Statement/v1",
        "subject": [
            {"name": name, "digest": {"sha256": hashlib.sha256(data).hexdigest()}}
            for name, data in sorted(files.items())
        ],
        "predicateType": "https://aperio.dev/plugin-files/v1",
        "predicate": {},
    }
    return json.dumps(statement, sort_keys=True, separators=(",", ":")).encode("utf-8")


def edit_bundle(bundle: bytes, edit: Callable[[dict[str, Any]], None]) -> bytes:
    """Return `bundle` with `edit` applied to its parsed JSON."""
    document = json.loads(bundle)
    edit(document)
    return json.dumps(document).encode("utf-8")


def flip_last_byte(value: str) -> str:
    """Flip every bit of the last byte of a base64 value."""
    data = bytearray(base64.b64decode(value))
    data[-1] ^= 0xFF
    return base64.b64encode(bytes(data)).decode("ascii")


def write_identities(path: Path, identity: str, issuer: str, trusted_root: Path, extra: str = "") -> None:
    """Write an operator's trusted-identities file trusting one Sigstore identity (and `extra` TOML)."""
    path.write_text(
        f'trusted_root = "{trusted_root}"\n\n[[identity]]\nidentity = "{identity}"\nissuer = "{issuer}"\n{extra}'
    )
