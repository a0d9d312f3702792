"""PEP 740 attestations, verified offline against the Trusted Publishers the operator pinned.

An attestation (the publish or SLSA provenance predicate PyPI serves) is a DSSE
envelope over an in-toto statement whose one subject is the distribution file.
It is verified with the same pinned trusted root as every Sigstore bundle, and
its signing certificate must belong to one of the operator's `[[trusted_publisher]]`
entries. A provenance object names a publisher too; that name is never trusted:
it can only narrow trust (a pinned `environment` must match it).

`pypi-attestations` parses the formats and supplies the publisher policies; it
imports sigstore, so it is imported only inside these functions.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from packaging.utils import (
    InvalidSdistFilename,
    InvalidWheelFilename,
    parse_sdist_filename,
    parse_wheel_filename,
)

from ._sigstore import SigstoreTrust, TrustedPublisher, parse_bundle, refusals, verifier
from .errors import ConfigurationError, VerificationError

if TYPE_CHECKING:
    from pypi_attestations import Attestation

IN_TOTO_PAYLOAD_TYPE = "application/vnd.in-toto+json"
ATTESTATION_TYPES = {
    "https://docs.pypi.org/attestations/publish/v1": "publish",
    "https://slsa.dev/provenance/v1": "SLSA provenance",
}
MAX_ATTESTATION_BYTES = 4 * 1024 * 1024


def _fail(reason: str) -> VerificationError:
    return VerificationError(f"PEP 740 attestation refused: {reason}")


def _release_of(filename: str) -> tuple[object, ...]:
    """Return what identifies a distribution file: name and version (and build tag and tags for a wheel)."""
    try:
        if filename.endswith(".whl"):
            return tuple(parse_wheel_filename(filename))
        return tuple(parse_sdist_filename(filename))
    except (InvalidWheelFilename, InvalidSdistFilename) as exc:
        raise _fail(f"{filename!r} is not a distribution file name: {exc}") from None


def verify_attestation_data(data: bytes, filename: str, sha256: str, trust: SigstoreTrust) -> str:
    """Verify a PEP 740 attestation object or a PyPI provenance object over the distribution `filename`
    whose sha256 (hex) is `sha256`; return the verified publisher's description.

    Every attestation in a provenance object must verify. Raises `VerificationError` naming why.
    """
    if not trust.publishers:
        raise _fail("no trusted publishers configured ([[trusted_publisher]] in the identities file)")
    if len(data) > MAX_ATTESTATION_BYTES:
        raise _fail(f"larger than {MAX_ATTESTATION_BYTES} bytes")
    try:
        document = json.loads(data)
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise _fail("not JSON") from None
    if isinstance(document, dict) and "attestation_bundles" in document:
        return _verify_provenance(document, filename, sha256, trust)
    return verify_attestation(_attestation(document), filename, sha256, trust, required_environment=None)


def _attestation(document: Any) -> Attestation:
    try:
        from pypi_attestations import Attestation
    except ImportError as exc:
        raise ConfigurationError(f"PEP 740 attestations need the `pypi-attestations` package: {exc}") from None
    from pydantic import ValidationError

    try:
        return Attestation.model_validate(document)
    except (ValidationError, ValueError, TypeError) as exc:
        raise _fail(f"malformed attestation: {str(exc).splitlines()[0]}") from None


def _verify_provenance(document: dict[str, Any], filename: str, sha256: str, trust: SigstoreTrust) -> str:
    bundles = document.get("attestation_bundles")
    if document.get("version") != 1 or not isinstance(bundles, list) or not bundles:
        raise _fail("malformed provenance object: needs version 1 and attestation_bundles")
    signers = []
    for bundle in bundles:
        items = bundle.get("attestations") if isinstance(bundle, dict) else None
        if not isinstance(items, list) or not items:
            raise _fail("malformed provenance object: an attestation bundle has no attestations")
        named = bundle.get("publisher")
        environment = named.get("environment") if isinstance(named, dict) else None
        for item in items:
            signers.append(
                verify_attestation(
                    _attestation(item),
                    filename,
                    sha256,
                    trust,
                    required_environment=environment if isinstance(environment, str) else None,
                )
            )
    return "; ".join(sorted(set(signers)))


def verify_attestation(
    attestation: Attestation, filename: str, sha256: str, trust: SigstoreTrust, *, required_environment: str | None
) -> str:
    """Verify one attestation over `filename` (sha256 `sha256`); return the description of the pinned
    publisher whose certificate signed it. `required_environment` is the environment a provenance
    object names (None: none named). Raises `VerificationError`."""
    with refusals():
        bundle = parse_bundle(attestation.to_bundle().to_json().encode())
    checker = verifier(trust.trusted_root)
    reasons = []
    for publisher in trust.publishers:
        if publisher.environment is not None and publisher.environment != required_environment:
            reasons.append(f"{publisher.describe()}: the attestation names no environment {publisher.environment!r}")
            continue
        try:
            with refusals():
                payload_type, payload = checker.verify_dsse(bundle, _policy(publisher))
        except VerificationError as exc:
            reason = exc.message.removeprefix("Sigstore bundle refused: ")
            reasons.append(f"{publisher.describe()}: {reason[:300]}")
            continue
        if payload_type != IN_TOTO_PAYLOAD_TYPE:
            raise _fail(f"payload type {payload_type!r} is not in-toto")
        kind = _check_statement(payload, filename, sha256)
        return f"PEP 740 {kind} attestation by {publisher.describe()}"
    raise _fail("no pinned trusted publisher signed it: " + "; ".join(reasons))


def _policy(publisher: TrustedPublisher) -> Any:
    from pypi_attestations import GitHubPublisher, GitLabPublisher

    if publisher.kind == "github":
        pinned: Any = GitHubPublisher(repository=publisher.repository, workflow=publisher.workflow)
    else:
        pinned = GitLabPublisher(repository=publisher.repository, workflow_filepath=publisher.workflow)
    # The library's own policy for a pinned publisher (issuer, repository, workflow; exact): it is what
    # PyPI checks, and the library exposes it only this way.
    return pinned._as_policy()


def _check_statement(payload: bytes, filename: str, sha256: str) -> str:
    """Return the attestation kind of a statement whose one subject is this distribution; raise otherwise."""
    try:
        statement = json.loads(payload)
        subjects = statement["subject"]
        predicate_type = statement["predicateType"]
    except (ValueError, KeyError, TypeError, RecursionError):
        raise _fail("the DSSE payload is not an in-toto statement") from None
    if not isinstance(subjects, list) or len(subjects) != 1 or not isinstance(subjects[0], dict):
        raise _fail("the statement must have exactly one subject")
    name, digest = subjects[0].get("name"), subjects[0].get("digest")
    if not isinstance(name, str) or _release_of(name) != _release_of(filename):
        raise _fail(f"the statement is about {name!r}, not {filename}")
    if not isinstance(digest, dict) or digest.get("sha256") != sha256:
        raise _fail(f"the statement's subject digest is not the sha256 of {filename} ({sha256})")
    kind = ATTESTATION_TYPES.get(predicate_type) if isinstance(predicate_type, str) else None
    if kind is None:
        raise _fail(f"unknown attestation type {predicate_type!r}")
    return kind
