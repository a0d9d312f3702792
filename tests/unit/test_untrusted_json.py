"""The depth bound on JSON from outside the host: deep documents are refused by name, at the bound exactly."""

from __future__ import annotations

import json

import pytest

from aperio_plugins._statement import parse_statement
from aperio_plugins._untrusted_json import MAX_JSON_DEPTH, UntrustedJsonError, loads_bounded
from aperio_plugins.errors import IndexFormatError, VerificationError
from aperio_plugins.registry._index import parse_index


def nested(depth: int, kind: str) -> str:
    """A document `depth` levels deep: lists, or objects with one key each."""
    if kind == "list":
        return "[" * depth + "]" * depth
    return '{"a":' * (depth - 1) + "{}" + "}" * (depth - 1)


@pytest.mark.parametrize("kind", ["list", "object"])
def test_the_bound_itself_parses_and_one_more_level_is_refused(kind):
    assert loads_bounded(nested(MAX_JSON_DEPTH, kind)) is not None
    with pytest.raises(UntrustedJsonError, match=f"nested more than {MAX_JSON_DEPTH} levels deep"):
        loads_bounded(nested(MAX_JSON_DEPTH + 1, kind))


def test_a_document_too_deep_for_the_parser_is_the_same_refusal():
    with pytest.raises(UntrustedJsonError, match="nested more than"):
        loads_bounded("[" * 100_000)


def test_a_deep_branch_beside_shallow_ones_is_found():
    document = {"a": [1, 2, {"b": 3}], "z": json.loads(nested(MAX_JSON_DEPTH, "list"))}
    with pytest.raises(UntrustedJsonError):
        loads_bounded(json.dumps(document))


def test_an_index_nested_too_deep_is_refused_for_its_depth_not_its_schema():
    data = '{"format_version": 1, "plugins": ' + nested(MAX_JSON_DEPTH, "list") + "}"
    with pytest.raises(IndexFormatError, match=f"nested more than {MAX_JSON_DEPTH} levels deep"):
        parse_index(data.encode(), "index.json")


def test_a_statement_nested_too_deep_is_refused_for_its_depth():
    data = '{"_type": "https://in-toto.io/Statement/v1", "subject": ' + nested(MAX_JSON_DEPTH, "list") + "}"
    with pytest.raises(VerificationError, match=f"nested more than {MAX_JSON_DEPTH} levels deep"):
        parse_statement(data.encode())
