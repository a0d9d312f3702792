"""`create_app`: the FastAPI application `aperio serve` runs, and the bearer-token authorizer.

Layout: `/api/v1/…` (the router), `/healthz` and `/readyz` (no token: probes learn only a status),
`/metrics` (Prometheus, `plugins:read`), and `/`: the operator console (`_console`, sign-in with a
token from `store`), or with `console=False` a redirect to `/docs` unless `extra_routers` claims `/`.
"""

# No `from __future__ import annotations`: FastAPI reads the routes' annotations, which name local aliases.

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.responses import JSONResponse, RedirectResponse, Response

from .. import __version__
from .._dispatch import Dispatcher
from .._fleet import FleetAgent, fleet_view
from .._host import PluginHost
from .._model import PluginState
from .._records import ApiRecords, TokenStore
from ..errors import AperioError, StateStoreError
from ._installing import Installer, registry_installer
from ._metrics import CONTENT_TYPE, ApiMetrics
from ._models import ErrorBody, FleetBody, HealthBody, ReadyBody
from ._outbox import build_outbox_router, register_outbox_metrics
from ._principal import Authorizer, Permission, Principal
from ._routes import AUTH_REFUSAL, ApiContext, _requirement, build_router
from ._tokens import Tokens
from ._trail import recording_audit_logger

_BEARER = "bearer "


def bearer_authorizer(tokens: TokenStore | Tokens) -> Authorizer:
    """Return an authorizer that reads `Authorization: Bearer TOKEN` and checks it against `tokens`.

    Revocation and expiry are read on every request (from the token's last-known record while the
    store is out of reach: see `Tokens.authenticate`). Why a token was refused (and its name, for
    a revoked or expired one) is left on `request.state` for the audit trail; the token never is.
    """
    checker = tokens if isinstance(tokens, Tokens) else Tokens(tokens)

    def authorize(request: Request) -> Principal | None:
        header = request.headers.get("authorization", "")
        if not header.lower().startswith(_BEARER):
            setattr(request.state, AUTH_REFUSAL, ("no bearer token", None))
            return None
        outcome = checker.authenticate(header[len(_BEARER) :].strip())
        if outcome.principal is None:
            setattr(request.state, AUTH_REFUSAL, (outcome.refusal or "refused", outcome.name))
        return outcome.principal

    return authorize


def create_app(
    host: PluginHost,
    store: ApiRecords,
    *,
    authorize: Authorizer | None = None,
    extra_routers: Sequence[APIRouter] = (),
    run_timeout: float = 30.0,
    install: Installer | None = None,
    fleet: FleetAgent | None = None,
    dispatcher: Dispatcher | None = None,
    console: bool = True,
) -> FastAPI:
    """Return the operator application for `host`, with tokens and the audit trail in `store`.

    `store` must implement `TokenStore` and `AuditTrail` (`SQLiteStateStore` does). `authorize`
    defaults to bearer tokens from `store`. The host and the store stay the caller's to close.
    `fleet`, when given, runs for the application's lifespan (started on start-up, stopped at
    shutdown); its problem, if any, makes `/readyz` answer 503 with the reason. A `dispatcher`
    delivers the outbox in a background thread for the app's lifetime.
    """
    metrics = ApiMetrics(host)
    installer = install or registry_installer(host, recording_audit_logger(store))
    # One checker for the API and the console, so that both share the last-known tokens.
    tokens = Tokens(store)
    if fleet is not None:

        def refresh_tokens() -> None:
            # Revocations made anywhere reach the last-known records within a pass, while the store answers.
            if len(tokens.last_known):
                tokens.last_known.refresh(store.tokens())

        fleet.after_sync.append(refresh_tokens)
    context = ApiContext(host, authorize or bearer_authorizer(tokens), store, metrics, run_timeout, install=installer)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        if fleet is not None:
            fleet.start()
        if dispatcher is not None:
            dispatcher.start()
        try:
            yield
        finally:
            if dispatcher is not None:
                dispatcher.stop()
            if fleet is not None:
                fleet.stop()
            context.close()

    app = FastAPI(
        title="aperio operator API",
        version=__version__,
        lifespan=lifespan,
        description="Manage the plugins of an aperio host. Send `Authorization: Bearer TOKEN` (`aperio token create`).",
    )
    api_router = build_router(context)
    app.include_router(api_router)
    app.include_router(build_outbox_router(context, store))
    register_outbox_metrics(metrics, store, dispatcher)
    reader = Annotated[Principal, Depends(_requirement(context, Permission.READ))]

    @app.exception_handler(AperioError)
    async def aperio_error(request: Request, exc: AperioError) -> JSONResponse:
        # A typed error the routes did not map (a state store failure, say): one line, no traceback.
        headers = {"Retry-After": "5"} if isinstance(exc, StateStoreError) else None
        return JSONResponse(status_code=503, content={"detail": exc.message.splitlines()[0]}, headers=headers)

    @app.get("/healthz", response_model=HealthBody, tags=["health"])
    def healthz() -> HealthBody:
        """The process answers."""
        return HealthBody(status="ok")

    @app.get("/readyz", response_model=ReadyBody, responses={503: {"model": ReadyBody}}, tags=["health"])
    def readyz() -> Any:
        """Plugins are loaded and the state store answers (503 while this host serves with its last known state)."""
        infos = host.plugins()
        failed = sum(1 for info in infos if info.state is PluginState.FAILED)
        problem = fleet.problem if fleet is not None else None
        if problem is None:
            try:
                store.audit_events(limit=1)
            except AperioError as exc:
                problem = exc.message.splitlines()[0]
        if problem is not None:
            # The host still serves its plugins from the last state it knew; a balancer should
            # know that decisions made elsewhere do not reach it now.
            return JSONResponse(
                status_code=503,
                content={
                    "status": f"state store unavailable, serving with the last known state: {problem}",
                    "plugins": len(infos),
                    "failed": failed,
                },
            )
        return ReadyBody(status="ready", plugins=len(infos), failed=failed)

    @app.get(
        "/metrics",
        response_class=Response,
        responses={200: {"content": {CONTENT_TYPE: {}}}, 401: {"model": ErrorBody}, 403: {"model": ErrorBody}},
        tags=["health"],
    )
    def prometheus(principal: reader) -> Response:
        """Prometheus metrics per plugin: calls, failures, latency, breaker state, worker restarts."""
        return Response(metrics.render(), media_type=CONTENT_TYPE)

    @app.get(
        "/api/v1/fleet",
        response_model=FleetBody,
        responses={401: {"model": ErrorBody}, 403: {"model": ErrorBody}},
        tags=["fleet"],
    )
    def fleet_status(principal: reader) -> FleetBody:
        """The fleet's pinned lock and its live hosts: what each runs and what each could not install."""
        if fleet is None:
            return FleetBody(lock=None, hosts=[])
        return FleetBody(**fleet_view(fleet.store))

    if console:
        from ._console import console_router  # jinja2 is needed only when the console is served

        extra_routers = (*extra_routers, console_router(context, api_router, tokens))
    for extra in extra_routers:
        app.include_router(extra)
    if not any(getattr(route, "path", None) == "/" for extra in extra_routers for route in extra.routes):

        @app.get("/", include_in_schema=False)
        def root() -> RedirectResponse:
            return RedirectResponse("/docs")

    return app
