"""The Sigstore signature backend: verify (offline) and sign DSSE bundles.

A plugin's signature over its in-toto Statement can be a Sigstore bundle whose
content is a DSSE envelope. Verification is fully offline: the bundle is checked
against a pinned trusted root (the production root shipped inside the `sigstore`
package, or an operator's private instance) and against the operator's trusted
identities, matched exactly.

`sigstore` costs about 0.65 s to import, so it is imported only inside the
functions that verify or sign; importing this module does not import it.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgspec

from aperio_plugins._untrusted_json import loads_bounded
from aperio_plugins.errors import AperioError, ConfigurationError, SigningError, VerificationError

if TYPE_CHECKING:
    from cryptography.x509 import Certificate
    from sigstore.models import Bundle
    from sigstore.verify import Verifier

IN_TOTO_PAYLOAD_TYPE = "application/vnd.in-toto+json"

# Where sigstore 4.x keeps the production trusted root it ships (the TUF
# repository URL, percent-encoded, under the `sigstore._store` package).
_EMBEDDED_ROOT_PACKAGE = "sigstore._store"
_EMBEDDED_PRODUCTION_DIR = "https%3A%2F%2Ftuf-repo-cdn.sigstore.dev"

# Fulcio's OIDC issuer extensions: the raw-bytes v1 and the DER UTF8String v2.
_OIDC_ISSUER_V1_OID = "1.3.6.1.4.1.57264.1.1"
_OIDC_ISSUER_V2_OID = "1.3.6.1.4.1.57264.1.8"
_IDENTITY_HEADER = re.compile(r"^[ \t]*\[\[[ \t]*identity[ \t]*\]\]", re.MULTILINE)
_PUBLISHER_HEADER = re.compile(r"^[ \t]*\[\[[ \t]*trusted_publisher[ \t]*\]\]", re.MULTILINE)
# The keys of a `[[trusted_publisher]]` table by kind; the workflow key is named as each CI names it.
_PUBLISHER_KEYS = {"github": ("repository", "workflow"), "gitlab": ("repository", "workflow_filepath")}


class TrustedIdentity(msgspec.Struct, frozen=True):
    """One signer the operator trusts: a certificate identity and its OIDC issuer, both exact."""

    identity: str
    issuer: str

    def __post_init__(self) -> None:
        # sigstore's `Identity` policy skips the issuer check for an empty issuer:
        # an empty value must never reach it.
        if not self.identity or not self.issuer:
            raise ConfigurationError("a trusted Sigstore identity needs a non-empty identity and issuer")

    def describe(self) -> str:
        """Return the signer description used in reports and audit events."""
        return f"sigstore identity {self.identity} (issuer {self.issuer})"


class TrustedPublisher(msgspec.Struct, frozen=True):
    """A Trusted Publisher the operator pinned for PEP 740 attestations: a CI workflow of one repository.

    `kind` is "github" (`repository` is OWNER/REPO, `workflow` the workflow file name) or "gitlab"
    (`repository` is the project path, `workflow` the CI file path). `environment`, when set, is
    required of the publisher a provenance object names: it narrows trust, never widens it, because
    a Fulcio certificate carries no environment claim to check it against.
    """

    kind: str
    repository: str
    workflow: str
    environment: str | None = None

    def describe(self) -> str:
        """Return the signer description used in reports, audit events and install receipts."""
        environment = f", environment {self.environment}" if self.environment else ""
        return f"{self.kind} trusted publisher {self.repository} (workflow {self.workflow}{environment})"


class SigstoreTrust(msgspec.Struct, frozen=True):
    """Trusted identities and publishers, and the trusted root (None: sigstore's embedded production root)."""

    identities: tuple[TrustedIdentity, ...]
    trusted_root: Path | None
    publishers: tuple[TrustedPublisher, ...] = ()


class VerifiedDsse(msgspec.Struct, frozen=True):
    """The content of a verified DSSE bundle and who signed it."""

    payload: bytes
    payload_type: str
    signer: str


# --- the operator's trusted identities file -------------------------------------------


def load_trusted_identities(path: Path) -> SigstoreTrust:
    """Read the operator's trusted-identities TOML file.

    Matching is exact: no wildcards, no regular expressions, no prefixes. A
    relative `trusted_root` is relative to the file. Returns an empty trust when
    the file does not exist; raises `ConfigurationError` naming the file (and the
    line or `[[identity]]` table) when it is unreadable or malformed.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return SigstoreTrust(identities=(), trusted_root=None)
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigurationError(f"{path}: cannot read trusted identities: {exc}") from None
    # Only an operator who trusts Sigstore identities has this file: the TOML parser loads for them.
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover - exercised by the 3.10 nox session
        import tomli as tomllib

    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        # The message of a TOMLDecodeError ends with "(at line L, column C)".
        raise ConfigurationError(f"{path}: not valid TOML: {exc}") from None
    unknown = sorted(set(document) - {"trusted_root", "identity", "trusted_publisher"})
    if unknown:
        raise ConfigurationError(
            f"{path}: unknown key(s) {', '.join(unknown)} (expected trusted_root, [[identity]], [[trusted_publisher]])"
        )
    return SigstoreTrust(
        identities=_parse_identities(path, text, document.get("identity", [])),
        trusted_root=_parse_trusted_root(path, document.get("trusted_root")),
        publishers=_parse_publishers(path, text, document.get("trusted_publisher", [])),
    )


def _parse_trusted_root(path: Path, value: object) -> Path | None:
    if value is None:
        return None
    if not isinstance(value, str) or not value:
        raise ConfigurationError(f"{path}: trusted_root must be a non-empty string (a path)")
    root = path.parent / value  # an absolute `value` replaces the parent
    if not root.is_file():
        raise ConfigurationError(f"{path}: trusted_root {root} does not exist")
    return root


def _parse_identities(path: Path, text: str, tables: object) -> tuple[TrustedIdentity, ...]:
    if not isinstance(tables, list):
        raise ConfigurationError(f"{path}: identity must be an array of tables ([[identity]])")
    header_lines = [text.count("\n", 0, match.start()) + 1 for match in _IDENTITY_HEADER.finditer(text)]
    identities = []
    for index, table in enumerate(tables):
        line = header_lines[index] if index < len(header_lines) else None
        where = f"{path}: [[identity]] #{index + 1}" + (f" (line {line})" if line is not None else "")
        if not isinstance(table, dict):
            raise ConfigurationError(f"{where}: must be a table with identity and issuer")
        unknown = sorted(set(table) - {"identity", "issuer"})
        if unknown:
            raise ConfigurationError(f"{where}: unknown key(s) {', '.join(unknown)} (expected identity, issuer)")
        for key in ("identity", "issuer"):
            if key not in table:
                raise ConfigurationError(f"{where}: missing {key}")
            if not isinstance(table[key], str) or not table[key]:
                raise ConfigurationError(f"{where}: {key} must be a non-empty string")
        identities.append(TrustedIdentity(identity=table["identity"], issuer=table["issuer"]))
    return tuple(identities)


def _parse_publishers(path: Path, text: str, tables: object) -> tuple[TrustedPublisher, ...]:
    if not isinstance(tables, list):
        raise ConfigurationError(f"{path}: trusted_publisher must be an array of tables ([[trusted_publisher]])")
    header_lines = [text.count("\n", 0, match.start()) + 1 for match in _PUBLISHER_HEADER.finditer(text)]
    publishers = []
    for index, table in enumerate(tables):
        line = header_lines[index] if index < len(header_lines) else None
        where = f"{path}: [[trusted_publisher]] #{index + 1}" + (f" (line {line})" if line is not None else "")
        if not isinstance(table, dict):
            raise ConfigurationError(f"{where}: must be a table with kind, repository and workflow")
        kind = table.get("kind")
        if kind not in _PUBLISHER_KEYS:
            raise ConfigurationError(f"{where}: kind must be one of {', '.join(sorted(_PUBLISHER_KEYS))}")
        required = _PUBLISHER_KEYS[kind]
        unknown = sorted(set(table) - {"kind", "environment", *required})
        if unknown:
            raise ConfigurationError(
                f"{where}: unknown key(s) {', '.join(unknown)} (expected kind, {', '.join(required)}, environment)"
            )
        for key in (*required, *(["environment"] if "environment" in table else [])):
            if key not in table:
                raise ConfigurationError(f"{where}: missing {key}")
            if not isinstance(table[key], str) or not table[key]:
                raise ConfigurationError(f"{where}: {key} must be a non-empty string")
        publishers.append(TrustedPublisher(kind, table["repository"], table[required[1]], table.get("environment")))
    return tuple(publishers)


# --- verification -------------------------------------------------------------------------


def verify_dsse_bundle(bundle: bytes, trust: SigstoreTrust) -> VerifiedDsse:
    """Verify a Sigstore bundle carrying a DSSE in-toto envelope, offline.

    Checks, through sigstore's `Verifier`: the certificate chain to the trusted
    root's Fulcio CA, the embedded SCT, the transparency log entry (inclusion
    proof, signed checkpoint, signed entry timestamp), the signature over the DSSE
    PAE, and that one trusted identity (identity and issuer) matches. Returns the
    payload, its type (always in-toto) and the signer; raises `VerificationError`
    with the reason otherwise, `ConfigurationError` when the trusted root is unusable.
    """
    _require_identities(trust)
    document = _load_json(bundle)
    if "dsseEnvelope" not in document:
        raise VerificationError("Sigstore bundle refused: it carries no DSSE envelope")
    checker = verifier(trust.trusted_root)
    policy = _TrustedIdentityPolicy(trust.identities)
    with refusals():
        payload_type, payload = checker.verify_dsse(parse_bundle(bundle), policy)
    if payload_type != IN_TOTO_PAYLOAD_TYPE:
        raise VerificationError(f"Sigstore bundle refused: DSSE payload type {payload_type!r} is not in-toto")
    return VerifiedDsse(payload=payload, payload_type=payload_type, signer=policy.signer())


def verify_artifact_bundle(bundle: bytes, artifact: bytes, trust: SigstoreTrust) -> str:
    """Verify a Sigstore bundle over `artifact`, offline; return the signer description.

    The bundle either signs the artifact directly (a message signature) or is a
    DSSE in-toto statement with a subject whose sha256 is the artifact's. Raises
    `VerificationError` otherwise (same checks as `verify_dsse_bundle`).
    """
    _require_identities(trust)
    if "dsseEnvelope" in _load_json(bundle):
        verified = verify_dsse_bundle(bundle, trust)
        _require_subject(verified.payload, hashlib.sha256(artifact).hexdigest())
        return verified.signer
    checker = verifier(trust.trusted_root)
    policy = _TrustedIdentityPolicy(trust.identities)
    with refusals():
        checker.verify_artifact(artifact, parse_bundle(bundle), policy)
    return policy.signer()


def verify_artifact_digest(bundle: bytes, sha256: str, trust: SigstoreTrust) -> str:
    """Verify a message-signature bundle over an artifact whose sha256 (hex) is `sha256`, offline.

    The artifact is never held in memory: the signature is checked against its digest. Returns the
    signer description; raises `VerificationError` (same checks as `verify_dsse_bundle`) otherwise.
    """
    _require_identities(trust)
    document = _load_json(bundle)
    if "dsseEnvelope" in document:
        verified = verify_dsse_bundle(bundle, trust)
        _require_subject(verified.payload, sha256)
        return verified.signer
    from sigstore.hashes import Hashed
    from sigstore_models.common.v1 import HashAlgorithm

    checker = verifier(trust.trusted_root)
    policy = _TrustedIdentityPolicy(trust.identities)
    with refusals():
        hashed = Hashed(algorithm=HashAlgorithm.SHA2_256, digest=bytes.fromhex(sha256))
        checker.verify_artifact(hashed, parse_bundle(bundle), policy)
    return policy.signer()


def _require_identities(trust: SigstoreTrust) -> None:
    if not trust.identities:
        raise VerificationError("Sigstore bundle refused: no trusted Sigstore identities configured")


def _load_json(bundle: bytes) -> dict[str, Any]:
    try:
        document = loads_bounded(bundle)
    except ValueError as exc:
        raise VerificationError(f"Sigstore bundle refused: malformed bundle JSON: {exc}") from None
    if not isinstance(document, dict):
        raise VerificationError("Sigstore bundle refused: malformed bundle JSON: not an object")
    return document


def _require_subject(statement: bytes, digest: str) -> None:
    try:
        subjects = loads_bounded(statement)["subject"]
        found = [subject["digest"].get("sha256", "") for subject in subjects]
    except (ValueError, KeyError, TypeError, AttributeError):
        raise VerificationError("Sigstore bundle refused: the DSSE payload is not an in-toto statement") from None
    if not any(isinstance(value, str) and hmac.compare_digest(value, digest) for value in found):
        raise VerificationError(f"Sigstore bundle refused: no statement subject has the artifact's sha256 {digest}")


def verifier(trusted_root: Path | None) -> Verifier:
    """Build a sigstore `Verifier` for the pinned root, never touching the network or TUF cache."""
    from importlib import resources

    try:
        from sigstore.errors import Error as SigstoreError
        from sigstore.models import TrustedRoot
        from sigstore.verify import Verifier
    except ImportError as exc:
        raise ConfigurationError(f"Sigstore signatures need the `sigstore` package: {exc}") from None

    try:
        if trusted_root is not None:
            return Verifier(trusted_root=TrustedRoot.from_file(str(trusted_root)))
        embedded = resources.files(_EMBEDDED_ROOT_PACKAGE) / _EMBEDDED_PRODUCTION_DIR / "trusted_root.json"
        with resources.as_file(embedded) as path:
            return Verifier(trusted_root=TrustedRoot.from_file(str(path)))
    except (OSError, ValueError, SigstoreError) as exc:
        where = trusted_root if trusted_root is not None else "sigstore's embedded production trusted root"
        raise ConfigurationError(f"{where}: not a usable Sigstore trusted root: {exc}") from None


def parse_bundle(bundle: bytes) -> Bundle:
    from sigstore.models import Bundle

    return Bundle.from_json(bundle)  # its errors are classified by `refusals`


@contextmanager
def refusals() -> Iterator[None]:
    """Turn whatever sigstore raises while parsing or verifying into our `VerificationError`."""
    from sigstore.dsse import InvalidEnvelope
    from sigstore.errors import CertValidationError
    from sigstore.errors import Error as SigstoreError
    from sigstore.models import InvalidBundle

    try:
        yield
    except AperioError:
        raise
    except (InvalidBundle, InvalidEnvelope, ValueError) as exc:  # pydantic and DER errors are ValueErrors
        raise VerificationError(f"Sigstore bundle refused: malformed bundle: {exc}") from None
    except CertValidationError as exc:
        raise VerificationError(
            f"Sigstore bundle refused: the signing certificate does not chain to a trusted Fulcio CA "
            f"(a bundle from another Sigstore instance?): {exc}"
        ) from None
    except SigstoreError as exc:
        raise VerificationError(f"Sigstore bundle refused: {exc}") from None
    except Exception as exc:  # noqa: BLE001 - hostile bundles reach parsers that raise anything; fail closed
        raise VerificationError(f"Sigstore bundle refused: {type(exc).__name__}: {exc}") from None


class _TrustedIdentityPolicy:
    """A sigstore `VerificationPolicy`: any one trusted identity, identity and issuer exact.

    Matching is delegated to sigstore's own `Identity` policy; this class only
    remembers which identity matched and explains a mismatch.
    """

    def __init__(self, identities: tuple[TrustedIdentity, ...]) -> None:
        self._identities = identities
        self._matched: TrustedIdentity | None = None

    def verify(self, cert: Certificate) -> None:
        from sigstore.errors import VerificationError as SigstoreVerificationError
        from sigstore.verify.policy import Identity

        for trusted in self._identities:
            try:
                Identity(identity=trusted.identity, issuer=trusted.issuer).verify(cert)
            except SigstoreVerificationError:
                continue
            self._matched = trusted
            return
        raise VerificationError(_mismatch(cert, self._identities))

    def signer(self) -> str:
        if self._matched is None:  # unreachable: sigstore always runs the policy before returning
            raise VerificationError("Sigstore bundle refused: the identity policy was never checked")
        return self._matched.describe()


def _mismatch(cert: Certificate, identities: tuple[TrustedIdentity, ...]) -> str:
    """Explain why no trusted identity matches, naming what the certificate says."""
    found, issuer = _certificate_identity(cert)
    shown = ", ".join(sorted(found)) or "(none)"
    issuers = sorted({t.issuer for t in identities if t.identity in found})
    if issuers:
        return (
            f"Sigstore bundle refused: wrong OIDC issuer: identity {shown} was issued by {issuer}, "
            f"but it is trusted only with issuer {', '.join(issuers)}"
        )
    return f"Sigstore bundle refused: untrusted signer: identity {shown} (issuer {issuer}) is not a trusted identity"


def _certificate_identity(cert: Certificate) -> tuple[set[str], str]:
    """Return the certificate's SAN identities and OIDC issuer (for messages only)."""
    from cryptography import x509

    try:
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return set(), _certificate_issuer(cert)
    found = set(sans.get_values_for_type(x509.UniformResourceIdentifier))
    found.update(sans.get_values_for_type(x509.RFC822Name))
    return found, _certificate_issuer(cert)


def _certificate_issuer(cert: Certificate) -> str:
    from cryptography import x509

    for dotted in (_OIDC_ISSUER_V1_OID, _OIDC_ISSUER_V2_OID):
        try:
            value = cert.extensions.get_extension_for_oid(x509.ObjectIdentifier(dotted)).value
        except x509.ExtensionNotFound:
            continue
        raw = value.value if isinstance(value, x509.UnrecognizedExtension) else b""
        if dotted == _OIDC_ISSUER_V2_OID:
            raw = _der_string_content(raw)
        return raw.decode("utf-8", errors="replace")
    return "(no OIDC issuer extension)"


def _der_string_content(raw: bytes) -> bytes:
    """Return the content of a DER UTF8String (tag 0x0c), or `raw` when it is not one."""
    if len(raw) < 2 or raw[0] != 0x0C:
        return raw
    header = 2 if raw[1] < 0x80 else 2 + (raw[1] & 0x7F)
    return raw[header:]


# --- signing (CI only: needs the network) -------------------------------------------------


def sign_dsse_bundle(statement: bytes, *, identity_token: str | None = None) -> bytes:
    """Sign the canonical in-toto `statement` as DSSE with production Sigstore (Fulcio, Rekor).

    Uses `identity_token` or else the ambient OIDC credential (GitHub Actions,
    GitLab, cloud providers) found by `sigstore.oidc.detect_credential()`.
    Returns the bundle JSON; raises `SigningError` when there is no usable
    credential (checked before any network use) or a Sigstore service refuses.
    """
    try:
        from sigstore import dsse
        from sigstore.errors import Error as SigstoreError
        from sigstore.models import ClientTrustConfig
        from sigstore.oidc import IdentityToken, detect_credential
        from sigstore.sign import SigningContext
    except ImportError as exc:
        raise SigningError(f"Sigstore signing needs the `sigstore` package: {exc}") from None

    try:
        raw_token = identity_token if identity_token is not None else detect_credential()
        if raw_token is None:
            raise SigningError(
                "no ambient OIDC credential found: sign in CI with an OIDC identity "
                "(e.g. GitHub Actions with `permissions: id-token: write`) or pass identity_token"
            )
        token = IdentityToken(raw_token)  # checks audience and expiry, offline
        content = dsse.Statement(statement)
    except SigstoreError as exc:
        raise SigningError(f"cannot sign with Sigstore: {exc}") from exc
    try:
        context = SigningContext.from_trust_config(ClientTrustConfig.production())  # TUF refresh
        with context.signer(token) as signer:
            bundle = signer.sign_dsse(content)
    except Exception as exc:  # Fulcio, Rekor, TUF and requests raise unrelated (private) types
        raise SigningError(f"Sigstore signing failed: {type(exc).__name__}: {exc}") from exc
    return bundle.to_json().encode("utf-8")
