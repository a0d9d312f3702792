"""Frozen results of each pipeline stage, and the states and statuses they carry."""

from __future__ import annotations

import enum
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import msgspec


class PluginState(str, enum.Enum):
    DISCOVERED = "discovered"
    LOADED = "loaded"
    ENABLED = "enabled"
    DISABLED = "disabled"
    UNLOADED = "unloaded"
    FAILED = "failed"


class SignatureStatus(str, enum.Enum):
    VERIFIED = "verified"
    UNSIGNED = "unsigned"
    INVALID = "invalid"
    SKIPPED = "skipped"


class TrustMode(str, enum.Enum):
    STRICT = "strict"
    WARN = "warn"
    DISABLED = "disabled"


class PluginKind(str, enum.Enum):
    CONNECTOR = "connector"
    REMEDIATION = "remediation"
    DESTINATION = "destination"


class Isolation(str, enum.Enum):
    INPROCESS = "inprocess"
    PROCESS = "process"
    ANY = "any"


class SandboxMode(str, enum.Enum):
    """`APERIO_PLUGIN_SANDBOX`: how workers are contained."""

    AUTO = "auto"  # bubblewrap when it works here, else the subreaper fallback
    BWRAP = "bwrap"  # bubblewrap or no worker at all
    NONE = "none"  # never bubblewrap: the subreaper fallback only


class Activation(str, enum.Enum):
    """`APERIO_PLUGIN_ACTIVATION`: when a plugin that declares its hooks is imported."""

    LAZY = "lazy"  # on the first call of a hook it declares (or first use of the catalog, or run)
    EAGER = "eager"  # at load, like a plugin that declares no hooks


class Origin(str, enum.Enum):
    ENVIRONMENT = "environment"
    PLUGINS_DIR = "plugins_dir"


class FailureStage(str, enum.Enum):
    """Where in the pipeline a plugin was refused; operators filter on it."""

    DISCOVER = "discover"
    INSPECT = "inspect"
    VERIFY = "verify"
    ADMIT = "admit"
    LOAD = "load"
    REGISTER = "register"


class Candidate(msgspec.Struct, frozen=True):
    """One `aperio.plugins` entry point of one installed distribution (discover)."""

    plugin_id: str
    entry_point: str
    distribution: str
    version: str
    root: Path
    metadata_dir: Path
    origin: Origin
    position: int

    @property
    def module_name(self) -> str:
        return self.entry_point.partition(":")[0].strip()

    @property
    def top_level_package(self) -> str:
        return self.module_name.split(".", 1)[0]

    def describe(self) -> str:
        """Return 'distribution version (root)', enough to tell two installs apart."""
        return f"{self.distribution} {self.version} ({self.root})"


class ManifestEntry(msgspec.Struct, frozen=True):
    """What a plugin declares about itself, read without importing it."""

    summary: str
    kinds: tuple[PluginKind, ...]
    credential_scopes: tuple[str, ...]
    isolation: Isolation
    homepage: str | None
    path: Path
    sha256: str
    network: bool = False
    """Whether the plugin's worker keeps the host's network (see `_manifest.needs_network`)."""
    hooks: tuple[str, ...] | None = None
    """The hooks the plugin implements, as its manifest declares them (None: not declared, always
    imported at load). Checked against the module when it is signed, checked and imported."""


class Inspected(msgspec.Struct, frozen=True):
    """A candidate whose manifest and plugin API requirement were read and validated (inspect)."""

    candidate: Candidate
    manifest: ManifestEntry
    api_requirement: str
    distribution: str
    version: str
    metadata_sha256: str

    def info(self, *, state: PluginState, enabled_flag: bool, isolation: Isolation, **more: Any) -> PluginInfo:
        """The `PluginInfo` of this plugin as inspection knows it; `more` sets what later stages found."""
        candidate, manifest = self.candidate, self.manifest
        return PluginInfo(
            id=candidate.plugin_id,
            state=state,
            distribution=self.distribution,
            version=self.version,
            location=str(candidate.root),
            origin=candidate.origin,
            entry_point=candidate.entry_point,
            api_requirement=self.api_requirement,
            summary=manifest.summary,
            kinds=manifest.kinds,
            credential_scopes=manifest.credential_scopes,
            isolation=isolation,
            enabled_flag=enabled_flag,
            **more,
        )


class FileStatus(str, enum.Enum):
    OK = "ok"
    MODIFIED = "modified"
    MISSING = "missing"
    UNEXPECTED = "unexpected"


class FileCheck(msgspec.Struct, frozen=True):
    path: str
    status: FileStatus


class Verification(msgspec.Struct, frozen=True):
    """The outcome of the verify stage: a status, who signed, and a per-file report.

    For a `verified` plugin, `digests` maps every signed file outside the
    metadata directory (relative to the install root) to its sha256: exactly
    what the loader may execute.
    """

    status: SignatureStatus
    detail: str
    files: tuple[FileCheck, ...] = ()
    signer: str | None = None
    digests: Mapping[str, str] = msgspec.field(default_factory=dict)
    packages: frozenset[str] = frozenset()

    def with_status(self, status: FileStatus) -> tuple[str, ...]:
        return tuple(check.path for check in self.files if check.status is status)


class Refusal(msgspec.Struct, frozen=True):
    """Why a plugin did not pass a stage. Failures are data."""

    stage: FailureStage
    reason: str
    event: str = "plugin.load.failed"


class PluginInfo(msgspec.Struct, frozen=True):
    """Everything the host knows about one plugin id, as a snapshot."""

    id: str
    state: PluginState
    signature_status: SignatureStatus | None = None
    distribution: str | None = None
    version: str | None = None
    location: str | None = None
    origin: Origin | None = None
    entry_point: str | None = None
    api_requirement: str | None = None
    summary: str | None = None
    kinds: tuple[PluginKind, ...] = ()
    credential_scopes: tuple[str, ...] = ()
    isolation: Isolation | None = None
    error: str | None = None
    failure_stage: FailureStage | None = None
    enabled_flag: bool = True
    connectors: tuple[str, ...] = ()
    remediations: tuple[str, ...] = ()
    destinations: tuple[str, ...] = ()
    call_failures: int = 0
    last_call_error: str | None = None
    breaker_state: str = "closed"
    worker_pid: int | None = None
    worker_restarts: int = 0
    worker_state: str | None = None
    worker_containment: str | None = None
    worker_containment_gaps: tuple[str, ...] = ()
    signature_detail: str | None = None
    signer: str | None = None
    # Installed by `aperio plugin dev` from a source folder: never signed, admitted only in development.
    development_build: bool = False
    # Admitted for lazy activation and not imported yet: verified and imported on first use.
    activation_pending: bool = False

    @property
    def signature_via(self) -> str | None:
        """Return how the signature reached the host: "install receipt" or "embedded" (None: not verified)."""
        if self.signature_status is not SignatureStatus.VERIFIED:
            return None
        return "install receipt" if "install receipt" in (self.signature_detail or "") else "embedded"

    def as_dict(self) -> dict[str, object]:
        """Return a JSON-ready dict (what `aperio plugin list --json` prints)."""
        return {
            "id": self.id,
            "version": self.version,
            "distribution": self.distribution,
            "location": self.location,
            "origin": self.origin.value if self.origin else None,
            "entry_point": self.entry_point,
            "kinds": [kind.value for kind in self.kinds],
            "summary": self.summary,
            "state": self.state.value,
            "signature_status": self.signature_status.value if self.signature_status else None,
            "signature_detail": self.signature_detail,
            "signer": self.signer,
            "signature_via": self.signature_via,
            "api_requirement": self.api_requirement,
            "credential_scopes": list(self.credential_scopes),
            "isolation": self.isolation.value if self.isolation else None,
            "enabled_flag": self.enabled_flag,
            "connectors": list(self.connectors),
            "remediations": list(self.remediations),
            "destinations": list(self.destinations),
            "call_failures": self.call_failures,
            "breaker_state": self.breaker_state,
            "worker_pid": self.worker_pid,
            "worker_restarts": self.worker_restarts,
            "worker_state": self.worker_state,
            "worker_containment": self.worker_containment,
            "worker_containment_gaps": list(self.worker_containment_gaps),
            "last_call_error": self.last_call_error,
            "failure_stage": self.failure_stage.value if self.failure_stage else None,
            "error": self.error,
            "development_build": self.development_build,
            "activation_pending": self.activation_pending,
        }


class LoadReport(msgspec.Struct, frozen=True):
    """What one `PluginHost.load()` did: which plugins loaded and which were refused, and why."""

    plugins: tuple[PluginInfo, ...]

    @property
    def enabled(self) -> tuple[PluginInfo, ...]:
        return tuple(info for info in self.plugins if info.state is PluginState.ENABLED)

    @property
    def failed(self) -> tuple[PluginInfo, ...]:
        return tuple(info for info in self.plugins if info.state is PluginState.FAILED)
