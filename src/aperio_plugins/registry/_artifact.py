"""Check a downloaded plugin wheel before anything is installed: digest, contents, API, dependencies, signatures.

Every check runs on the bytes that will be installed, and every refusal raises
`ArtifactRejectedError` naming the release and the reason. The trust mode
decides what a missing or bad signature means, exactly as at load time.
"""

from __future__ import annotations

import configparser
import email
import hmac
import importlib.metadata
import json
from collections.abc import Sequence
from pathlib import Path

import msgspec
from packaging.utils import canonicalize_name
from packaging.version import InvalidVersion, Version

from aperio_hookspecs import DISTRIBUTION_NAME, ENTRY_POINT_GROUP

from .._compat import incompatibility
from .._manifest import api_requirement, runtime_requirements
from .._model import SignatureStatus, TrustMode, Verification
from .._ownership import HostModules, collision, import_names, scan_plugins_dir, wheel_layout_problem
from .._policy import decide_trust, verdict, verdict_fields
from .._signature_file import SIGNATURE_FORMAT
from .._statement import is_signed_path
from .._trust import TrustStore
from .._verify import check_signatures, verify_installed, verify_wheel
from .._wheel import Wheel, entry_point_sections, read_wheel
from .._wheel_signatures import WheelSignature, verify_wheel_signatures
from ..errors import (
    AperioError,
    ArtifactRejectedError,
    InstallError,
    InvalidWheelError,
    ManifestError,
    VerificationError,
)
from ..pipeline.discover import discover, search_roots
from ..pipeline.inspect import inspect_candidate
from ._index import (
    AttestationReleaseSignature,
    Ed25519ReleaseSignature,
    ReleaseSignature,
    SigstoreBundleReleaseSignature,
    SigstoreReleaseSignature,
)
from ._plugins_dir import installed_distributions


class ExpectedRelease(msgspec.Struct, frozen=True):
    """What the index or lock file says the artifact is; None fields are not checked."""

    plugin_id: str | None = None
    distribution: str | None = None
    version: str | None = None
    sha256: str | None = None


class CheckedArtifact(msgspec.Struct, frozen=True):
    """A wheel that passed every check, with what the checks found."""

    wheel: Wheel
    plugin_ids: tuple[str, ...]
    api_requirement: str
    verification: Verification
    warnings: tuple[str, ...]
    # Who signed the wheel file itself (None: no wheel-level signature verified): the install writes an
    # install receipt naming them, since that signature cannot be checked once pip has unpacked the wheel.
    wheel_signer: str | None = None
    sha256: str = ""

    def describe(self) -> str:
        return f"{self.wheel.distribution} {self.wheel.version}"


def signature_document(signatures: Sequence[ReleaseSignature]) -> bytes | None:
    """Return an index release's signatures over its statement as a signature file, the form
    `check_signatures` reads (None when it has none)."""
    entries: list[dict[str, object]] = []
    for s in signatures:
        if isinstance(s, Ed25519ReleaseSignature):
            entries.append({"kind": "ed25519", "envelope": s.envelope})
        elif isinstance(s, SigstoreReleaseSignature):
            entries.append({"kind": "sigstore", "bundle": s.bundle})
    if not entries:
        return None
    return json.dumps({"format": SIGNATURE_FORMAT, "signatures": entries}).encode()


def wheel_level_signatures(signatures: Sequence[ReleaseSignature], origin: str) -> list[WheelSignature]:
    """Return an index release's signatures over the wheel file itself."""
    found = []
    for index, s in enumerate(signatures):
        where = f"{origin} signature {index + 1} ({s.kind})"
        if isinstance(s, SigstoreBundleReleaseSignature):
            found.append(WheelSignature("sigstore-bundle", json.dumps(s.bundle).encode(), where))
        elif isinstance(s, AttestationReleaseSignature):
            found.append(WheelSignature("pep740", json.dumps(s.attestation).encode(), where))
    return found


def _entry_point_sections(wheel: Wheel) -> configparser.ConfigParser:
    data = wheel.members.get(f"{wheel.dist_info}/entry_points.txt", b"")
    try:
        return entry_point_sections(data, "entry_points.txt")
    except InvalidWheelError as exc:
        raise ArtifactRejectedError(exc.message) from None


def wheel_plugin_ids(wheel: Wheel) -> tuple[str, ...]:
    """Return the plugin ids the wheel's entry points declare; refuse console scripts or no plugin at all."""
    return tuple(wheel_plugins(wheel))


def wheel_plugins(wheel: Wheel) -> dict[str, str]:
    """Return the wheel's plugin entry points (id: `module:attr`).

    Raises `ArtifactRejectedError` for console scripts, no plugin at all, or an unreadable entry_points.txt.
    """
    sections = _entry_point_sections(wheel)
    scripts = [name for name in ("console_scripts", "gui_scripts") if sections.has_section(name)]
    if scripts:
        raise ArtifactRejectedError(f"declares {scripts[0]}: a plugin may not install commands on the host")
    if not sections.has_section(ENTRY_POINT_GROUP):
        raise ArtifactRejectedError(f"has no entry point in the {ENTRY_POINT_GROUP!r} group: it is not a plugin")
    return dict(sections.items(ENTRY_POINT_GROUP))


def requires_dist(wheel: Wheel) -> list[str]:
    headers = wheel.members[f"{wheel.dist_info}/METADATA"].split(b"\n\n", 1)[0]
    return email.message_from_string(headers.decode("utf-8", errors="replace")).get_all("Requires-Dist") or []


def _dependency_problems(requires_dist: list[str]) -> list[str]:
    """Return each runtime dependency the host's environment does not satisfy (the plugin API excepted)."""
    problems = []
    for requirement in runtime_requirements(requires_dist):
        if canonicalize_name(requirement.name) == DISTRIBUTION_NAME:
            continue
        try:
            installed = importlib.metadata.version(requirement.name)
        except importlib.metadata.PackageNotFoundError:
            problems.append(f"requires {requirement}, which the host does not have")
            continue
        try:
            satisfied = requirement.specifier.contains(Version(installed), prereleases=True)
        except InvalidVersion:
            satisfied = False
        if not satisfied:
            problems.append(f"requires {requirement}, but the host has {requirement.name} {installed}")
    return problems


def _check_detached(document: bytes, wheel: Wheel, trust: TrustStore) -> str:
    """Return who signed the published signature material; raise `VerificationError` if it does not fit."""
    statement, signer = check_signatures(document, trust)
    if not statement.matches_release(wheel.distribution, wheel.version):
        raise VerificationError(f"it signs {statement.distribution} {statement.version}, not this wheel")
    digests = {name: digest for name, digest in wheel.digests().items() if is_signed_path(name)}
    if statement.digests != digests:
        raise VerificationError("it signs other file contents than this wheel's")
    return signer


def signature_verdict(
    path: Path,
    sha256: str,
    wheel: Wheel | None,
    detached: bytes | None,
    wheel_signatures: Sequence[WheelSignature],
    trust: TrustStore,
) -> tuple[Verification, str | None]:
    """Return the verdict over every signature the release carries, and who signed the wheel file.

    Every signature must verify: one that does not (another signer's, another release's) makes the
    verdict invalid rather than letting the host guess which one was meant. `wheel` is None when the
    archive cannot be read, so that only the signatures over the file were checked. Never raises.
    """
    if trust.mode is TrustMode.DISABLED:
        return Verification(SignatureStatus.SKIPPED, "trust mode is disabled: no checks were made"), None
    wheel_level = verify_wheel_signatures(wheel_signatures, path.name, sha256, trust.sigstore)
    signers, problems = list(wheel_level.signers), list(wheel_level.problems)
    if wheel is not None:
        if detached is not None:
            try:
                signers.append(_check_detached(detached, wheel, trust))
            except VerificationError as exc:
                problems.append(f"the published signature does not verify: {exc.message}")
        embedded = verify_wheel(wheel, trust)
        if embedded.status is SignatureStatus.VERIFIED and embedded.signer is not None:
            signers.append(embedded.signer)
        elif embedded.status is SignatureStatus.INVALID:
            problems.append(embedded.detail)
    wheel_signer = "; ".join(wheel_level.signers) if wheel_level.signers and not problems else None
    if problems:
        signer = "; ".join(signers) if signers else None
        return Verification(SignatureStatus.INVALID, "; ".join(problems), signer=signer), None
    if signers:
        unique = list(dict.fromkeys(signers))
        return Verification(SignatureStatus.VERIFIED, "signed by " + "; ".join(unique), signer=unique[0]), wheel_signer
    what = wheel.path.name if wheel is not None else path.name
    return Verification(SignatureStatus.UNSIGNED, f"{what} is not signed"), None


def check_artifact(
    path: Path,
    sha256: str,
    expected: ExpectedRelease,
    *,
    trust: TrustStore,
    host_api_version: str | None,
    detached_signatures: bytes | None = None,
    wheel_signatures: Sequence[WheelSignature] = (),
    check_dependencies: bool = True,
) -> CheckedArtifact:
    """Return the checked wheel at `path` (whose streamed digest is `sha256`).

    Checks, in order: the digest; every signature (over the file, over the statement, embedded), decided
    by the trust mode; then the archive (no member escaping the target, RECORD consistent, no `.data`);
    that it is the expected release and plugin; its layout and top-level names; no console scripts; the
    plugin API requirement; the dependencies. The signature verdict leads every later refusal
    ("signature verified (signed by …) — refused: …"). A registry's validator, which is not the host,
    passes `host_api_version=None` and `check_dependencies=False`. Raises `ArtifactRejectedError` naming
    the release, the verdict and the first failed check.
    """
    label = " ".join(filter(None, (expected.plugin_id, expected.version))) or path.name
    if expected.sha256 is not None and not hmac.compare_digest(sha256, expected.sha256):
        raise ArtifactRejectedError(
            f"{label}: sha256 {sha256} does not match the expected {expected.sha256}", plugin_id=expected.plugin_id
        )
    try:
        # Named by its file name: `path` is in a temporary download folder.
        wheel: Wheel | None = read_wheel(path, where=path.name)
        unreadable = None
    except InvalidWheelError as exc:
        # The label already is the file name when nothing else names the release.
        wheel = None
        unreadable = exc.message.removeprefix(f"{path.name}: ") if label == path.name else exc.message
    if wheel is not None:
        label = f"{expected.plugin_id or wheel.distribution} {wheel.version}"
    verification, wheel_signer = signature_verdict(path, sha256, wheel, detached_signatures, wheel_signatures, trust)
    fields = verdict_fields(verification)
    decision = decide_trust(verification, trust.mode)
    if decision.refusal is not None and (wheel is not None or verification.status is not SignatureStatus.UNSIGNED):
        raise ArtifactRejectedError(f"{label}: {decision.refusal}", plugin_id=expected.plugin_id, signature=fields)
    said = verdict(verification)
    if wheel is None and verification.status is SignatureStatus.UNSIGNED:
        said = "signature not checked (the wheel cannot be read, so neither can its embedded signature)"
    try:
        if wheel is None:
            raise ArtifactRejectedError(unreadable or f"{path.name} is not a wheel")
        plugin_ids, requirement = _check_contents(wheel, expected, host_api_version, check_dependencies)
    except ArtifactRejectedError as exc:
        raise ArtifactRejectedError(
            f"{label}: {said} — refused: {exc.message}", plugin_id=expected.plugin_id, signature=fields
        ) from None
    warnings = () if decision.warning is None else (decision.warning,)
    return CheckedArtifact(wheel, plugin_ids, requirement, verification, warnings, wheel_signer, sha256)


def _check_contents(
    wheel: Wheel, expected: ExpectedRelease, host_api_version: str | None, check_dependencies: bool
) -> tuple[tuple[str, ...], str]:
    """Return the plugin ids and API requirement of a wheel that is the expected release and a plugin
    this host can run. Raises `ArtifactRejectedError` naming the first problem."""
    _check_identity(wheel, expected)
    plugin_ids = wheel_plugin_ids(wheel)
    _check_layout(wheel)
    if expected.plugin_id is not None and expected.plugin_id not in plugin_ids:
        raise ArtifactRejectedError(f"the wheel provides {', '.join(plugin_ids)}, not {expected.plugin_id}")
    requires = requires_dist(wheel)
    try:
        requirement = api_requirement(requires)
        dependency_problems = _dependency_problems(requires) if check_dependencies else []
    except ManifestError as exc:
        raise ArtifactRejectedError(f"METADATA {exc.message}") from None
    reason = incompatibility(requirement, host_api_version) if host_api_version is not None else None
    if reason is not None:
        raise ArtifactRejectedError(reason)
    if dependency_problems:
        raise ArtifactRejectedError(
            "; ".join(dependency_problems) + " (plugins are installed without dependencies: see docs/registry.md)"
        )
    return plugin_ids, requirement


def _check_layout(wheel: Wheel) -> None:
    """Refuse a wheel that would put anything besides its own packages and `.dist-info` into the
    plugins directory, or whose top-level names the standard library has (a host-independent check)."""
    problem = wheel_layout_problem(wheel.members, wheel_plugins(wheel))
    if problem is not None:
        raise ArtifactRejectedError(f"it would install outside its own packages: {problem}")
    reason = collision(import_names(wheel.members), wheel.distribution)
    if reason is not None:
        raise ArtifactRejectedError(reason)


def _check_identity(wheel: Wheel, expected: ExpectedRelease) -> None:
    try:
        version = Version(wheel.version)
    except InvalidVersion:
        raise ArtifactRejectedError(f"the wheel's version {wheel.version!r} is not a valid version") from None
    if expected.distribution is not None and canonicalize_name(wheel.distribution) != canonicalize_name(
        expected.distribution
    ):
        raise ArtifactRejectedError(f"the wheel is {wheel.distribution}, not {expected.distribution}")
    if expected.version is not None and version != Version(expected.version):
        raise ArtifactRejectedError(f"the wheel is version {wheel.version}, not {expected.version}")


def refuse_shadowed_ids(plugins_dir: Path, checked: CheckedArtifact) -> None:
    """Refuse a plugin id that another distribution already provides: the host would load only one.

    Raises `InstallError` naming the other distribution and how to remove it.
    """
    canonical = canonicalize_name(checked.wheel.distribution)
    for entry_point in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        if entry_point.name in checked.plugin_ids and entry_point.dist is not None:
            raise InstallError(
                f"{checked.describe()}: plugin id {entry_point.name} is already provided by"
                f" {entry_point.dist.name} {entry_point.dist.version} in the host's environment, which would"
                " shadow the installed copy; uninstall that one with pip first"
            )
    for installed in installed_distributions(plugins_dir):
        clash = set(installed.plugin_ids) & set(checked.plugin_ids)
        if clash and installed.canonical_name != canonical:
            raise InstallError(
                f"{checked.describe()}: plugin id {sorted(clash)[0]} is already provided by"
                f" {installed.describe()}; remove it first (aperio plugin remove {sorted(clash)[0]})"
            )


def refuse_collisions(plugins_dir: Path, checked: CheckedArtifact) -> None:
    """Refuse a release whose top-level names the host's environment or another distribution in
    the plugins directory already provides: a load would refuse it. Raises `InstallError`."""
    reason = collision(
        import_names(checked.wheel.members),
        checked.wheel.distribution,
        host=HostModules(plugins_dir),
        layout=scan_plugins_dir(plugins_dir),
    )
    if reason is not None:
        raise InstallError(f"{checked.describe()}: {reason}; nothing was changed")


def check_staged_release(staging: Path, *, checked: CheckedArtifact, trust: TrustStore) -> None:
    """Check a release as pip laid it out in `staging` with the host's own discover, inspect and verify,
    so that an install refuses what a load would refuse. Raises `ArtifactRejectedError` or `InstallError`."""
    found = discover(search_roots([], staging)).candidates
    if {candidate.plugin_id for candidate in found} != set(checked.plugin_ids):
        raise InstallError(f"{checked.describe()}: pip installed other plugin entry points than the wheel's")
    for candidate in found:
        try:
            inspected = inspect_candidate(candidate)
        except AperioError as exc:
            raise ArtifactRejectedError(f"{checked.describe()}: {exc.message}") from None
        verification = verify_installed(inspected, trust)
        refusal = decide_trust(verification, trust.mode).refusal
        if refusal is not None:
            raise ArtifactRejectedError(f"{checked.describe()}: as installed, {refusal}")
