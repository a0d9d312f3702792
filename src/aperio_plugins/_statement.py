"""The signed statement: an in-toto Statement v1 that lists every file of a plugin wheel with its sha256.

The statement is serialized with RFC 8785 (JSON Canonicalization Scheme), so
the same wheel always yields the same bytes, and it is what both signature
backends sign. Its format is documented in docs/signing.md.
"""

from __future__ import annotations

import reprlib
from collections.abc import Mapping
from typing import Any

import msgspec

from ._names import canonicalize_name
from ._untrusted_json import UntrustedJsonError, loads_bounded
from .errors import VerificationError

STATEMENT_TYPE = "https://in-toto.io/Statement/v1"
PREDICATE_TYPE = "https://aperio-plugins.dev/wheel-files/v1"
PAYLOAD_TYPE = "application/vnd.in-toto+json"
SIGNATURE_FILE_NAME = "aperio-signature.json"

# Files of `.dist-info/` that are not signed: RECORD, because installers
# rewrite it, and the signature file itself.
UNSIGNED_METADATA_FILES = frozenset({"RECORD", SIGNATURE_FILE_NAME})

_HEX = "0123456789abcdef"  # a sha256 digest is 64 of these, lower case


def is_signed_path(path: str) -> bool:
    """Return whether a wheel member at `path` belongs in the statement."""
    directory, _, name = path.rpartition("/")
    return not (directory.endswith(".dist-info") and "/" not in directory and name in UNSIGNED_METADATA_FILES)


class SignedStatement(msgspec.Struct, frozen=True):
    """What a signature vouches for: one distribution release and the digest of each of its files."""

    distribution: str
    version: str
    digests: Mapping[str, str]
    predicate: Mapping[str, object] = msgspec.field(default_factory=dict)

    def matches_release(self, distribution: str, version: str) -> bool:
        return canonicalize_name(self.distribution) == canonicalize_name(distribution) and self.version == version


def build_statement(
    distribution: str,
    version: str,
    digests: Mapping[str, str],
    *,
    predicate_type: str = PREDICATE_TYPE,
    extra: Mapping[str, str] | None = None,
) -> bytes:
    """Return the canonical statement bytes for a release whose files have `digests` (path -> sha256 hex).

    `predicate_type` and `extra` predicate fields are for other statements of the same shape (install receipts).
    """
    statement: dict[str, Any] = {
        "_type": STATEMENT_TYPE,
        "subject": [{"name": path, "digest": {"sha256": digests[path]}} for path in sorted(digests)],
        "predicateType": predicate_type,
        "predicate": {**(extra or {}), "distribution": distribution, "version": version},
    }
    import rfc8785  # canonical JSON is for writing a statement; verifying one only parses it

    return rfc8785.dumps(statement)


def _fail(reason: str) -> VerificationError:
    return VerificationError(f"malformed signed statement: {reason}")


def parse_statement(payload: bytes, *, predicate_type: str = PREDICATE_TYPE) -> SignedStatement:
    """Return the statement in a verified payload; raise `VerificationError` if it is not one of ours
    (or its predicate type is not `predicate_type`)."""
    try:
        document: Any = loads_bounded(payload)
    except UntrustedJsonError as exc:
        raise _fail(str(exc)) from None
    except ValueError:
        raise _fail("not JSON") from None
    if not isinstance(document, dict) or document.get("_type") != STATEMENT_TYPE:
        raise _fail(f"_type is not {STATEMENT_TYPE}")
    if document.get("predicateType") != predicate_type:
        raise _fail(f"predicateType {document.get('predicateType')!r} is not {predicate_type}")
    predicate = document.get("predicate")
    release_named = isinstance(predicate, dict) and all(
        isinstance(predicate.get(key), str) for key in ("distribution", "version")
    )
    if not isinstance(predicate, dict) or not release_named:
        raise _fail("predicate must name the distribution and version")
    subjects = document.get("subject")
    if not isinstance(subjects, list) or not subjects:
        raise _fail("no subjects")
    digests: dict[str, str] = {}
    # One pass, no regular expression and no exception per subject: a plugin of 2,000 files has 2,000.
    for subject in subjects:
        try:
            name, digest = subject["name"], subject["digest"]["sha256"]
        except (TypeError, KeyError):  # not an object, or a digest that is not one
            name = digest = None
        if not isinstance(name, str) or not isinstance(digest, str) or len(digest) != 64 or digest.strip(_HEX):
            raise _fail(f"subject {reprlib.repr(subject)} needs a name and a sha256 digest")
        if name.startswith("/") or (".." in name and ".." in name.split("/")) or name in digests:
            raise _fail(f"subject name {reprlib.repr(name)} is absolute, escapes the install root, or repeats")
        digests[name] = digest
    return SignedStatement(predicate["distribution"], predicate["version"], digests, predicate)
