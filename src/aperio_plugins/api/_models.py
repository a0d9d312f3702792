"""The operator API's request and response bodies, as pydantic models so that the OpenAPI is exact."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from aperio_hookspecs import DeliveryBatch, RemediationRequest, SyncRequest

from .._model import FailureStage, Isolation, Origin, PluginKind, PluginState, SignatureStatus


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class PluginModel(_Strict):
    """One plugin as the host knows it: `PluginInfo.as_dict()`, field for field."""

    id: str
    version: str | None
    distribution: str | None
    location: str | None
    origin: Origin | None
    entry_point: str | None
    kinds: list[PluginKind]
    summary: str | None
    state: PluginState
    signature_status: SignatureStatus | None
    signature_detail: str | None
    signer: str | None
    signature_via: str | None
    api_requirement: str | None
    credential_scopes: list[str]
    isolation: Isolation | None
    enabled_flag: bool
    connectors: list[str]
    remediations: list[str]
    destinations: list[str]
    call_failures: int
    breaker_state: str = Field(description="closed, open or half_open")
    worker_pid: int | None
    worker_restarts: int
    worker_state: str | None
    worker_containment: str | None
    worker_containment_gaps: list[str]
    last_call_error: str | None
    failure_stage: FailureStage | None
    error: str | None
    development_build: bool
    activation_pending: bool = Field(
        default=False,
        description="admitted at start but not imported yet: verified and imported on first use (lazy activation)",
    )


class ChangeResult(_Strict):
    """The answer to a change: the plugin's state afterwards, and whether the change took effect."""

    action: str
    applied: bool
    in_place: bool = Field(description="false when a reload brought the plugin up anew instead of replacing it")
    note: str | None = None
    plugin: PluginModel | None = Field(description="the plugin after the change; null if the host no longer has it")


class DiscoverResult(_Strict):
    plugins: list[PluginModel]
    broken_distributions: list[str]


class RunResult(_Strict):
    plugin_id: str
    duration_ms: float
    result: dict[str, Any] = Field(description="the plugin's validated result envelope")


class InstallRequest(_Strict):
    spec: str = Field(
        min_length=1,
        max_length=500,
        # ID[@VERSION] or oci://…: never a path or file: URL naming a file on the server. OCI references
        # are printable ASCII; `\S` would differ between the OpenAPI's (ECMA) and pydantic's regex dialects.
        pattern=r"^(oci://[!-~]+|[A-Za-z0-9][A-Za-z0-9._-]{0,199}(@[A-Za-z0-9.+!_-]{1,100})?)$",
        description="a registry reference ID or ID@VERSION (from the server's APERIO_REGISTRY_INDEX), or oci://HOST/REPO:TAG",
    )
    pre: bool = Field(default=False, description="consider pre-releases when no version is pinned")


class InstallResponse(_Strict):
    installed: dict[str, Any] = Field(description="what was installed: id, version, source, sha256, signature")
    plugins: list[PluginModel] = Field(description="the installed plugins' state in this host afterwards")


class EventModel(_Strict):
    id: int
    occurred_at: datetime
    event: str
    level: str
    plugin_id: str | None
    actor: str | None
    fields: dict[str, Any]
    host: str | None = Field(default=None, description="the host the event happened on (APERIO_HOST_NAME)")


class EventPage(_Strict):
    events: list[EventModel]
    next_before: int | None = Field(description="pass as `before` for the next (older) page; null on the last page")


class ErrorBody(_Strict):
    detail: str


class HealthBody(_Strict):
    status: str


class ReadyBody(_Strict):
    status: str
    plugins: int
    failed: int


# The envelopes with `kind` required: it picks the envelope, so the OpenAPI must not call it optional.
class SyncRun(SyncRequest):
    kind: Literal["sync_request"]


class RemediationRun(RemediationRequest):
    kind: Literal["remediation_request"]


class DeliveryRun(DeliveryBatch):
    kind: Literal["delivery_batch"]


RunPayload = Annotated[SyncRun | RemediationRun | DeliveryRun, Field(discriminator="kind")]


class FleetBody(_Strict):
    lock: dict[str, Any] | None = Field(description="the pinned lock: revision, who pinned it, its releases")
    hosts: list[dict[str, Any]] = Field(description="live hosts: plugins, refusals (with reasons) and drift")
