"""Verify: check a plugin's signature and recompute every file's sha256, before any of its code runs.

`verify_installed` checks an installed distribution, `verify_wheel` a wheel
file. Both return a `Verification` and never raise for a plugin's fault.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import msgspec

from aperio_hookspecs import ENTRY_POINT_GROUP

from ._hashing import file_sha256 as file_sha256  # re-exported: _receipt hashes through it
from ._hashing import hash_files
from ._keys import verify_envelope
from ._model import FileCheck, FileStatus, Inspected, Origin, SignatureStatus, TrustMode, Verification
from ._ownership import record_sizes
from ._receipt import RECEIPT_FILE_NAME, verify_receipt
from ._signature_file import Ed25519Signature, parse_signature_file
from ._statement import PAYLOAD_TYPE, SIGNATURE_FILE_NAME, SignedStatement, is_signed_path, parse_statement
from ._trust import TrustStore
from .errors import ConfigurationError, VerificationError

if TYPE_CHECKING:
    from ._wheel import Wheel  # the wheel reader is the caller's: verifying installed files never needs it

# Files an installer adds to `.dist-info/` (PEP 376, PEP 610) and compiled caches: never executed by the
# verified loader, so their presence is not tampering.
# The host's install receipt is checked on its own, like the signature file.
_INSTALLER_FILES = frozenset(
    {"RECORD", "INSTALLER", "REQUESTED", "direct_url.json", SIGNATURE_FILE_NAME, RECEIPT_FILE_NAME}
)


def _is_bytecode_cache(path: str) -> bool:
    return "/__pycache__/" in f"/{path}" and path.endswith(".pyc")


def check_signatures(document: bytes, trust: TrustStore) -> tuple[SignedStatement, str]:
    """Return the signed statement and who signed it, trying every signature against the trust store.

    Raises `VerificationError` listing why each signature was refused.
    """
    signatures = parse_signature_file(document).signatures
    reasons = []
    for index, signature in enumerate(signatures):
        try:
            if isinstance(signature, Ed25519Signature):
                envelope = verify_envelope(signature.envelope, trust.keyring.keys)
                payload, payload_type = envelope.payload, envelope.payload_type
                signer = f"ed25519 key {envelope.key.key_id} ({envelope.key.path.name})"
            else:
                from ._sigstore import verify_dsse_bundle  # imports sigstore: only when a bundle is checked

                dsse = verify_dsse_bundle(json.dumps(signature.bundle).encode(), trust.sigstore)
                payload, payload_type, signer = dsse.payload, dsse.payload_type, dsse.signer
            if payload_type != PAYLOAD_TYPE:
                raise VerificationError(f"payload type {payload_type!r} is not {PAYLOAD_TYPE}")
            return parse_statement(payload), signer
        except (VerificationError, ConfigurationError) as exc:
            # A Sigstore trust root that cannot be used refuses that signature; others may still verify.
            reasons.append(f"signature {index + 1} ({signature.kind}): {exc.message}")
    raise VerificationError("; ".join(reasons))


def _report(signed: Mapping[str, str], actual: Mapping[str, str | None], extra: Iterable[str]) -> list[FileCheck]:
    checks = []
    for path, expected in sorted(signed.items()):
        digest = actual.get(path)
        if digest is None:
            checks.append(FileCheck(path, FileStatus.MISSING))
        elif hmac.compare_digest(digest, expected):
            checks.append(FileCheck(path, FileStatus.OK))
        else:
            checks.append(FileCheck(path, FileStatus.MODIFIED))
    checks.extend(FileCheck(path, FileStatus.UNEXPECTED) for path in sorted(set(extra) - set(signed)))
    return checks


def _outcome(statement: SignedStatement, signer: str, checks: list[FileCheck], problems: list[str]) -> Verification:
    bad = [check for check in checks if check.status is not FileStatus.OK]
    if bad:
        listed = ", ".join(f"{check.path} {check.status.value}" for check in bad[:5])
        more = f" and {len(bad) - 5} more" if len(bad) > 5 else ""
        problems.insert(0, f"files do not match the signed statement: {listed}{more}")
    if problems:
        return Verification(SignatureStatus.INVALID, "; ".join(problems), tuple(checks), signer)
    digests = {path: digest for path, digest in statement.digests.items() if ".dist-info/" not in path}
    packages = frozenset(path.split("/", 1)[0].removesuffix(".py") for path in digests)
    return Verification(SignatureStatus.VERIFIED, f"signed by {signer}", tuple(checks), signer, digests, packages)


def _installed_files(
    root: Path, statement: SignedStatement, metadata_dir: Path
) -> tuple[dict[str, str | None], set[str]]:
    """Hash every signed file as installed, and list files that are present but not signed."""
    # Plain strings: a large plugin has thousands of files, and pathlib's joins would cost more than hashing.
    base = str(root)
    present: set[str] = set()
    tops = {path.split("/", 1)[0] for path in statement.digests if "/" in path}
    tops.add(metadata_dir.name)
    prefix = len(base) + 1

    def walk() -> None:
        for top in tops:
            for directory, _, names in os.walk(os.path.join(base, top)):
                relative_dir = directory[prefix:].replace(os.sep, "/")
                present.update(f"{relative_dir}/{name}" for name in names)

    # The walk for unsigned files runs while other threads hash (a large plugin's files are hashed in parallel).
    recorded = record_sizes(metadata_dir)
    sizes = {path: size for path, size in recorded.items() if size is not None}
    actual = hash_files(base, list(statement.digests), size_hints=sizes, while_hashing=walk)
    present.update(recorded)
    unexpected = {
        path
        for path in present
        if path not in statement.digests
        and not _is_bytecode_cache(path)
        and not (path.startswith(f"{metadata_dir.name}/") and path.rsplit("/", 1)[1] in _INSTALLER_FILES)
    }
    return actual, unexpected


def verify_installed(inspected: Inspected, trust: TrustStore) -> Verification:
    """Verify an installed plugin's signature and files under the store's trust mode. Never raises."""
    candidate = inspected.candidate
    # 1. Trust turned off: nothing is checked, and the status says so.
    if trust.mode is TrustMode.DISABLED:
        return Verification(SignatureStatus.SKIPPED, "trust mode is disabled: no checks were made")
    # 2. A plugins directory others can write to is not a place to trust code from.
    from_plugins_dir = candidate.origin is Origin.PLUGINS_DIR
    if trust.untrusted_plugins_dir is not None and trust.mode is TrustMode.STRICT and from_plugins_dir:
        return Verification(SignatureStatus.INVALID, trust.untrusted_plugins_dir)
    # 3. The publisher's embedded signature and the host's install receipt; neither: unsigned.
    document = _read_optional(candidate.metadata_dir / SIGNATURE_FILE_NAME)
    receipt = _read_optional(candidate.metadata_dir / RECEIPT_FILE_NAME)
    if isinstance(document, Verification):
        return document
    if isinstance(receipt, Verification):
        return receipt
    if document is None and receipt is None:
        return Verification(SignatureStatus.UNSIGNED, f"{inspected.distribution} {inspected.version} is not signed")
    outcomes = []
    if document is not None:
        # 4. A signature from a trusted signer over a statement of ours.
        try:
            statement, signer = check_signatures(document, trust)
        except VerificationError as exc:
            return Verification(SignatureStatus.INVALID, exc.message)
        outcomes.append(_check_installed(inspected, statement, signer))
    if receipt is not None:
        # 4'. A receipt signed by this host's key, for a publisher the operator still trusts.
        try:
            verified = verify_receipt(receipt, trust.receipt_key)
        except VerificationError as exc:
            return Verification(SignatureStatus.INVALID, exc.message)
        if not trust.trusts_publisher(verified.publisher):
            return Verification(
                SignatureStatus.INVALID,
                f"install receipt refused: {verified.publisher} is no longer a trusted identity or publisher",
            )
        outcome = _check_installed(inspected, verified.statement, verified.publisher)
        if outcome.status is SignatureStatus.VERIFIED:
            key = verified.key_id[:16]
            detail = f"signed by {verified.publisher}, verified at install; install receipt (host key {key})"
            outcome = msgspec.structs.replace(outcome, detail=detail)
        outcomes.append(outcome)
    # Every signature the plugin carries must hold; the first outcome decides what the loader may run.
    failed = next((outcome for outcome in outcomes if outcome.status is not SignatureStatus.VERIFIED), None)
    if failed is not None:
        return failed
    if len(outcomes) == 2:
        return msgspec.structs.replace(outcomes[0], detail=f"{outcomes[0].detail}; {outcomes[1].detail}")
    return outcomes[0]


def _read_optional(path: Path) -> bytes | Verification | None:
    """Return the bytes of an optional signature file, None when absent, an invalid verdict when unreadable."""
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        return Verification(SignatureStatus.INVALID, f"{path}: unreadable: {exc.strerror}")


def _check_installed(inspected: Inspected, statement: SignedStatement, signer: str) -> Verification:
    candidate = inspected.candidate
    # 5. The statement is for this release, not another plugin's or an older one.
    problems = _release_problems(statement, "the installed release", inspected.distribution, inspected.version)
    # 6. Every signed file is present and unchanged, and nothing unsigned sits beside them.
    actual, unexpected = _installed_files(candidate.root, statement, candidate.metadata_dir)
    checks = _report(statement.digests, actual, unexpected)
    # 7. What inspect and discover read is what was signed: METADATA, the manifest, the entry point.
    problems.extend(_decision_inputs_problems(inspected, statement))
    return _outcome(statement, signer, checks, problems)


def _release_problems(statement: SignedStatement, what: str, distribution: str, version: str) -> list[str]:
    if statement.matches_release(distribution, version):
        return []
    return [
        f"the signature is for {statement.distribution} {statement.version}, but {what} is {distribution} {version}"
    ]


def _decision_inputs_problems(inspected: Inspected, statement: SignedStatement) -> list[str]:
    candidate = inspected.candidate
    problems = []
    metadata = f"{candidate.metadata_dir.name}/METADATA"
    if statement.digests.get(metadata) != inspected.metadata_sha256:
        problems.append(f"{metadata} that was inspected is not the signed one")
    try:
        manifest = inspected.manifest.path.relative_to(candidate.root).as_posix()
    except ValueError:
        manifest = str(inspected.manifest.path)
    if statement.digests.get(manifest) != inspected.manifest.sha256:
        problems.append(f"{manifest} that was inspected is not the signed one")
    entry_points = candidate.metadata_dir / "entry_points.txt"
    signed_digest = statement.digests.get(f"{candidate.metadata_dir.name}/entry_points.txt")
    try:
        data = entry_points.read_bytes()
    except OSError:
        data = b""
    if signed_digest is None or not hmac.compare_digest(hashlib.sha256(data).hexdigest(), signed_digest):
        problems.append("entry_points.txt is not the signed one")
    elif _entry_point(data, candidate.plugin_id) != candidate.entry_point:
        problems.append(f"entry point {candidate.plugin_id} is not the one that was signed")
    return problems


def _entry_point(data: bytes, plugin_id: str) -> str | None:
    """Return the value of `plugin_id` in the `aperio.plugins` section of an entry_points.txt."""
    section = None
    for raw in data.decode("utf-8", errors="replace").splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            section = line[1:-1].strip()
        elif section == ENTRY_POINT_GROUP:
            name, separator, value = line.partition("=")
            if separator and name.strip() == plugin_id:
                return value.strip()
    return None


def verify_wheel(wheel: Wheel, trust: TrustStore) -> Verification:
    """Verify a wheel file's embedded signature and every member against the signed statement."""
    document = wheel.members.get(f"{wheel.dist_info}/{SIGNATURE_FILE_NAME}")
    if document is None:
        return Verification(SignatureStatus.UNSIGNED, f"{wheel.path.name} is not signed")
    try:
        statement, signer = check_signatures(document, trust)
    except VerificationError as exc:
        return Verification(SignatureStatus.INVALID, exc.message)
    problems = _release_problems(statement, "the wheel", wheel.distribution, wheel.version)
    digests = {name: digest for name, digest in wheel.digests().items() if is_signed_path(name)}
    checks = _report(statement.digests, digests, digests)
    return _outcome(statement, signer, checks, problems)
