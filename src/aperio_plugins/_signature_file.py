"""The signature file a signed wheel carries in its `.dist-info/`: its format, read by verification and
written by signing (`_signing`).

The signature file (`aperio-signature.json`) holds one or more signatures over
the same canonical statement:

    {"format": 1, "signatures": [
        {"kind": "ed25519", "envelope": <DSSE envelope>},
        {"kind": "sigstore", "bundle": <Sigstore bundle with a DSSE envelope>}]}
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, ValidationError

from ._statement import build_statement, is_signed_path
from ._validation import first_problem
from .errors import VerificationError

if TYPE_CHECKING:
    from ._wheel import Wheel  # the wheel reader (zipfile, configparser) is for signing, not for verifying

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
