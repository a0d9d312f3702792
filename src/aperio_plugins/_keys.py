"""Ed25519 keys: generation, the trusted keys directory, and DSSE envelopes signed with them.

A key id is the sha256 of the public key's DER SubjectPublicKeyInfo, in hex:
derived from the key alone, so that anyone can compute it from the PEM.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgspec

from .errors import ConfigurationError, VerificationError

if TYPE_CHECKING:
    # cryptography is imported by the functions that use a key: a host with no trusted key files (and a
    # listing of plugins that are not signed) never needs its Rust bindings, a few ms of every start.
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

# `cryptography.hazmat.primitives.serialization` imports its SSH, RSA, EC and cipher modules, a few ms
# that every start paid to read the trusted keys. An Ed25519 SubjectPublicKeyInfo is these 12 DER bytes
# followed by the 32-byte key (RFC 8410), so the keys a start reads, and their ids, need none of it.
_ED25519_SPKI_PREFIX = bytes.fromhex("302a300506032b6570032100")
_PUBLIC_KEY_PEM = re.compile(rb"-----BEGIN PUBLIC KEY-----\n([A-Za-z0-9+/=\n]{1,200})-----END PUBLIC KEY-----\n?")


def key_id(public_key: Ed25519PublicKey) -> str:
    """Return the hex sha256 of the key's DER SubjectPublicKeyInfo."""
    return hashlib.sha256(_ED25519_SPKI_PREFIX + public_key.public_bytes_raw()).hexdigest()


def load_public_key(data: bytes) -> object:
    """Return the public key in PEM `data`, as `serialization.load_pem_public_key` does (and with its errors).

    A canonical Ed25519 PEM (the form `generate_keypair` writes and `cryptography` emits) is decoded
    directly; anything else, other key types and malformed files included, goes to `cryptography`.
    """
    match = _PUBLIC_KEY_PEM.fullmatch(data)
    if match is not None:
        try:
            der = base64.b64decode(match.group(1).replace(b"\n", b""), validate=True)
        except binascii.Error:
            der = b""
        if len(der) == len(_ED25519_SPKI_PREFIX) + 32 and der.startswith(_ED25519_SPKI_PREFIX):
            from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

            return Ed25519PublicKey.from_public_bytes(der[len(_ED25519_SPKI_PREFIX) :])
    from cryptography.hazmat.primitives import serialization

    return serialization.load_pem_public_key(data)


class TrustedKey(msgspec.Struct, frozen=True):
    key_id: str
    path: Path
    public_key: Ed25519PublicKey


class KeyProblem(msgspec.Struct, frozen=True):
    """A file in the keys directory that could not be used, and why."""

    path: Path
    reason: str


class Keyring(msgspec.Struct, frozen=True):
    keys: tuple[TrustedKey, ...]
    problems: tuple[KeyProblem, ...]


def generate_keypair(name: str, directory: Path) -> tuple[Path, Path]:
    """Write `NAME.pem` (private, mode 0600) and `NAME.pub.pem` into `directory`; return both paths.

    Raises `ConfigurationError` if either file exists: a key is never overwritten.
    """
    from cryptography.hazmat.primitives import serialization  # author side and receipts only
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    if not name or "/" in name or name.startswith("."):
        raise ConfigurationError(f"key name {name!r} must be a plain file name")
    directory.mkdir(parents=True, exist_ok=True)
    private_path, public_path = directory / f"{name}.pem", directory / f"{name}.pub.pem"
    for path in (private_path, public_path):
        if path.exists():
            raise ConfigurationError(f"{path} already exists; refusing to overwrite a key")
    private_key = Ed25519PrivateKey.generate()
    private_pem = private_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    public_pem = private_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    # Created with 0600 from the start, so the private key is never readable by others, even briefly.
    descriptor = os.open(private_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "wb") as stream:
        stream.write(private_pem)
    public_path.write_bytes(public_pem)
    return private_path, public_path


def load_private_key(path: Path) -> Ed25519PrivateKey:
    """Return the Ed25519 private key in the PEM file `path`; raise `ConfigurationError` otherwise."""
    from cryptography.hazmat.primitives import serialization  # author side and receipts only
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except OSError as exc:
        raise ConfigurationError(f"cannot read key {path}: {exc.strerror}") from None
    except (ValueError, TypeError) as exc:
        raise ConfigurationError(f"{path} is not an unencrypted PEM private key: {exc}") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise ConfigurationError(f"{path} holds a {type(key).__name__}, not an Ed25519 private key")
    return key


def load_keyring(directory: Path) -> Keyring:
    """Return every usable Ed25519 public key in `directory` (`*.pem`), and the files that were not usable."""
    keys: list[TrustedKey] = []
    problems: list[KeyProblem] = []
    try:
        paths = sorted(path for path in directory.iterdir() if path.suffix == ".pem")
    except OSError:
        return Keyring((), ())
    if not paths:
        return Keyring((), ())
    from cryptography.exceptions import UnsupportedAlgorithm
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    for path in paths:
        try:
            public_key = load_public_key(path.read_bytes())
        except OSError as exc:
            problems.append(KeyProblem(path, f"unreadable: {exc.strerror}"))
            continue
        except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
            problems.append(KeyProblem(path, f"not a PEM public key: {exc}"))
            continue
        if not isinstance(public_key, Ed25519PublicKey):
            problems.append(KeyProblem(path, f"a {type(public_key).__name__}, not an Ed25519 public key"))
            continue
        keys.append(TrustedKey(key_id(public_key), path, public_key))
    return Keyring(tuple(keys), tuple(problems))


def pae(payload_type: str, payload: bytes) -> bytes:
    """Return DSSE's pre-authentication encoding of a payload, which is what gets signed."""
    kind = payload_type.encode()
    return b"DSSEv1 %d %b %d %b" % (len(kind), kind, len(payload), payload)


def sign_envelope(payload: bytes, payload_type: str, private_key: Ed25519PrivateKey) -> dict[str, Any]:
    """Return a DSSE envelope over `payload`, signed by `private_key`."""
    signature = private_key.sign(pae(payload_type, payload))
    return {
        "payloadType": payload_type,
        "payload": base64.b64encode(payload).decode(),
        "signatures": [{"keyid": key_id(private_key.public_key()), "sig": base64.b64encode(signature).decode()}],
    }


class VerifiedEnvelope(msgspec.Struct, frozen=True):
    payload: bytes
    payload_type: str
    key: TrustedKey


def verify_envelope(envelope: Any, keys: Sequence[TrustedKey]) -> VerifiedEnvelope:
    """Return the payload of a DSSE envelope signed by any of `keys`.

    Every signature is tried against every key, whatever key id it claims (a
    key id is a hint, never trusted). Raises `VerificationError` otherwise.
    """
    try:
        payload_type = envelope["payloadType"]
        payload = base64.b64decode(envelope["payload"], validate=True)
        signatures = [(s.get("keyid", ""), base64.b64decode(s["sig"], validate=True)) for s in envelope["signatures"]]
    except (KeyError, TypeError, ValueError, AttributeError):
        raise VerificationError("malformed DSSE envelope") from None
    if not isinstance(payload_type, str) or not signatures:
        raise VerificationError("malformed DSSE envelope: no payload type or no signatures")
    if not keys:
        raise VerificationError("no trusted Ed25519 keys are configured")
    from cryptography.exceptions import InvalidSignature

    message = pae(payload_type, payload)
    for _, signature in signatures:
        for key in keys:
            try:
                key.public_key.verify(signature, message)
            except InvalidSignature:
                continue
            return VerifiedEnvelope(payload, payload_type, key)
    claimed = ", ".join(sorted({claim[:16] for claim, _ in signatures if claim})) or "none"
    raise VerificationError(
        f"no trusted key verifies the signature (key ids claimed: {claimed}; trusted: {len(keys)} key(s))"
    )
