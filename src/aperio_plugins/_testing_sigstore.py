"""A private Sigstore instance for tests, built with `cryptography` alone and no network.

`PrivateSigstore.create(directory)` makes a Fulcio-like CA (a root and an
intermediate), a certificate transparency log key and a Rekor-like transparency
log, and writes the instance's `trusted_root.json`. Its bundles are accepted by
the real `sigstore` `Verifier` given that trusted root:

- a short-lived code-signing certificate for an ephemeral P-256 key, with the
  identity as SAN and the OIDC issuer in extensions 1.3.6.1.4.1.57264.1.1 and .1.8;
- an embedded SCT signed by the CT log key over the precertificate (RFC 6962);
- a `dsse` 0.0.1 (DSSE) or `hashedrekord` 0.0.1 (message signature) log entry
  with a signed entry timestamp, and an inclusion proof in a Merkle tree of all
  the entries so far with a signed checkpoint.

For refusal tests, sign with any identity and issuer, or with a second instance.
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import struct
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

IN_TOTO_PAYLOAD_TYPE = "application/vnd.in-toto+json"
BUNDLE_MEDIA_TYPE = "application/vnd.dev.sigstore.bundle.v0.3+json"
TRUSTED_ROOT_MEDIA_TYPE = "application/vnd.dev.sigstore.trustedroot+json;version=0.1"
_OIDC_ISSUER_V1 = x509.ObjectIdentifier("1.3.6.1.4.1.57264.1.1")
_OIDC_ISSUER_V2 = x509.ObjectIdentifier("1.3.6.1.4.1.57264.1.8")
_SCT_LIST = x509.ObjectIdentifier("1.3.6.1.4.1.11129.2.4.2")
_KEY_DETAILS = "PKIX_ECDSA_P256_SHA_256"
_LEAF_LIFETIME = timedelta(minutes=10)
_PREVIOUS_ENTRIES = 6  # entries already in the log, so that inclusion proofs are not trivial

# --- encodings -----------------------------------------------------------------------------


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _spki(key: ec.EllipticCurvePublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def _key_id(key: ec.EllipticCurvePublicKey) -> bytes:
    """RFC 6962 key id: sha256 of the DER SubjectPublicKeyInfo (also Rekor's log id)."""
    return hashlib.sha256(_spki(key)).digest()


def _der(tag: int, content: bytes) -> bytes:
    """A DER TLV; lengths up to 2**16 - 1 are enough here."""
    if len(content) < 0x80:
        return bytes([tag, len(content)]) + content
    if len(content) < 0x100:
        return bytes([tag, 0x81, len(content)]) + content
    return bytes([tag, 0x82]) + struct.pack("!H", len(content)) + content


def _canonical_json(value: Any) -> bytes:
    """Canonical JSON for the ASCII strings and integers used here (RFC 8785 agrees on those)."""
    return json.dumps(value, sort_keys=True, separators=(",", ":")).encode("utf-8")


def _sign(key: ec.EllipticCurvePrivateKey, data: bytes) -> bytes:
    return key.sign(data, ec.ECDSA(hashes.SHA256()))


def _pae(payload_type: str, payload: bytes) -> bytes:
    """DSSE v1 pre-authentication encoding."""
    return b"DSSEv1 %d %s %d %s" % (len(payload_type), payload_type.encode(), len(payload), payload)


# --- RFC 6962 Merkle tree --------------------------------------------------------------------


def _leaf_hash(data: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + data).digest()


def _node_hash(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


def _split(size: int) -> int:
    """The largest power of two smaller than `size` (size > 1)."""
    return 1 << ((size - 1).bit_length() - 1)


def _tree_hash(leaves: list[bytes]) -> bytes:
    if len(leaves) == 1:
        return leaves[0]
    k = _split(len(leaves))
    return _node_hash(_tree_hash(leaves[:k]), _tree_hash(leaves[k:]))


def _inclusion_path(index: int, leaves: list[bytes]) -> list[bytes]:
    """The audit path of leaf `index`, bottom first (RFC 6962 section 2.1.1)."""
    if len(leaves) == 1:
        return []
    k = _split(len(leaves))
    if index < k:
        return [*_inclusion_path(index, leaves[:k]), _tree_hash(leaves[k:])]
    return [*_inclusion_path(index - k, leaves[k:]), _tree_hash(leaves[:k])]


# --- certificates ----------------------------------------------------------------------------


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "aperio-plugins test"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def _ca_certificate(
    subject: x509.Name,
    key: ec.EllipticCurvePrivateKey,
    issuer: tuple[x509.Name, ec.EllipticCurvePrivateKey] | None,
    now: datetime,
) -> x509.Certificate:
    """A CA certificate: self-signed when `issuer` is None, else an intermediate with path length 0."""
    issuer_name, issuer_key = issuer if issuer is not None else (subject, key)
    usage = x509.KeyUsage(False, False, False, False, False, True, True, False, False)  # keyCertSign, cRLSign
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=3650))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None if issuer is None else 0), critical=True)
        .add_extension(usage, critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()), critical=False)
        .sign(issuer_key, hashes.SHA256())
    )


def _san(identity: str) -> x509.GeneralName:
    """An e-mail SAN for a mail address, a URI SAN for anything else (workflow URLs, SPIFFE ids)."""
    if "@" in identity and "://" not in identity:
        return x509.RFC822Name(identity)
    return x509.UniformResourceIdentifier(identity)


def _sct(ct_key: ec.EllipticCurvePrivateKey, issuer_key_id: bytes, tbs_precert: bytes, millis: int) -> bytes:
    """One serialized v1 SCT for a precertificate entry (RFC 6962 section 3.2)."""
    log_id = _key_id(ct_key.public_key())
    no_extensions = struct.pack("!H", 0)
    signed = (
        struct.pack("!BBQH", 0, 0, millis, 1)  # v1, certificate_timestamp, timestamp, precert_entry
        + issuer_key_id
        + struct.pack("!I", len(tbs_precert))[1:]  # uint24 length
        + tbs_precert
        + no_extensions
    )
    signature = _sign(ct_key, signed)
    return (
        struct.pack("!B", 0)
        + log_id
        + struct.pack("!Q", millis)
        + no_extensions
        + struct.pack("!BBH", 4, 3, len(signature))  # sha256, ecdsa
        + signature
    )


def _sct_list_extension(scts: list[bytes]) -> x509.UnrecognizedExtension:
    body = b"".join(struct.pack("!H", len(sct)) + sct for sct in scts)
    return x509.UnrecognizedExtension(_SCT_LIST, _der(0x04, struct.pack("!H", len(body)) + body))


# --- the transparency log --------------------------------------------------------------------


@dataclass
class _TransparencyLog:
    """A Rekor v1 style log: entries, signed entry timestamps, inclusion proofs, checkpoints."""

    key: ec.EllipticCurvePrivateKey
    origin: str
    leaves: list[bytes] = field(default_factory=list)

    @property
    def log_id(self) -> bytes:
        return _key_id(self.key.public_key())

    def append(self, body: bytes, integrated_time: int) -> dict[str, Any]:
        """Integrate `body` and return its bundle `tlogEntries` item."""
        index = len(self.leaves)
        self.leaves.append(_leaf_hash(body))
        root = _tree_hash(self.leaves)
        promise = {"body": _b64(body), "integratedTime": integrated_time, "logID": self.log_id.hex(), "logIndex": index}
        kind = json.loads(body)
        return {
            "logIndex": str(index),
            "logId": {"keyId": _b64(self.log_id)},
            "kindVersion": {"kind": kind["kind"], "version": kind["apiVersion"]},
            "integratedTime": str(integrated_time),
            "inclusionPromise": {"signedEntryTimestamp": _b64(_sign(self.key, _canonical_json(promise)))},
            "inclusionProof": {
                "logIndex": str(index),
                "rootHash": _b64(root),
                "treeSize": str(len(self.leaves)),
                "hashes": [_b64(h) for h in _inclusion_path(index, self.leaves)],
                "checkpoint": {"envelope": self._checkpoint(root)},
            },
            "canonicalizedBody": _b64(body),
        }

    def _checkpoint(self, root: bytes) -> str:
        """A signed note: origin, size, root hash; then one signature line keyed by the log id's first 4 bytes."""
        note = f"{self.origin}\n{len(self.leaves)}\n{_b64(root)}\n"
        signature = self.log_id[:4] + _sign(self.key, note.encode())
        name = self.origin.split(" ", 1)[0]
        return f"{note}\n\u2014 {name} {_b64(signature)}\n"


# --- the instance ----------------------------------------------------------------------------


@dataclass
class PrivateSigstore:
    """A private Sigstore instance: Fulcio-like CA, CT log, transparency log and trusted root."""

    trusted_root_path: Path
    root_certificate: x509.Certificate
    intermediate_certificate: x509.Certificate
    intermediate_key: ec.EllipticCurvePrivateKey
    ct_key: ec.EllipticCurvePrivateKey
    log: _TransparencyLog

    @classmethod
    def create(cls, directory: Path) -> PrivateSigstore:
        """Generate every key, write `directory / "trusted_root.json"`, return the instance."""
        now = datetime.now(timezone.utc).replace(microsecond=0)
        root_key, intermediate_key = ec.generate_private_key(ec.SECP384R1()), ec.generate_private_key(ec.SECP384R1())
        root = _ca_certificate(_name("private-fulcio-root"), root_key, None, now)
        intermediate = _ca_certificate(
            _name("private-fulcio-intermediate"), intermediate_key, (root.subject, root_key), now
        )
        log = _TransparencyLog(
            key=ec.generate_private_key(ec.SECP256R1()), origin=f"rekor.private.test - {secrets.randbits(63)}"
        )
        for number in range(_PREVIOUS_ENTRIES):
            log.leaves.append(_leaf_hash(b"earlier entry %d" % number))
        directory.mkdir(parents=True, exist_ok=True)
        instance = cls(
            trusted_root_path=directory / "trusted_root.json",
            root_certificate=root,
            intermediate_certificate=intermediate,
            intermediate_key=intermediate_key,
            ct_key=ec.generate_private_key(ec.SECP256R1()),
            log=log,
        )
        instance.trusted_root_path.write_text(json.dumps(instance._trusted_root(now), indent=2) + "\n")
        return instance

    def sign_dsse(
        self, statement: bytes, *, identity: str, issuer: str, payload_type: str = IN_TOTO_PAYLOAD_TYPE
    ) -> bytes:
        """Return the bundle JSON of a DSSE envelope over `statement`, signed as `identity` of `issuer`.

        `payload_type` is in-toto unless a test needs another one.
        """
        key, certificate, now = self._signing_identity(identity, issuer)
        signature = _sign(key, _pae(payload_type, statement))
        envelope = {
            "payload": _b64(statement),
            "payloadType": payload_type,
            "signatures": [{"sig": _b64(signature), "keyid": ""}],
        }
        body = {
            "apiVersion": "0.0.1",
            "kind": "dsse",
            "spec": {
                "envelopeHash": {"algorithm": "sha256", "value": hashlib.sha256(_canonical_json(envelope)).hexdigest()},
                "payloadHash": {"algorithm": "sha256", "value": hashlib.sha256(statement).hexdigest()},
                "signatures": [{"signature": _b64(signature), "verifier": _b64(_pem(certificate))}],
            },
        }
        return self._bundle(certificate, body, now, {"dsseEnvelope": envelope})

    def sign_artifact(self, artifact: bytes, *, identity: str, issuer: str) -> bytes:
        """Return the bundle JSON of a message signature over `artifact` (a `hashedrekord` entry)."""
        key, certificate, now = self._signing_identity(identity, issuer)
        digest = hashlib.sha256(artifact).digest()
        signature = _sign(key, artifact)
        body = {
            "apiVersion": "0.0.1",
            "kind": "hashedrekord",
            "spec": {
                "data": {"hash": {"algorithm": "sha256", "value": digest.hex()}},
                "signature": {"content": _b64(signature), "publicKey": {"content": _b64(_pem(certificate))}},
            },
        }
        content = {
            "messageSignature": {
                "messageDigest": {"algorithm": "SHA2_256", "digest": _b64(digest)},
                "signature": _b64(signature),
            }
        }
        return self._bundle(certificate, body, now, content)

    def _bundle(self, certificate: x509.Certificate, body: dict[str, Any], now: int, content: dict[str, Any]) -> bytes:
        entry = self.log.append(_canonical_json(body), integrated_time=now)
        bundle = {
            "mediaType": BUNDLE_MEDIA_TYPE,
            "verificationMaterial": {
                "certificate": {"rawBytes": _b64(certificate.public_bytes(serialization.Encoding.DER))},
                "tlogEntries": [entry],
            },
            **content,
        }
        return json.dumps(bundle, indent=2).encode("utf-8")

    def _signing_identity(self, identity: str, issuer: str) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate, int]:
        """An ephemeral key and its Fulcio-style certificate; the integrated time to use (seconds)."""
        now = int(time.time())
        key = ec.generate_private_key(ec.SECP256R1())
        not_before = datetime.fromtimestamp(now, tz=timezone.utc)
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([]))
            .issuer_name(self.intermediate_certificate.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(not_before)
            .not_valid_after(not_before + _LEAF_LIFETIME)
            .add_extension(x509.KeyUsage(True, False, False, False, False, False, False, False, False), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CODE_SIGNING]), critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self.intermediate_key.public_key()), critical=False
            )
            .add_extension(x509.SubjectAlternativeName([_san(identity)]), critical=True)
            .add_extension(x509.UnrecognizedExtension(_OIDC_ISSUER_V1, issuer.encode()), critical=False)
            .add_extension(x509.UnrecognizedExtension(_OIDC_ISSUER_V2, _der(0x0C, issuer.encode())), critical=False)
        )
        # The SCT signs the precertificate: this certificate's TBS without the SCT
        # list, which is added last so that removing it gives the same bytes back.
        precertificate = builder.sign(self.intermediate_key, hashes.SHA256())
        issuer_key_id = _key_id(self.intermediate_key.public_key())
        sct = _sct(self.ct_key, issuer_key_id, precertificate.tbs_certificate_bytes, now * 1000)
        certificate = builder.add_extension(_sct_list_extension([sct]), critical=False).sign(
            self.intermediate_key, hashes.SHA256()
        )
        if certificate.tbs_precertificate_bytes != precertificate.tbs_certificate_bytes:
            raise RuntimeError("the precertificate does not match the certificate (cryptography changed?)")
        return key, certificate, now

    def _trusted_root(self, now: datetime) -> dict[str, Any]:
        start = (now - timedelta(days=1)).strftime("%Y-%m-%dT%H:%M:%SZ")

        def log_instance(key: ec.EllipticCurvePrivateKey, url: str) -> dict[str, Any]:
            return {
                "baseUrl": url,
                "hashAlgorithm": "SHA2_256",
                "publicKey": {
                    "rawBytes": _b64(_spki(key.public_key())),
                    "keyDetails": _KEY_DETAILS,
                    "validFor": {"start": start},
                },
                "logId": {"keyId": _b64(_key_id(key.public_key()))},
            }

        chain = [self.intermediate_certificate, self.root_certificate]
        return {
            "mediaType": TRUSTED_ROOT_MEDIA_TYPE,
            "tlogs": [log_instance(self.log.key, "https://rekor.private.test")],
            "certificateAuthorities": [
                {
                    "subject": {"organization": "aperio-plugins test", "commonName": "private-fulcio"},
                    "uri": "https://fulcio.private.test",
                    "certChain": {
                        "certificates": [{"rawBytes": _b64(c.public_bytes(serialization.Encoding.DER))} for c in chain]
                    },
                    "validFor": {"start": start},
                }
            ],
            "ctlogs": [log_instance(self.ct_key, "https://ctfe.private.test")],
            "timestampAuthorities": [],
        }


def _pem(certificate: x509.Certificate) -> bytes:
    return certificate.public_bytes(serialization.Encoding.PEM)
