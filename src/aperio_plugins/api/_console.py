"""The operator console at `/`: one server-rendered page over the operator API's own functions.

The page shows the plugin table and the recent audit events to a token with `plugins:read`; the
enable, disable and reload buttons are plain HTML forms, shown to `plugins:admin` only and refused
server-side to anyone else. A form's action runs the API's own route function for that change, so
it calls the same host method and audits the same event with the token's name as actor; refusals go
through the API's own permission check and are audited the same way.

Sign-in takes an API token (see `_sessions`: the cookie is an opaque session id, HttpOnly,
SameSite=Strict, Secure and `__Host-` prefixed over https). Every form carries the session's CSRF
token. Responses carry a Content-Security-Policy that allows no script at all and only the page's
own inline style (by nonce), and are never cached.
"""

# No `from __future__ import annotations`: FastAPI reads the routes' annotations, which name local aliases.

import dataclasses
import enum
import json
import secrets
from collections.abc import Callable, Mapping
from datetime import timezone
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import parse_qsl

import jinja2
from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from fastapi.routing import APIRoute

from .._model import PluginInfo, PluginState
from ._principal import Permission, Principal
from ._routes import AUTH_REFUSAL, ApiContext, PluginId, authorized
from ._sessions import Session, Sessions
from ._tokens import Tokens

_TEMPLATES = Path(__file__).with_name("templates")
_MAX_FORM_BYTES = 4_096  # the longest form (sign-in) is a token and a CSRF token
_FORM_TYPE = "application/x-www-form-urlencoded"
_EVENTS_SHOWN = 25


class Action(str, enum.Enum):
    # The API route functions of the same names do the work (see `_change_endpoints`).
    ENABLE = "enable"
    DISABLE = "disable"
    RELOAD = "reload"


def _cookie_name(request: Request) -> str:
    # Over https the `__Host-` prefix makes the browser refuse the cookie unless it is Secure, host-only, Path=/.
    return "__Host-aperio_console" if request.url.scheme == "https" else "aperio_console"


def _session_id(request: Request) -> str | None:
    return request.cookies.get(_cookie_name(request))


def _set_cookie(response: Response, request: Request, session_id: str) -> None:
    response.set_cookie(
        _cookie_name(request),
        session_id,
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
        path="/",
    )


async def _form(request: Request) -> dict[str, str]:
    """The url-encoded form body, bounded in size (no body: an empty form); 413, 415 or 400 for anything else."""
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > _MAX_FORM_BYTES:
            raise HTTPException(413, detail=f"a console form is at most {_MAX_FORM_BYTES} bytes")
    if not body:
        return {}  # refused further on for its missing CSRF token, like any form without one
    if request.headers.get("content-type", "").split(";")[0].strip().lower() != _FORM_TYPE:
        raise HTTPException(415, detail=f"the console's forms are sent as {_FORM_TYPE}")
    try:
        return dict(parse_qsl(body.decode("utf-8"), keep_blank_values=True, max_num_fields=8))
    except (UnicodeDecodeError, ValueError):
        raise HTTPException(400, detail="the form is not valid url-encoded UTF-8") from None


Form = Annotated[dict[str, str], Depends(_form)]


def _change_endpoints(api: APIRouter) -> dict[Action, Callable[..., Any]]:
    """The API's enable, disable and reload route functions, found by name in its router."""
    by_name = {route.name: route.endpoint for route in api.routes if isinstance(route, APIRoute)}
    missing = [action.value for action in Action if action.value not in by_name]
    if missing:
        # A programming error between two modules of this package, caught by the console's tests.
        raise LookupError(f"the API router has no route function named {', '.join(missing)}")
    return {action: by_name[action.value] for action in Action}


class _Pages:
    """Renders the console's templates, each response with its own CSP nonce and no caching."""

    def __init__(self) -> None:
        self.environment = jinja2.Environment(
            loader=jinja2.FileSystemLoader(_TEMPLATES),
            autoescape=True,
            undefined=jinja2.StrictUndefined,
        )

    def render(self, template: str, status: int = 200, **values: Any) -> HTMLResponse:
        nonce = secrets.token_urlsafe(16)
        html = self.environment.get_template(template).render(nonce=nonce, **values)
        response = HTMLResponse(html, status_code=status)
        response.headers.update(
            {
                "Content-Security-Policy": (
                    f"default-src 'none'; style-src 'nonce-{nonce}'; form-action 'self'; "
                    "frame-ancestors 'none'; base-uri 'none'"
                ),
                "Cache-Control": "no-store",
                "Referrer-Policy": "no-referrer",
                "X-Content-Type-Options": "nosniff",
                "X-Frame-Options": "DENY",
            }
        )
        return response


def _row(info: PluginInfo) -> dict[str, Any]:
    return {
        "id": info.id,
        "version": info.version or "",
        "kinds": ", ".join(kind.value for kind in info.kinds),
        "state": info.state.value,
        "signature": info.signature_status.value if info.signature_status else "",
        "signer": info.signer or "",
        "isolation": info.isolation.value if info.isolation else "",
        "breaker": info.breaker_state,
        "failures": info.call_failures,
        "error": info.last_call_error or info.error or "",
        "can_enable": info.state in (PluginState.DISABLED, PluginState.UNLOADED),
        "can_disable": info.state in (PluginState.ENABLED, PluginState.LOADED),
    }


def _event_row(fields: Mapping[str, Any]) -> str:
    outcome = fields.get("outcome") or fields.get("state") or ""
    reason = fields.get("reason")
    return f"{outcome}: {reason}" if outcome and reason else str(outcome or reason or "")


def _notice(action: Action, plugin_id: str, result: Any) -> str:
    """One line for the page after a change: the API's answer, as an operator reads it."""
    if isinstance(result, JSONResponse):
        body = json.loads(bytes(result.body))
        return f"{action.value} of {plugin_id} not applied: {body.get('note') or body.get('detail')}"
    state = result.plugin.state.value if result.plugin is not None else "gone"
    note = f" ({result.note})" if result.note else ""
    return f"{action.value} of {plugin_id}: now {state}{note}"


def console_router(context: ApiContext, api: APIRouter, tokens: Tokens) -> APIRouter:
    """Return the console's routes (`/` and `/console/…`) over `context`, changing plugins through `api`'s routes."""
    sessions = Sessions()
    pages = _Pages()
    endpoints = _change_endpoints(api)

    def authorize(request: Request) -> Principal | None:
        session = sessions.get(_session_id(request))
        if session is None or session.token is None:
            setattr(request.state, AUTH_REFUSAL, ("not signed in to the console", None))
            return None
        outcome = tokens.authenticate(session.token)
        if outcome.principal is None:
            # Revoked or expired since sign-in: the session ends with it.
            sessions.end(_session_id(request))
            setattr(request.state, AUTH_REFUSAL, (f"console session: {outcome.refusal}", outcome.name))
        return outcome.principal

    # The API's permission check (401 before 403, refusals audited), with the session as the credential.
    console_context = dataclasses.replace(context, authorize=authorize)
    need_read = authorized(console_context, Permission.READ)
    need_admin = authorized(console_context, Permission.ADMIN)
    router = APIRouter(include_in_schema=False)

    def sign_in_page(request: Request, *, error: str | None = None, status: int = 200) -> HTMLResponse:
        session = sessions.get(_session_id(request))
        fresh = None
        if session is None or session.token is not None:
            fresh, session = sessions.start()
        response = pages.render("sign_in.html", status, csrf=session.csrf, error=error)
        if fresh is not None:
            _set_cookie(response, request, fresh)
        return response

    def message(status: int, title: str, text: str, session: Session | None = None) -> HTMLResponse:
        csrf = session.csrf if session is not None and session.token is not None else None
        return pages.render("message.html", status, title=title, text=text, csrf=csrf)

    def csrf_refused(request: Request, session: Session | None, principal: Principal | None) -> HTMLResponse:
        route = f"{request.method} {request.url.path}"
        if principal is None and session is not None and session.name is not None:
            principal = Principal(session.name, frozenset())  # a signed-in session's name, for the trail
        context.audit("console.csrf.refused", principal, route=route, outcome="403")
        return message(
            403,
            "Form refused",
            "This form did not come from this console session. Reload the console and try again.",
            session,
        )

    @router.get("/", response_class=HTMLResponse)
    def console(request: Request) -> HTMLResponse:
        session = sessions.get(_session_id(request))
        if session is None or session.token is None:
            return sign_in_page(request)
        try:
            principal = need_read(request)
        except HTTPException as refused:
            if refused.status_code == 401:
                return sign_in_page(request, error="Your session's token is no longer valid; sign in again.")
            return message(403, "Not allowed", str(refused.detail), session)
        notice, session.notice = session.notice, None
        events = context.trail.audit_events(limit=_EVENTS_SHOWN) if context.trail is not None else []
        return pages.render(
            "console.html",
            principal=principal.name,
            permissions=sorted(permission.value for permission in principal.permissions),
            admin=principal.allows(Permission.ADMIN),
            csrf=session.csrf,
            notice=notice,
            plugins=[_row(info) for info in context.host.plugins()],
            events=[
                {
                    "time": event.occurred_at.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M:%S"),
                    "event": event.event,
                    "plugin": event.plugin_id or "",
                    "actor": event.actor or "",
                    "outcome": _event_row(event.fields),
                }
                for event in events
            ],
        )

    @router.post("/console/sign-in", response_class=HTMLResponse)
    def sign_in(request: Request, form: Form) -> Response:
        session = sessions.get(_session_id(request))
        if session is None or not session.csrf_matches(form.get("csrf")):
            return csrf_refused(request, session, None)
        outcome = tokens.authenticate(form.get("token", "").strip())
        if outcome.principal is None:
            actor = Principal(outcome.name, frozenset()) if outcome.name else None
            context.audit("console.sign_in", actor, outcome="401", reason=outcome.refusal)
            return sign_in_page(request, error="That token was not accepted.", status=401)
        # A new session id at sign-in, so that an id planted before it is worth nothing after.
        sessions.end(_session_id(request))
        fresh, _ = sessions.start(token=form["token"].strip(), name=outcome.principal.name)
        context.audit("console.sign_in", outcome.principal, outcome="ok")
        response = RedirectResponse("/", status_code=303)
        _set_cookie(response, request, fresh)
        return response

    @router.post("/console/sign-out", response_class=HTMLResponse)
    def sign_out(request: Request, form: Form) -> Response:
        session = sessions.get(_session_id(request))
        if session is None or not session.csrf_matches(form.get("csrf")):
            return csrf_refused(request, session, None)
        sessions.end(_session_id(request))
        if session.name is not None:
            context.audit("console.sign_out", Principal(session.name, frozenset()), outcome="ok")
        response = RedirectResponse("/", status_code=303)
        response.delete_cookie(
            _cookie_name(request), path="/", httponly=True, samesite="strict", secure=request.url.scheme == "https"
        )
        return response

    @router.post("/console/plugins/{plugin_id}/{action}", response_class=HTMLResponse)
    def change(request: Request, plugin_id: PluginId, action: Action, form: Form) -> Response:
        session = sessions.get(_session_id(request))
        try:
            principal = need_admin(request)
        except HTTPException as refused:
            if refused.status_code == 401:
                return message(401, "Sign in first", "Sign in to the console, then try again.")
            return message(refused.status_code, "Not allowed", str(refused.detail), session)
        if session is None or not session.csrf_matches(form.get("csrf")):
            return csrf_refused(request, session, principal)
        try:
            session.notice = _notice(action, plugin_id, endpoints[action](plugin_id=plugin_id, principal=principal))
        except HTTPException as unknown:  # the API's 404, audited there
            session.notice = str(unknown.detail)
        return RedirectResponse("/", status_code=303)

    return router
