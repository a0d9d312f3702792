"""Signatures over a wheel file itself, as publishers make them: Sigstore message-signature bundles
(`sigstore sign plugin.whl` writes `plugin.whl.sigstore.json`) and PEP 740 attestations.

They reach the host from three places: files beside a wheel installed from a file, a release's
signatures in the index, and a signature layer of an OCI artifact. Each is checked against the
wheel's sha256, offline, against the operator's trusted identities or pinned Trusted Publishers.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import msgspec

from ._sigstore import SigstoreTrust
from .errors import ConfigurationError, VerificationError

WheelSignatureKind = Literal["sigstore-bundle", "pep740"]

# What may sit beside `NAME.whl`, and what it is. `.sigstore.json` and `.sigstore` are what
# `sigstore sign` writes; `.publish.attestation` and `.slsa.attestation` are PEP 740 attestation
# objects; `.provenance` is a provenance object as PyPI's integrity API serves it.
SIDE_FILES: dict[str, WheelSignatureKind] = {
    ".sigstore.json": "sigstore-bundle",
    ".sigstore": "sigstore-bundle",
    ".publish.attestation": "pep740",
    ".slsa.attestation": "pep740",
    ".provenance": "pep740",
}
MAX_SIDE_FILE_BYTES = 4 * 1024 * 1024


class WheelSignature(msgspec.Struct, frozen=True):
    """One signature over a wheel file, and where it came from (named in reports)."""

    kind: WheelSignatureKind
    data: bytes
    origin: str


def signatures_beside(wheel: Path) -> list[WheelSignature]:
    """Return the signature files beside the wheel at `wheel` (none: an empty list).

    Raises `VerificationError` for one that cannot be read or is too large to be a signature.
    """
    found = []
    for suffix, kind in SIDE_FILES.items():
        path = wheel.with_name(wheel.name + suffix)
        try:
            with path.open("rb") as stream:
                data = stream.read(MAX_SIDE_FILE_BYTES + 1)
        except FileNotFoundError:
            continue
        except OSError as exc:
            raise VerificationError(f"{path.name}: unreadable: {exc.strerror or exc}") from None
        if len(data) > MAX_SIDE_FILE_BYTES:
            raise VerificationError(f"{path.name}: larger than {MAX_SIDE_FILE_BYTES} bytes")
        found.append(WheelSignature(kind, data, path.name))
    return found


def verify_wheel_signature(signature: WheelSignature, filename: str, sha256: str, trust: SigstoreTrust) -> str:
    """Return who signed the wheel `filename` (sha256 hex `sha256`) with `signature`; raise
    `VerificationError` naming the signature's origin and why it does not verify."""
    try:
        if signature.kind == "sigstore-bundle":
            from ._sigstore import verify_artifact_digest  # imports sigstore only now

            return verify_artifact_digest(signature.data, sha256, trust)
        from ._attestations import verify_attestation_data

        return verify_attestation_data(signature.data, filename, sha256, trust)
    except (VerificationError, ConfigurationError) as exc:
        raise VerificationError(f"{signature.origin}: {exc.message}") from None


class WheelVerdict(msgspec.Struct, frozen=True):
    """The signers of the wheel-level signatures that verified, and why the others did not."""

    signers: tuple[str, ...]
    problems: tuple[str, ...]


def verify_wheel_signatures(
    signatures: Sequence[WheelSignature], filename: str, sha256: str, trust: SigstoreTrust
) -> WheelVerdict:
    """Check every wheel-level signature; never raises for a signature's fault."""
    signers, problems = [], []
    for signature in signatures:
        try:
            signers.append(verify_wheel_signature(signature, filename, sha256, trust))
        except VerificationError as exc:
            problems.append(exc.message)
    return WheelVerdict(tuple(signers), tuple(problems))


def as_json_object(signature: WheelSignature) -> object:
    """Return the signature's JSON document (as the index carries it); raise `VerificationError` if not JSON."""
    try:
        return json.loads(signature.data)
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise VerificationError(f"{signature.origin}: not JSON") from None
