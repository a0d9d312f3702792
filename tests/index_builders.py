"""Index documents for tests: a valid one by default, with any field replaced."""

from __future__ import annotations

DIGEST = "a" * 64
KEY_ID = "b" * 64


def release(version: str = "1.0.0", **fields) -> dict:
    entry = {
        "version": version,
        "api_requirement": ">=1.0,<2",
        "url": f"https://example.invalid/acme_box-{version}-py3-none-any.whl",
        "sha256": DIGEST,
        "publisher": {"name": "Acme", "verified": True},
    }
    entry.update(fields)
    return entry


def index_document(*releases: dict, **fields) -> dict:
    document = {
        "format_version": 1,
        "updated_at": "2026-11-20T10:00:00Z",
        "plugins": [
            {
                "id": "acme.box",
                "distribution": "acme-box",
                "kinds": ["connector"],
                "description": "Box users and events",
                "versions": list(releases) or [release()],
            }
        ],
    }
    document.update(fields)
    return document
