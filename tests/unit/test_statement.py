"""The signed statement: canonical bytes, what is signed, and every malformed statement refused by name."""

from __future__ import annotations

import json

import pytest

from aperio_plugins._statement import (
    PREDICATE_TYPE,
    STATEMENT_TYPE,
    build_statement,
    is_signed_path,
    parse_statement,
)
from aperio_plugins.errors import VerificationError

A, B = "a" * 64, "b" * 64


def test_the_same_files_give_the_same_bytes_whatever_their_order():
    one = build_statement("acme-box", "1.0.0", {"acme_box/__init__.py": A, "acme_box/x.py": B})
    other = build_statement("acme-box", "1.0.0", {"acme_box/x.py": B, "acme_box/__init__.py": A})
    assert one == other
    assert b" " not in one  # RFC 8785: no insignificant whitespace


def test_a_statement_round_trips_and_names_its_release():
    statement = parse_statement(build_statement("Acme_Box", "1.0.0", {"acme_box/__init__.py": A}))
    assert dict(statement.digests) == {"acme_box/__init__.py": A}
    assert statement.matches_release("acme-box", "1.0.0")  # names compare canonicalized
    assert not statement.matches_release("acme-box", "1.0.1")
    assert not statement.matches_release("acme-boxes", "1.0.0")


@pytest.mark.parametrize(
    ("path", "signed"),
    [
        ("acme_box/__init__.py", True),
        ("acme_box-1.0.dist-info/METADATA", True),
        ("acme_box-1.0.dist-info/entry_points.txt", True),
        ("acme_box-1.0.dist-info/RECORD", False),
        ("acme_box-1.0.dist-info/aperio-signature.json", False),
        ("acme_box/RECORD", True),  # only the metadata directory's RECORD is left out
        ("acme_box/x.dist-info/RECORD", True),
    ],
)
def test_only_record_and_the_signature_file_are_left_out(path, signed):
    assert is_signed_path(path) is signed


def statement(**changes: object) -> bytes:
    document: dict[str, object] = {
        "_type": STATEMENT_TYPE,
        "subject": [{"name": "acme_box/__init__.py", "digest": {"sha256": A}}],
        "predicateType": PREDICATE_TYPE,
        "predicate": {"distribution": "acme-box", "version": "1.0.0"},
    }
    document.update(changes)
    return json.dumps(document).encode()


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"not json", "not JSON"),
        (statement(_type="https://in-toto.io/Statement/v0.1"), "_type is not"),
        (statement(predicateType="https://slsa.dev/provenance/v1"), "predicateType"),
        (statement(predicate={"distribution": "acme-box"}), "predicate must name the distribution and version"),
        (statement(subject=[]), "no subjects"),
        (statement(subject=[{"name": "x.py", "digest": {"sha256": "short"}}]), "needs a name and a sha256 digest"),
        (statement(subject=[{"name": "x.py", "digest": {"sha256": A.upper()}}]), "needs a name and a sha256 digest"),
        (statement(subject=[{"name": "x.py", "digest": {"sha256": A + "\n"}}]), "needs a name and a sha256 digest"),
        # Shapes that used to escape as AttributeError from a parser that must only refuse.
        (statement(subject=[{"name": "x.py", "digest": A}]), "needs a name and a sha256 digest"),
        (statement(subject=[{"name": "x.py", "digest": [A]}]), "needs a name and a sha256 digest"),
        (statement(subject=["x.py"]), "needs a name and a sha256 digest"),
        (statement(subject=[{"name": 7, "digest": {"sha256": A}}]), "needs a name and a sha256 digest"),
        (statement(subject=[{"name": "a/../../escape.py", "digest": {"sha256": A}}]), "escapes the install root"),
        (statement(subject=[{"name": "../escape.py", "digest": {"sha256": A}}]), "escapes the install root"),
        (statement(subject=[{"name": "/etc/passwd", "digest": {"sha256": A}}]), "is absolute"),
        (
            statement(subject=[{"name": "x.py", "digest": {"sha256": A}}, {"name": "x.py", "digest": {"sha256": B}}]),
            "or repeats",
        ),
    ],
)
def test_a_malformed_statement_is_refused_saying_why(payload, reason):
    with pytest.raises(VerificationError, match=r"^malformed signed statement: ") as refused:
        parse_statement(payload)
    assert reason in refused.value.message


def test_a_receipt_is_not_accepted_as_a_publisher_statement():
    receipt = build_statement("acme-box", "1.0.0", {"x.py": A}, predicate_type="https://example.invalid/receipt/v1")
    with pytest.raises(VerificationError, match="predicateType"):
        parse_statement(receipt)
    assert parse_statement(receipt, predicate_type="https://example.invalid/receipt/v1").version == "1.0.0"
