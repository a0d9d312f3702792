"""The signature file a signed wheel carries in its `.dist-info/`: its format, read by verification and
written by signing (`_signing`).

The signature file (`aperio-signature.json`) holds one or more signatures over
the same canonical statement:

    {"format": 1, "signatures": [
        {"kind": "ed25519", "envelope": <DSSE envelope>},
        {"kind": "sigstore", "bundle": <Sigstore bundle with a DSSE envelope>}]}
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any, ClassVar, Final, Literal

import msgspec

from ._statement import build_statement, is_signed_path
from ._untrusted_json import UntrustedJsonError, loads_bounded
from .errors import VerificationError

if TYPE_CHECKING:
    from ._wheel import Wheel  # the wheel reader (zipfile, configparser) is for signing, not for verifying

SIGNATURE_FORMAT: Final = 1
MAX_SIGNATURE_FILE_BYTES = 1024 * 1024

# msgspec Structs, tagged by `kind`: the format is three small records, and a pydantic model costs a few ms
# to build at import, which every start that checks a signature paid (docs/performance.md).


class Ed25519Signature(msgspec.Struct, frozen=True, forbid_unknown_fields=True, tag_field="kind", tag="ed25519"):
    kind: ClassVar[str] = "ed25519"
    envelope: dict[str, Any]


class SigstoreSignature(msgspec.Struct, frozen=True, forbid_unknown_fields=True, tag_field="kind", tag="sigstore"):
    kind: ClassVar[str] = "sigstore"
    bundle: dict[str, Any]


class SignatureFile(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    format: Literal[1]
    signatures: list[Ed25519Signature | SigstoreSignature]

    def to_json(self) -> bytes:
        """The file's bytes as signing writes them: indented, keys sorted, a final newline."""
        return json.dumps(msgspec.to_builtins(self), indent=2, sort_keys=True).encode() + b"\n"


def _location(exc: msgspec.ValidationError) -> str:
    # msgspec says "Expected `int`, got `str` - at `$.signatures[0].kind`"; shown as pydantic's
    # locations are elsewhere in the host: "signatures.0.kind: Expected `int`, got `str`".
    message, _, where = str(exc).partition(" - at `")
    path = where.rstrip("`").removeprefix("$").lstrip(".").replace("[", ".").replace("]", "")
    return f"{path or '(root)'}: {message}"


def parse_signature_file(data: bytes) -> SignatureFile:
    """Return the parsed signature file; raise `VerificationError` if it is truncated or malformed."""
    if len(data) > MAX_SIGNATURE_FILE_BYTES:
        raise VerificationError(f"malformed signature file: larger than {MAX_SIGNATURE_FILE_BYTES} bytes")
    try:
        document = msgspec.convert(loads_bounded(data), SignatureFile)
    except UntrustedJsonError as exc:
        raise VerificationError(f"malformed signature file: (root): {exc}") from None
    except msgspec.ValidationError as exc:  # a ValueError too: before the next clause
        raise VerificationError(f"malformed signature file: {_location(exc)}") from None
    except ValueError:  # not JSON, or not UTF-8
        raise VerificationError("malformed signature file: (root): Invalid JSON") from None
    if not document.signatures:
        raise VerificationError("malformed signature file: it holds no signatures")
    return document


def wheel_statement(wheel: Wheel) -> bytes:
    """Return the canonical statement over every signed member of `wheel`."""
    digests = {name: digest for name, digest in wheel.digests().items() if is_signed_path(name)}
    return build_statement(wheel.distribution, wheel.version, digests)
