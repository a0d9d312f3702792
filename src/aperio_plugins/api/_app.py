"""`create_app`: the FastAPI application `aperio serve` runs, and the bearer-token authorizer.

Layout: `/api/v1/…` (the router), `/healthz` and `/readyz` (no token: probes learn only a status),
`/metrics` (Prometheus, `plugins:read`), and `/`, which redirects to `/docs` until a console
router is passed in `extra_routers` (mounted after the API, so it may claim `/`).
"""

# No `from __future__ import annotations`: FastAPI reads the routes' annotations, which name local aliases.

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.responses import JSONResponse, RedirectResponse, Response

from .. import __version__
from .._dispatch import Dispatcher
from .._host import PluginHost
from .._model import PluginState
from .._records import ApiRecords, TokenStore
from ..errors import AperioError
from ._installing import Installer
from ._metrics import CONTENT_TYPE, ApiMetrics
from ._models import ErrorBody, HealthBody, ReadyBody
from ._outbox import build_outbox_router, register_outbox_metrics
from ._principal import Authorizer, Permission, Principal
from ._routes import AUTH_REFUSAL, ApiContext, _requirement, build_router
from ._tokens import Tokens

_BEARER = "bearer "


def bearer_authorizer(tokens: TokenStore | Tokens) -> Authorizer:
    """Return an authorizer that reads `Authorization: Bearer TOKEN` and checks it against `tokens`.

    Revocation and expiry are read on every request. Why a token was refused (and its name, for
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
    dispatcher: Dispatcher | None = None,
) -> FastAPI:
    """Return the operator application for `host`, with tokens and the audit trail in `store`.

    `store` must implement `TokenStore` and `AuditTrail` (`SQLiteStateStore` does). `authorize`
    defaults to bearer tokens from `store`. The host and the store stay the caller's to close.
    A `dispatcher` delivers the outbox in a background thread for the app's lifetime.
    """
    metrics = ApiMetrics(host)
    context = ApiContext(host, authorize or bearer_authorizer(store), store, metrics, run_timeout, install=install)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        if dispatcher is not None:
            dispatcher.start()
        yield
        if dispatcher is not None:
            dispatcher.stop()
        context.close()

    app = FastAPI(
        title="aperio operator API",
        version=__version__,
        lifespan=lifespan,
        description="Manage the plugins of an aperio host. Send `Authorization: Bearer TOKEN` (`aperio token create`).",
    )
    app.include_router(build_router(context))
    app.include_router(build_outbox_router(context, store))
    register_outbox_metrics(metrics, store, dispatcher)
    reader = Annotated[Principal, Depends(_requirement(context, Permission.READ))]

    @app.exception_handler(AperioError)
    async def aperio_error(request: Request, exc: AperioError) -> JSONResponse:
        # A typed error the routes did not map (a state store failure, say): one line, no traceback.
        return JSONResponse(status_code=503, content={"detail": exc.message.splitlines()[0]})

    @app.get("/healthz", response_model=HealthBody, tags=["health"])
    def healthz() -> HealthBody:
        """The process answers."""
        return HealthBody(status="ok")

    @app.get("/readyz", response_model=ReadyBody, responses={503: {"model": ReadyBody}}, tags=["health"])
    def readyz() -> Any:
        """Plugins are loaded and the state store answers."""
        infos = host.plugins()
        failed = sum(1 for info in infos if info.state is PluginState.FAILED)
        try:
            store.audit_events(limit=1)
        except AperioError:
            return JSONResponse(
                status_code=503, content={"status": "state store unavailable", "plugins": len(infos), "failed": failed}
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

    for extra in extra_routers:
        app.include_router(extra)
    if not any(getattr(route, "path", None) == "/" for extra in extra_routers for route in extra.routes):

        @app.get("/", include_in_schema=False)
        def root() -> RedirectResponse:
            return RedirectResponse("/docs")

    return app
