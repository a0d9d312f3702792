"""Signing a plugin wheel, and the signature file it carries in its `.dist-info/`.

The signature file (`aperio-signature.json`) holds one or more signatures over
the same canonical statement:

    {"format": 1, "signatures": [
        {"kind": "ed25519", "envelope": <DSSE envelope>},
        {"kind": "sigstore", "bundle": <Sigstore bundle with a DSSE envelope>}]}

Signing again with another key adds a signature; the statement is unchanged
because it excludes the signature file.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, ValidationError

from ._keys import load_private_key, sign_envelope
from ._statement import PAYLOAD_TYPE, SIGNATURE_FILE_NAME, build_statement, is_signed_path
from ._validation import first_problem
from ._wheel import Wheel, read_wheel, write_wheel
from .errors import VerificationError

SIGNATURE_FORMAT = 1
MAX_SIGNATURE_FILE_BYTES = 1024 * 1024


class Ed25519Signature(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    kind: Literal["ed25519"]
    envelope: dict[str, Any]


class SigstoreSignature(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    kind: Literal["sigstore"]
    bundle: dict[str, Any]


class SignatureFile(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    format: Literal[1]
    signatures: list[Ed25519Signature | SigstoreSignature]


def parse_signature_file(data: bytes) -> SignatureFile:
    """Return the parsed signature file; raise `VerificationError` if it is truncated or malformed."""
    if len(data) > MAX_SIGNATURE_FILE_BYTES:
        raise VerificationError(f"malformed signature file: larger than {MAX_SIGNATURE_FILE_BYTES} bytes")
    try:
        document = SignatureFile.model_validate_json(data)
    except ValidationError as exc:
        raise VerificationError(f"malformed signature file: {first_problem(exc)}") from None
    if not document.signatures:
        raise VerificationError("malformed signature file: it holds no signatures")
    return document


def wheel_statement(wheel: Wheel) -> bytes:
    """Return the canonical statement over every signed member of `wheel`."""
    digests = {name: digest for name, digest in wheel.digests().items() if is_signed_path(name)}
    return build_statement(wheel.distribution, wheel.version, digests)


@dataclass(frozen=True)
class SignedWheel:
    path: Path
    signer: str
    signatures: int


def _existing_signatures(wheel: Wheel) -> list[Ed25519Signature | SigstoreSignature]:
    data = wheel.members.get(f"{wheel.dist_info}/{SIGNATURE_FILE_NAME}")
    return [] if data is None else list(parse_signature_file(data).signatures)


def sign_wheel(
    source: Path,
    destination: Path | None,
    sign: Callable[[bytes], tuple[Ed25519Signature | SigstoreSignature, str]],
) -> SignedWheel:
    """Sign the wheel at `source` with `sign(statement) -> (signature, signer)` and write it to
    `destination` (default: in place). A corrupt wheel is refused before anything is written."""
    wheel = read_wheel(source)
    existing = _existing_signatures(wheel)
    signature, signer = sign(wheel_statement(wheel))
    document = SignatureFile(format=SIGNATURE_FORMAT, signatures=[*existing, signature])
    payload = json.dumps(document.model_dump(mode="json"), indent=2, sort_keys=True).encode() + b"\n"
    target = destination if destination is not None else source
    write_wheel(wheel, {f"{wheel.dist_info}/{SIGNATURE_FILE_NAME}": payload}, target)
    return SignedWheel(target, signer, len(document.signatures))


def ed25519_signer(key_path: Path) -> Callable[[bytes], tuple[Ed25519Signature | SigstoreSignature, str]]:
    """Return a signing function for `sign_wheel` that uses the Ed25519 private key at `key_path`."""
    private_key = load_private_key(key_path)

    def sign(statement: bytes) -> tuple[Ed25519Signature | SigstoreSignature, str]:
        envelope = sign_envelope(statement, PAYLOAD_TYPE, private_key)
        return Ed25519Signature(kind="ed25519", envelope=envelope), f"ed25519 key {envelope['signatures'][0]['keyid']}"

    return sign


def sigstore_signer(
    identity_token: str | None = None,
) -> Callable[[bytes], tuple[Ed25519Signature | SigstoreSignature, str]]:
    """Return a signing function that signs with the public Sigstore instance and an ambient OIDC identity."""

    def sign(statement: bytes) -> tuple[Ed25519Signature | SigstoreSignature, str]:
        from ._sigstore import sign_dsse_bundle

        bundle = json.loads(sign_dsse_bundle(statement, identity_token=identity_token))
        return SigstoreSignature(kind="sigstore", bundle=bundle), "sigstore"

    return sign
