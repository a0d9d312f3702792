"""The index format: parsing, refusals with places, the newer-format refusal, and the published schema."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from index_builders import KEY_ID, index_document, release

from aperio_plugins.errors import IndexFormatError
from aperio_plugins.registry._index import parse_index
from aperio_plugins.registry.schema import SCHEMA_FILE_NAME, schema_text

SCHEMAS = Path(__file__).resolve().parents[2] / "docs" / "schemas" / "registry"


def parse(document: dict):
    return parse_index(json.dumps(document).encode(), "test-index.json")


def test_a_valid_index_parses_with_its_releases():
    signature = {"kind": "ed25519", "key_id": KEY_ID, "envelope": {"signatures": [{"keyid": KEY_ID, "sig": "x"}]}}
    index = parse(index_document(release("1.0.0"), release("1.1.0", signatures=[signature], yanked="broken")))
    plugin = index.plugin("acme.box")
    assert plugin is not None
    assert [r.version for r in plugin.versions] == ["1.0.0", "1.1.0"]
    assert plugin.versions[1].yanked == "broken"
    assert plugin.versions[1].signatures[0].key_id == KEY_ID
    assert index.plugin("acme.other") is None


def test_a_newer_format_version_is_refused_with_an_upgrade_hint():
    with pytest.raises(IndexFormatError, match=r"format version 2, newer than this client reads \(1\): upgrade"):
        parse(index_document(format_version=2))


@pytest.mark.parametrize(
    ("document", "expected"),
    [
        pytest.param(b"{not json", "is not JSON", id="not_json"),
        pytest.param(b"[]", "is not a JSON object", id="not_an_object"),
    ],
)
def test_documents_that_are_not_indexes_are_refused(document, expected):
    with pytest.raises(IndexFormatError, match=expected):
        parse_index(document, "test-index.json")


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        pytest.param(
            {"updated_at": "2026-11-20T10:00:00"}, "updated_at: Input should have timezone info", id="naive_time"
        ),
        pytest.param({"extra": 1}, "extra: Extra inputs are not permitted", id="unknown_field"),
        pytest.param({"format_version": 0}, "format_version: Input should be 1", id="older_format"),
    ],
)
def test_schema_problems_name_the_field(change, expected):
    with pytest.raises(IndexFormatError, match=expected):
        parse(index_document(**change))


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        pytest.param(
            {"sha256": "abc"},
            r"plugins\['acme.box'\].versions\['1.0.0'\].sha256: String should match",
            id="short_digest",
        ),
        pytest.param({"version": "one"}, "'one' is not a valid version", id="bad_version"),
        pytest.param({"api_requirement": "1.0"}, "is not a version specifier", id="bad_requirement"),
        pytest.param(
            {"signatures": [{"kind": "ed25519", "key_id": KEY_ID, "envelope": {"signatures": [{"keyid": "c" * 64}]}}]},
            "is not the key id of the envelope's signature",
            id="key_id_mismatch",
        ),
        pytest.param(
            {"signatures": [{"kind": "pgp"}]}, "does not match any of the expected tags", id="unknown_signature_kind"
        ),
        pytest.param({"publisher": {"name": ""}}, "publisher.name", id="empty_publisher"),
    ],
)
def test_release_problems_name_plugin_and_version(fields, expected):
    with pytest.raises(IndexFormatError, match=expected):
        parse(index_document(release(**fields)))


def test_duplicate_versions_and_ids_are_refused():
    with pytest.raises(IndexFormatError, match=r"version 1\.0\.0 is listed twice \(as 1\.0\.0 and 1\.0\)"):
        parse(index_document(release("1.0.0"), release("1.0")))
    document = index_document()
    document["plugins"].append(dict(document["plugins"][0]))
    with pytest.raises(IndexFormatError, match=r"plugin id .acme\.box. is listed twice"):
        parse(document)


def test_the_published_schema_matches_the_models():
    committed = (SCHEMAS / SCHEMA_FILE_NAME).read_text(encoding="utf-8")
    assert committed == schema_text(), "run: python -m aperio_plugins.registry.schema docs/schemas/registry"


def test_the_published_schema_accepts_a_valid_index_and_refuses_an_invalid_one():
    jsonschema = pytest.importorskip("jsonschema")  # installed with oras
    schema = json.loads((SCHEMAS / SCHEMA_FILE_NAME).read_text(encoding="utf-8"))
    jsonschema.validate(index_document(), schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(index_document(release(sha256="nope")), schema)
