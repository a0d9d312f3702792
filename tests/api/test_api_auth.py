"""Authorization on every route against a real uvicorn: no token 401, a token without the permission 403
(never the reverse), revoked and expired tokens refused at once, every refusal audited, nothing changed."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from aperio_plugins import PluginState
from aperio_plugins.api import Permission, Tokens

SYNC = {"kind": "sync_request", "connector": "acme_probe", "config": {"mode": "ok"}}

# (method, path, body, permission, a token that lacks it)
ROUTES = [
    ("GET", "/api/v1/plugins", None, Permission.READ, "runner"),
    ("GET", "/api/v1/plugins/acme.probe", None, Permission.READ, "runner"),
    ("GET", "/api/v1/events", None, Permission.READ, "runner"),
    ("GET", "/metrics", None, Permission.READ, "runner"),
    ("POST", "/api/v1/plugins/discover", None, Permission.ADMIN, "reader"),
    ("POST", "/api/v1/plugins/install", {"spec": "acme.other"}, Permission.ADMIN, "reader"),
    ("POST", "/api/v1/plugins/acme.probe/enable", None, Permission.ADMIN, "reader"),
    ("POST", "/api/v1/plugins/acme.probe/disable", None, Permission.ADMIN, "runner"),
    ("POST", "/api/v1/plugins/acme.probe/reload", None, Permission.ADMIN, "reader"),
    ("DELETE", "/api/v1/plugins/acme.probe", None, Permission.ADMIN, "runner"),
    ("POST", "/api/v1/plugins/acme.probe/run", SYNC, Permission.EXECUTE, "operator"),
]


@pytest.fixture
def api(served, install, probe_wheel):
    install(probe_wheel())
    return served()


def _unchanged(api, marker):
    info = api.host.get("acme.probe")
    assert (info.state, info.version) == (PluginState.ENABLED, "1.0.0")
    assert not marker.exists()  # no run reached the plugin


@pytest.mark.parametrize(("method", "path", "body", "permission", "lacking"), ROUTES)
def test_no_token_is_401_and_a_token_without_the_permission_is_403(
    api, marker, method, path, body, permission, lacking
):
    anonymous = api.client(None).request(method, path, json=body)
    assert anonymous.status_code == 401
    assert anonymous.headers["www-authenticate"] == "Bearer"
    assert anonymous.json() == {"detail": "a valid bearer token is required"}
    garbage = api.client(token="aperio_not-a-token").request(method, path, json=body)
    assert garbage.status_code == 401
    forbidden = api.client(lacking).request(method, path, json=body)
    assert forbidden.status_code == 403
    assert forbidden.json() == {"detail": f"token {lacking!r} does not have the permission {permission.value}"}
    _unchanged(api, marker)
    refusals = api.store.audit_events(event="api.auth.refused")
    assert [(r.actor, r.fields["outcome"]) for r in refusals[:3]] == [(lacking, "403"), (None, "401"), (None, "401")]
    assert refusals[0].fields["route"] == f"{method} {path}"
    allowed = api.client("admin").request(method, path, json=body)
    assert allowed.status_code not in (401, 403), allowed.text


def test_401_comes_before_body_validation(api):
    """A caller without a token learns nothing about what a body should look like."""
    response = api.client(None).post("/api/v1/plugins/acme.probe/run", json={"kind": "nonsense"})
    assert response.status_code == 401
    response = api.client("operator").post("/api/v1/plugins/acme.probe/run", json={"kind": "nonsense"})
    assert response.status_code == 403


def test_a_revoked_token_is_refused_at_once_and_audited_by_name(api, marker):
    client = api.client("admin")
    assert client.get("/api/v1/plugins").status_code == 200
    api.tokens.revoke("admin")
    response = client.post("/api/v1/plugins/acme.probe/disable")
    assert response.status_code == 401
    assert api.host.get("acme.probe").state is PluginState.ENABLED
    refusal = api.store.audit_events(event="api.auth.refused", limit=1)[0]
    assert (refusal.actor, refusal.fields["reason"]) == ("admin", "revoked token")


def test_an_expired_token_is_refused_and_a_live_one_accepted(api):
    past = Tokens(api.store, clock=lambda: datetime.now(timezone.utc) - timedelta(days=2))
    expired = past.create("old", [Permission.READ], expires_in=timedelta(days=1)).token
    live = api.tokens.create("fresh", [Permission.READ], expires_in=timedelta(days=1)).token
    assert api.client(token=expired).get("/api/v1/plugins").status_code == 401
    assert api.client(token=live).get("/api/v1/plugins").status_code == 200
    refusal = api.store.audit_events(event="api.auth.refused", limit=1)[0]
    assert (refusal.actor, refusal.fields["reason"]) == ("old", "expired token")


def test_the_token_is_never_stored_logged_or_echoed(api, tmp_path, caplog):
    token = api.token["admin"]
    with caplog.at_level("DEBUG"):
        api.client("admin").post("/api/v1/plugins/acme.probe/disable")
        api.client(token=token + "x").get("/api/v1/plugins")
        response = api.client(token=token[:-1]).post("/api/v1/plugins/nope/enable")
    assert token[:-1] not in response.text
    assert token[len("aperio_") :] not in caplog.text
    # The journal or WAL files beside the store may hold recent writes too.
    database = b"".join(path.read_bytes() for path in (tmp_path / "state").glob("state.sqlite3*"))
    assert token.encode() not in database
    assert token[len("aperio_") :].encode() not in database
    events = api.store.audit_events(limit=500)
    assert all(token[len("aperio_") :] not in str(event.fields) for event in events)


def test_health_probes_need_no_token_and_say_nothing_more(api):
    client = api.client(None)
    assert client.get("/healthz").json() == {"status": "ok"}
    assert client.get("/readyz").json() == {"status": "ready", "plugins": 1, "failed": 0}
    root = client.get("/", follow_redirects=False)  # the console: its sign-in form, and no plugin
    assert (root.status_code, 'action="/console/sign-in"' in root.text, "acme.probe" in root.text) == (200, True, False)
