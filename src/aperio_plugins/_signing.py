"""Signing a plugin wheel: the author's side of the signature file (its format: `_signature_file`).

Signing again with another key adds a signature; the statement is unchanged
because it excludes the signature file.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import msgspec

from ._keys import load_private_key, sign_envelope
from ._signature_file import (
    SIGNATURE_FORMAT,
    Ed25519Signature,
    SignatureFile,
    SigstoreSignature,
    parse_signature_file,
    wheel_statement,
)
from ._statement import PAYLOAD_TYPE, SIGNATURE_FILE_NAME
from ._wheel import Wheel, read_wheel, write_wheel

# The format's names, for callers that sign (the reading side imports `_signature_file`).
__all__ = [
    "SIGNATURE_FORMAT",
    "Ed25519Signature",
    "SignedWheel",
    "SigstoreSignature",
    "ed25519_signer",
    "parse_signature_file",
    "sigstore_signer",
    "sign_wheel",
    "wheel_statement",
]


class SignedWheel(msgspec.Struct, frozen=True):
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
    payload = document.to_json()
    target = destination if destination is not None else source
    write_wheel(wheel, {f"{wheel.dist_info}/{SIGNATURE_FILE_NAME}": payload}, target)
    return SignedWheel(target, signer, len(document.signatures))


def ed25519_signer(key_path: Path) -> Callable[[bytes], tuple[Ed25519Signature | SigstoreSignature, str]]:
    """Return a signing function for `sign_wheel` that uses the Ed25519 private key at `key_path`."""
    private_key = load_private_key(key_path)

    def sign(statement: bytes) -> tuple[Ed25519Signature | SigstoreSignature, str]:
        envelope = sign_envelope(statement, PAYLOAD_TYPE, private_key)
        return Ed25519Signature(envelope=envelope), f"ed25519 key {envelope['signatures'][0]['keyid']}"

    return sign


def sigstore_signer(
    identity_token: str | None = None,
) -> Callable[[bytes], tuple[Ed25519Signature | SigstoreSignature, str]]:
    """Return a signing function that signs with the public Sigstore instance and an ambient OIDC identity."""

    def sign(statement: bytes) -> tuple[Ed25519Signature | SigstoreSignature, str]:
        from ._sigstore import sign_dsse_bundle

        bundle = json.loads(sign_dsse_bundle(statement, identity_token=identity_token))
        return SigstoreSignature(bundle=bundle), "sigstore"

    return sign
