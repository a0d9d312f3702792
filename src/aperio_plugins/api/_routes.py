"""The `/api/v1` routes over a `PluginHost`'s public interface, each behind one permission.

Every route first asks the authorizer who is calling (none: 401) and then checks the permission
(missing: 403), in that order, so a caller without credentials never learns what a permission
would allow. Admin and execute actions and every refusal are audited with the principal's name.
Host calls block, so the routes are sync (FastAPI runs them in its thread pool); runs go to a pool
of their own with a deadline, so that a plugin that hangs holds one of those threads and nothing else.
"""

# No `from __future__ import annotations`: FastAPI reads the routes' annotations, which name local aliases.

import asyncio
import concurrent.futures
import contextvars
import json
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Annotated, Any

import msgspec
from fastapi import APIRouter, Body, Depends, HTTPException, Path, Query, Request
from fastapi.responses import JSONResponse, Response
from fastapi.security import HTTPBearer
from pydantic import BaseModel

from .._host import PluginHost
from .._model import PluginInfo, PluginKind, PluginState
from .._records import AuditTrail
from ..errors import (
    AperioError,
    CircuitOpenError,
    HookError,
    LifecycleError,
    PluginCallError,
    PluginLoadError,
    RegistryError,
    StateStoreError,
    UnknownPluginError,
    WorkerCrashedError,
    WorkerTimeoutError,
)
from ._installing import Installer, install_into
from ._metrics import ApiMetrics
from ._models import (
    ChangeResult,
    DiscoverResult,
    ErrorBody,
    EventModel,
    EventPage,
    InstallRequest,
    InstallResponse,
    PluginModel,
    RunPayload,
    RunResult,
)
from ._principal import Authorizer, Permission, Principal
from ._trail import acting_as, record

# Plugin ids are entry point names; this bound keeps a path parameter from being a megabyte.
PluginId = Annotated[str, Path(min_length=1, max_length=200)]
_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorBody, "description": "no valid token"},
    403: {"model": ErrorBody, "description": "the token lacks the permission"},
}
_NOT_FOUND: dict[int | str, dict[str, Any]] = {404: {"model": ErrorBody, "description": "no plugin with that id"}}
_STORE_AWAY: dict[int | str, dict[str, Any]] = {
    503: {"model": ErrorBody, "description": "the shared state store is out of reach: no change is made"}
}
_CHANGE = {
    **_ERRORS,
    **_NOT_FOUND,
    409: {"model": ChangeResult, "description": "the change could not be made"},
    **_STORE_AWAY,
}
AUTH_REFUSAL = "aperio_auth_refusal"  # request.state attribute an authorizer may set: (reason, name)


@dataclass
class ApiContext:
    """What the routes share: the host and the services around it."""

    host: PluginHost
    authorize: Authorizer
    trail: AuditTrail | None
    metrics: ApiMetrics
    run_timeout: float = 30.0
    run_workers: int = 16
    install: Installer | None = None
    _pool: concurrent.futures.ThreadPoolExecutor = field(init=False, repr=False)
    _install_lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def __post_init__(self) -> None:
        # Threads start on first use; made here so that two first runs cannot make two pools.
        self._pool = concurrent.futures.ThreadPoolExecutor(self.run_workers, thread_name_prefix="aperio-run")

    @property
    def pool(self) -> concurrent.futures.ThreadPoolExecutor:
        return self._pool

    def audit(self, event: str, principal: Principal | None, **fields: Any) -> None:
        if self.trail is not None:
            plugin_id = fields.pop("plugin_id", None)
            level = "warning" if fields.get("outcome") not in (None, "ok") else "info"
            record(
                self.trail,
                event,
                level=level,
                plugin_id=plugin_id,
                actor=principal.name if principal else None,
                fields=fields,
            )

    def close(self) -> None:
        # In-flight runs finish on their own threads; a hung one must not hold up shutdown.
        self._pool.shutdown(wait=False, cancel_futures=True)


class _EncodedPlugins:
    """JSON of plugin snapshots, encoded once per snapshot object.

    `PluginInfo` is frozen and the host hands out the same object until the plugin changes (a
    worker plugin's snapshot is new on every call, and encoded every time), so a listing re-encodes
    only what changed: encoding 50 plugins costs more than the rest of the request (docs/performance.md).
    """

    def __init__(self) -> None:
        self._cache: dict[int, tuple[PluginInfo, bytes]] = {}

    def encode(self, infos: Iterable[PluginInfo]) -> bytes:
        cache = self._cache
        fresh: dict[int, tuple[PluginInfo, bytes]] = {}
        parts = []
        for info in infos:
            hit = cache.get(id(info))
            data = hit[1] if hit is not None and hit[0] is info else _encode(info.as_dict())
            fresh[id(info)] = (info, data)
            parts.append(data)
        # Replaced whole (one assignment), so concurrent requests never see a half-built cache;
        # snapshots no longer listed drop out with it.
        self._cache = fresh
        return b"[" + b",".join(parts) + b"]"


def _encode(content: object) -> bytes:
    # What JSONResponse renders, byte for byte.
    return json.dumps(content, ensure_ascii=False, allow_nan=False, indent=None, separators=(",", ":")).encode()


def _json(status: int, body: object) -> JSONResponse:
    return JSONResponse(status_code=status, content=body)


# Declares the bearer scheme in the OpenAPI (clients and schemathesis see that every route needs it);
# the authorizer, not this, decides. auto_error=False: a missing header is the authorizer's 401.
_BEARER_SCHEME = HTTPBearer(auto_error=False, description="an API token: aperio token create NAME --permission …")


def _requirement(context: ApiContext, permission: Permission) -> Callable[..., Principal]:
    """The route dependency: `authorized` with the bearer scheme declared, so the OpenAPI shows it."""
    check = authorized(context, permission)

    def dependency(request: Request, _: Annotated[object, Depends(_BEARER_SCHEME)]) -> Principal:
        return check(request)

    return dependency


def authorized(context: ApiContext, permission: Permission) -> Callable[[Request], Principal]:
    """Return a check that answers the request's principal, or raises 401 / 403 (audited), in that order."""

    def check(request: Request) -> Principal:
        principal = context.authorize(request)
        route = f"{request.method} {request.url.path}"
        if principal is None:
            reason, name = getattr(request.state, AUTH_REFUSAL, ("no valid token", None))
            context.audit(
                "api.auth.refused",
                Principal(name, frozenset()) if name else None,
                route=route,
                outcome="401",
                reason=reason,
            )
            raise HTTPException(401, detail="a valid bearer token is required", headers={"WWW-Authenticate": "Bearer"})
        if not principal.allows(permission):
            context.audit("api.auth.refused", principal, route=route, outcome="403", permission=permission.value)
            raise HTTPException(403, detail=f"token {principal.name!r} does not have the permission {permission.value}")
        return principal

    return check


def _first_line(exc: AperioError) -> str:
    return exc.message.splitlines()[0] if exc.message else type(exc).__name__


def router(
    host: PluginHost,
    *,
    authorize: Authorizer,
    trail: AuditTrail | None = None,
    metrics: ApiMetrics | None = None,
    run_timeout: float = 30.0,
    install: Installer | None = None,
) -> APIRouter:
    """Return the operator API as an `APIRouter` with prefix `/api/v1`, for a host app to mount.

    `authorize` says who calls (see `_principal`); `trail` keeps the API's audit events (and
    `GET /events` reads it); `install(spec, pre)` installs into the plugins directory (default: a
    `RegistryClient` from the host's settings). The host stays the caller's to close.
    """
    context = ApiContext(host, authorize, trail, metrics or ApiMetrics(host), run_timeout, install=install)
    return build_router(context)


def build_router(context: ApiContext) -> APIRouter:
    host = context.host
    api = APIRouter(prefix="/api/v1")
    read = Annotated[Principal, Depends(_requirement(context, Permission.READ))]
    admin = Annotated[Principal, Depends(_requirement(context, Permission.ADMIN))]
    execute = Annotated[Principal, Depends(_requirement(context, Permission.EXECUTE))]

    def known(plugin_id: str, principal: Principal, action: str) -> PluginInfo:
        try:
            return host.get(plugin_id)
        except UnknownPluginError:
            context.audit(f"api.plugin.{action}", principal, plugin_id=plugin_id, outcome="404", reason="unknown id")
            raise HTTPException(404, detail=f"no plugin with id {plugin_id!r}") from None

    def change(action: str, plugin_id: str, principal: Principal, apply: Callable[[], PluginInfo]) -> Any:
        before = known(plugin_id, principal, action)
        try:
            with acting_as(principal.name):
                info = apply()
        except (LifecycleError, PluginLoadError) as exc:
            reason = _first_line(exc)
            context.audit(f"api.plugin.{action}", principal, plugin_id=plugin_id, outcome="409", reason=reason)
            current = _current(host, plugin_id)
            body = ChangeResult(action=action, applied=False, in_place=False, note=reason, plugin=current)
            return _json(409, body.model_dump(mode="json"))
        except StateStoreError as exc:
            return _store_away(context, f"api.plugin.{action}", principal, f"{action} {plugin_id!r}", exc, plugin_id)
        in_place = before.state in (PluginState.ENABLED, PluginState.DISABLED) and action == "reload"
        note = None
        if action == "reload" and not in_place:
            note = f"it was {before.state.value}: brought up from disk, not replaced in place"
        elif action == "reload" and before.version != info.version:
            note = f"version {before.version} replaced by {info.version}"
        context.audit(f"api.plugin.{action}", principal, plugin_id=plugin_id, outcome="ok", state=info.state.value)
        return ChangeResult(
            action=action,
            applied=True,
            in_place=in_place or action != "reload",
            note=note,
            plugin=PluginModel(**info.as_dict()),
        )

    encoded = _EncodedPlugins()

    @api.get("/plugins", response_model=list[PluginModel], responses=_ERRORS)
    def list_plugins(principal: read, kind: PluginKind | None = None) -> Response:
        """Every plugin the host knows, with its state and signature status (`?kind=` filters)."""
        infos = [info for info in host.plugins() if kind is None or kind in info.kinds]
        # Bypasses response_model validation: tests check every row against PluginModel (schemathesis too).
        return Response(encoded.encode(infos), media_type="application/json")

    @api.get("/plugins/{plugin_id}", response_model=PluginModel, responses={**_ERRORS, **_NOT_FOUND})
    def get_plugin(plugin_id: PluginId, principal: read) -> Response:
        """One plugin: signature status and signer, error, isolation, breaker, worker."""
        return _json(200, known(plugin_id, principal, "get").as_dict())

    @api.post("/plugins/discover", response_model=DiscoverResult, responses=_ERRORS)
    def discover(principal: admin) -> DiscoverResult:
        """Look for newly installed plugins and bring them up; plugins already loaded stay as they are."""
        with acting_as(principal.name):
            host.load()
            report = host.verify_pending()  # new pending plugins show their signature status, not imported
        context.audit("api.plugins.discover", principal, outcome="ok", plugins=len(report.plugins))
        return DiscoverResult(
            plugins=[PluginModel(**info.as_dict()) for info in report.plugins],
            broken_distributions=list(host.broken_distributions),
        )

    @api.post(
        "/plugins/install",
        response_model=InstallResponse,
        responses={**_ERRORS, 409: {"model": ErrorBody, "description": "the install was refused; nothing changed"}},
    )
    def install(request: InstallRequest, principal: admin) -> Any:
        """Install `ID[@VERSION]` from the server's index or `oci://…`, with the CLI's checks; then load it."""
        try:
            with context._install_lock, acting_as(principal.name):
                installed, plugins = install_into(host, request.spec, request.pre, context.install)
        except StateStoreError as exc:
            return _store_away(context, "api.plugins.install", principal, f"install {request.spec!r}", exc, None)
        except (RegistryError, LifecycleError, PluginLoadError) as exc:
            reason = _first_line(exc)
            context.audit("api.plugins.install", principal, outcome="409", spec=request.spec, reason=reason)
            return _json(409, {"detail": f"install of {request.spec!r} refused: {reason}"})
        context.audit(
            "api.plugins.install", principal, outcome="ok", spec=request.spec, plugins=[p.id for p in plugins]
        )
        return InstallResponse(installed=installed, plugins=[PluginModel(**p.as_dict()) for p in plugins])

    @api.post("/plugins/{plugin_id}/enable", response_model=ChangeResult, responses=_CHANGE)
    def enable(plugin_id: PluginId, principal: admin) -> Any:
        """Enable the plugin (persisted); it is imported first if it never was."""
        return change("enable", plugin_id, principal, lambda: host.enable(plugin_id))

    @api.post("/plugins/{plugin_id}/disable", response_model=ChangeResult, responses=_CHANGE)
    def disable(plugin_id: PluginId, principal: admin) -> Any:
        """Disable the plugin (persisted); calls in flight finish, new ones are refused."""
        return change("disable", plugin_id, principal, lambda: host.disable(plugin_id))

    @api.post("/plugins/{plugin_id}/reload", response_model=ChangeResult, responses=_CHANGE)
    def reload(plugin_id: PluginId, principal: admin) -> Any:
        """Re-read, re-verify and re-import the plugin in place; if that fails the loaded version keeps running."""
        return change("reload", plugin_id, principal, lambda: host.reload(plugin_id))

    @api.delete("/plugins/{plugin_id}", response_model=ChangeResult, responses=_CHANGE)
    def unload(plugin_id: PluginId, principal: admin) -> Any:
        """Remove the plugin from memory; its files stay and the next discovery brings it back."""
        return change("unload", plugin_id, principal, lambda: host.unload(plugin_id))

    @api.post(
        "/plugins/{plugin_id}/run",
        response_model=RunResult,
        responses={
            **_ERRORS,
            **_NOT_FOUND,
            409: {"model": ErrorBody, "description": "the plugin is not enabled"},
            502: {"model": ErrorBody, "description": "the plugin failed"},
            503: {"model": ErrorBody, "description": "the plugin's circuit breaker is open"},
            504: {"model": ErrorBody, "description": "the plugin did not answer within the deadline"},
        },
    )
    async def run(
        plugin_id: PluginId,
        payload: Annotated[RunPayload, Body()],
        principal: execute,
        timeout: Annotated[float | None, Query(gt=0, le=300, description="deadline in seconds")] = None,
    ) -> Any:
        """Run the plugin once with a `SyncRequest`, `RemediationRequest` or `DeliveryBatch` (by `kind`)."""
        return await _run(context, plugin_id, payload, principal, timeout)

    @api.get("/events", response_model=EventPage, responses=_ERRORS)
    def events(
        principal: read,
        plugin_id: Annotated[str | None, Query(max_length=200)] = None,
        event: Annotated[str | None, Query(max_length=200)] = None,
        actor: Annotated[str | None, Query(max_length=100)] = None,
        before: Annotated[int | None, Query(ge=1, le=2**62, description="only events older than this id")] = None,
        limit: Annotated[int, Query(ge=1, le=500)] = 50,
    ) -> EventPage:
        """The audit trail, newest first, filtered by plugin, event and actor; page with `before`."""
        if context.trail is None:
            return EventPage(events=[], next_before=None)
        rows = context.trail.audit_events(plugin_id=plugin_id, event=event, actor=actor, before=before, limit=limit + 1)
        page = rows[:limit]
        return EventPage(
            events=[EventModel(**msgspec.structs.asdict(row)) for row in page],
            next_before=page[-1].id if len(rows) > limit else None,
        )

    return api


def _store_away(
    context: ApiContext, event: str, principal: Principal, what: str, exc: StateStoreError, plugin_id: str | None
) -> JSONResponse:
    """The answer to a change that needs the shared state while it is out of reach: 503, nothing changed.

    The host's own state is unchanged too (the store is written before memory), so it keeps
    serving with the last decisions it knew; the refusal is audited (held until the store is back).
    """
    reason = _first_line(exc)
    context.audit(event, principal, plugin_id=plugin_id, outcome="503", reason=reason)
    detail = (
        f"cannot {what} now: the shared state store is out of reach, and this host serves with its last"
        f" known state until it is back; nothing was changed ({reason})"
    )
    return JSONResponse(status_code=503, content={"detail": detail}, headers={"Retry-After": "5"})


def _current(host: PluginHost, plugin_id: str) -> PluginModel | None:
    try:
        return PluginModel(**host.get(plugin_id).as_dict())
    except UnknownPluginError:
        return None


_RUN_ERRORS: tuple[tuple[type[AperioError], int], ...] = (
    (UnknownPluginError, 404),
    (LifecycleError, 409),
    (CircuitOpenError, 503),
    (WorkerTimeoutError, 504),
    (WorkerCrashedError, 502),
    (PluginCallError, 502),
    (HookError, 422),  # the payload names nothing the plugin provides
)


async def _run(
    context: ApiContext, plugin_id: str, payload: BaseModel, principal: Principal, timeout: float | None
) -> Any:
    deadline = timeout or context.run_timeout

    def call() -> dict[str, Any]:
        with acting_as(principal.name):
            # As a mapping: the host validates it into the hookspecs' own envelope, not the API's subclass.
            return context.host.run(plugin_id, payload.model_dump(), timeout=deadline).model_dump(mode="json")

    started = time.perf_counter()
    future = asyncio.get_running_loop().run_in_executor(context.pool, contextvars.copy_context().run, call)
    try:
        # A worker enforces the deadline itself (WorkerTimeoutError); the grace lets its answer
        # arrive. An in-process plugin that hangs keeps its thread, but this request answers.
        result = await asyncio.wait_for(future, deadline + 1.0)
    except asyncio.TimeoutError:
        return _run_refused(
            context, plugin_id, principal, started, 504, f"plugin {plugin_id!r} did not answer within {deadline:g} s"
        )
    except AperioError as exc:
        status = next((code for kind, code in _RUN_ERRORS if isinstance(exc, kind)), 500)
        if status == 422:
            context.audit("api.plugin.run", principal, plugin_id=plugin_id, outcome="422", reason=_first_line(exc))
            return _json(422, {"detail": [{"loc": ["body"], "msg": _first_line(exc), "type": "value_error"}]})
        return _run_refused(context, plugin_id, principal, started, status, _first_line(exc))
    elapsed = time.perf_counter() - started
    context.metrics.observe_run(plugin_id, elapsed, "ok")
    context.audit("api.plugin.run", principal, plugin_id=plugin_id, outcome="ok", duration_ms=round(elapsed * 1000, 3))
    return RunResult(plugin_id=plugin_id, duration_ms=elapsed * 1000, result=result)


def _run_refused(
    context: ApiContext, plugin_id: str, principal: Principal, started: float, status: int, reason: str
) -> JSONResponse:
    if status in (502, 503, 504):
        context.metrics.observe_run(
            plugin_id, time.perf_counter() - started, "failed" if status == 502 else str(status)
        )
    context.audit("api.plugin.run", principal, plugin_id=plugin_id, outcome=str(status), reason=reason)
    headers = {"Retry-After": "5"} if status == 503 else None
    return JSONResponse(status_code=status, content={"detail": reason}, headers=headers)
