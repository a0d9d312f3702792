"""Install receipts: the host's own signature over a plugin's installed files, written when it verified the
publisher's signature over the wheel file.

A signature over a wheel file (a Sigstore message-signature bundle, a PEP 740
attestation) cannot be checked again once pip has unpacked the wheel. So the
install that verified one writes `aperio-receipt.json` into the distribution's
`.dist-info`: a DSSE envelope, signed with the host's Ed25519 key, over an
in-toto statement of every installed file's sha256, the release, and the
publisher that was verified. At load the receipt is checked like an embedded
signature, with the host's public key as the only trusted key.

The host key lives in the state directory (`host-key.pem`, created 0600 with
O_EXCL on first use; `host-key.pub.pem` beside it). Whoever can read the private
key can make any plugin `verified`: it is a secret (docs/signing.md).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING

import msgspec

from ._keys import TrustedKey, key_id, load_private_key, load_public_key, sign_envelope, verify_envelope
from ._statement import PAYLOAD_TYPE, SignedStatement, build_statement, parse_statement
from .errors import ConfigurationError, InstallError, VerificationError

if TYPE_CHECKING:  # cryptography only when a receipt is made or checked (see _keys)
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

RECEIPT_FILE_NAME = "aperio-receipt.json"
RECEIPT_PREDICATE_TYPE = "https://aperio-plugins.dev/install-receipt/v1"
HOST_KEY_NAME = "host-key.pem"
HOST_PUBLIC_KEY_NAME = "host-key.pub.pem"
RECEIPT_FORMAT = 1
MAX_RECEIPT_BYTES = 16 * 1024 * 1024

# Files of a `.dist-info` that a receipt does not cover: what installers add or rewrite (PEP 376, PEP 610),
# the publisher's embedded signature file, and the receipt itself. The same list verification tolerates.
_NOT_COVERED = frozenset({"RECORD", "INSTALLER", "REQUESTED", "direct_url.json", "aperio-signature.json"})


class VerifiedReceipt(msgspec.Struct, frozen=True):
    """A receipt this host signed: the statement of the installed files, and who published them."""

    statement: SignedStatement
    publisher: str
    key_id: str


def host_public_key_path(state_dir: Path) -> Path:
    return state_dir / HOST_PUBLIC_KEY_NAME


def host_key(state_dir: Path) -> Ed25519PrivateKey:
    """Return the host's receipt key, creating it (0600, never overwritten) in `state_dir` on first use.

    Raises `ConfigurationError` when the key cannot be read or created.
    """
    private_path = state_dir / HOST_KEY_NAME
    if private_path.exists():
        return load_private_key(private_path)
    from cryptography.hazmat.primitives import serialization  # writing a key: installs only
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    try:
        state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        private_key = Ed25519PrivateKey.generate()
        pem = private_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        # O_EXCL: two installs racing to create the key must not each keep a different one.
        descriptor = os.open(private_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return load_private_key(private_path)
    except OSError as exc:
        raise ConfigurationError(f"cannot create the host key {private_path}: {exc.strerror or exc}") from None
    with os.fdopen(descriptor, "wb") as stream:
        stream.write(pem)
        stream.flush()
        os.fsync(stream.fileno())
    public = private_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    host_public_key_path(state_dir).write_bytes(public)
    return private_key


def _public_key(path: Path | None) -> Ed25519PublicKey:
    if path is None:
        raise VerificationError("install receipt refused: this host has no receipt key configured")
    from cryptography.exceptions import UnsupportedAlgorithm
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    try:
        key = load_public_key(path.read_bytes())
    except FileNotFoundError:
        raise VerificationError(f"install receipt refused: this host has no receipt key ({path})") from None
    except (OSError, ValueError, TypeError, UnsupportedAlgorithm) as exc:
        raise VerificationError(f"install receipt refused: the host's receipt key {path} is unusable: {exc}") from None
    if not isinstance(key, Ed25519PublicKey):
        raise VerificationError(f"install receipt refused: {path} is not an Ed25519 public key")
    return key


def installed_files(root: Path, entries: list[str]) -> dict[str, str]:
    """Return the sha256 of every file under `root`'s top-level `entries` that a receipt covers."""
    from ._verify import file_sha256  # _verify imports this module

    digests: dict[str, str] = {}
    base = str(root)
    for entry in entries:
        top = os.path.join(base, entry)
        paths = [top] if not os.path.isdir(top) else [os.path.join(d, n) for d, _, names in os.walk(top) for n in names]
        for path in paths:
            relative = os.path.relpath(path, base).replace(os.sep, "/")
            directory, _, name = relative.rpartition("/")
            if directory.endswith(".dist-info") and "/" not in directory and name in (*_NOT_COVERED, RECEIPT_FILE_NAME):
                continue
            if "/__pycache__/" in f"/{relative}" and relative.endswith(".pyc"):
                continue
            digest = file_sha256(path)
            if digest is None:
                raise InstallError(f"cannot read {relative} to write the install receipt")
            digests[relative] = digest
    return digests


def write_receipt(
    root: Path,
    metadata_dir: Path,
    *,
    distribution: str,
    version: str,
    publisher: str,
    wheel_sha256: str,
    state_dir: Path,
) -> Path:
    """Write a receipt for the release installed under `root` (its `.dist-info` is `metadata_dir`).

    Raises `InstallError` when the wheel brought a receipt of its own (only the host writes one), and
    `ConfigurationError` when the host key cannot be had.
    """
    target = metadata_dir / RECEIPT_FILE_NAME
    if os.path.lexists(target):
        raise InstallError(f"{distribution} {version}: the wheel carries {RECEIPT_FILE_NAME}; only the host writes one")
    entries = sorted(os.listdir(root))
    digests = installed_files(root, entries)
    statement = build_statement(
        distribution,
        version,
        digests,
        predicate_type=RECEIPT_PREDICATE_TYPE,
        extra={"publisher": publisher, "wheel_sha256": wheel_sha256},
    )
    envelope = sign_envelope(statement, PAYLOAD_TYPE, host_key(state_dir))
    document = {"format": RECEIPT_FORMAT, "envelope": envelope}
    descriptor = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    with os.fdopen(descriptor, "w", encoding="utf-8") as stream:
        json.dump(document, stream, indent=2, sort_keys=True)
        stream.write("\n")
    return target


def verify_receipt(data: bytes, public_key_path: Path | None) -> VerifiedReceipt:
    """Return the statement of a receipt signed by this host's key; raise `VerificationError` otherwise.

    What the statement says (release, files, whether the publisher is still trusted) is for the caller to check.
    """
    if len(data) > MAX_RECEIPT_BYTES:
        raise VerificationError(f"install receipt refused: larger than {MAX_RECEIPT_BYTES} bytes")
    try:
        document = json.loads(data)
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise VerificationError("install receipt refused: not JSON") from None
    if (
        not isinstance(document, dict)
        or document.get("format") != RECEIPT_FORMAT
        or set(document)
        != {
            "format",
            "envelope",
        }
    ):
        raise VerificationError(f"install receipt refused: not a format {RECEIPT_FORMAT} receipt")
    public_key = _public_key(public_key_path)
    trusted = TrustedKey(key_id(public_key), public_key_path or Path(), public_key)
    try:
        envelope = verify_envelope(document["envelope"], (trusted,))
    except VerificationError as exc:
        raise VerificationError(
            f"install receipt refused: it is not signed by this host's key ({exc.message}); a receipt from another"
            " host, or a forged one"
        ) from None
    if envelope.payload_type != PAYLOAD_TYPE:
        raise VerificationError(f"install receipt refused: payload type {envelope.payload_type!r} is not in-toto")
    statement = parse_statement(envelope.payload, predicate_type=RECEIPT_PREDICATE_TYPE)
    publisher = statement.predicate.get("publisher")
    if not isinstance(publisher, str) or not publisher:
        raise VerificationError("install receipt refused: it names no publisher")
    return VerifiedReceipt(statement, publisher, trusted.key_id)
