"""Every `/api/v1` route against a real uvicorn: answers, states, bad input, the audit trail and metrics."""

from __future__ import annotations

import concurrent.futures
import time

import pytest

from aperio_plugins import PluginState
from aperio_plugins.api._models import PluginModel


def sync(mode: str = "ok", connector: str = "acme_probe", **config) -> dict:
    return {"kind": "sync_request", "connector": connector, "config": {"mode": mode, **config}}


@pytest.fixture
def api(served, install, probe_wheel):
    install(probe_wheel(), probe_wheel("acme.second"))
    return served()


def test_list_and_get_give_state_signature_isolation_and_breaker(api):
    client = api.client("reader")
    plugins = client.get("/api/v1/plugins").json()
    assert [(p["id"], p["state"], p["signature_status"]) for p in plugins] == [
        ("acme.probe", "enabled", "unsigned"),
        ("acme.second", "enabled", "unsigned"),
    ]
    one = client.get("/api/v1/plugins/acme.probe").json()
    assert one == plugins[0]
    assert (one["isolation"], one["breaker_state"], one["worker_pid"], one["error"]) == (
        "inprocess",
        "closed",
        None,
        None,
    )
    assert client.get("/api/v1/plugins", params={"kind": "connector"}).json() == plugins
    assert client.get("/api/v1/plugins", params={"kind": "destination"}).json() == []
    assert [PluginModel.model_validate(row).model_dump(mode="json") for row in plugins] == plugins
    assert plugins == [info.as_dict() for info in api.host.plugins()]


def test_the_listing_follows_every_change(api):
    """The listing's JSON is cached per snapshot: a change must show at once, in every field."""
    client = api.client("admin")
    before = client.get("/api/v1/plugins").json()
    client.post("/api/v1/plugins/acme.second/disable")
    after = client.get("/api/v1/plugins").json()
    assert after[0] == before[0]
    assert (after[1]["state"], after[1]["enabled_flag"]) == ("disabled", False)
    client.post("/api/v1/plugins/acme.probe/run", json=sync("raise"))
    again = client.get("/api/v1/plugins").json()
    assert again[0]["call_failures"] == 1
    assert "provider unreachable" in again[0]["last_call_error"]
    assert again == [info.as_dict() for info in api.host.plugins()]


def test_unknown_id_is_404_naming_it_and_bad_query_422_naming_the_field(api):
    client = api.client("admin")
    for method, path in [
        ("GET", "/api/v1/plugins/acme.nope"),
        ("POST", "/api/v1/plugins/acme.nope/enable"),
        ("POST", "/api/v1/plugins/acme.nope/reload"),
        ("DELETE", "/api/v1/plugins/acme.nope"),
    ]:
        response = client.request(method, path)
        assert (response.status_code, response.json()) == (404, {"detail": "no plugin with id 'acme.nope'"})
    run = client.post("/api/v1/plugins/acme.nope/run", json=sync())
    assert run.status_code == 404
    assert "'acme.nope'" in run.json()["detail"]
    bad = client.get("/api/v1/plugins", params={"kind": "toaster"})
    assert bad.status_code == 422
    assert bad.json()["detail"][0]["loc"] == ["query", "kind"]


def test_disable_enable_unload_answer_with_the_new_state_and_are_audited(api, plugins_dir):
    client = api.client("operator")
    files_before = sorted(path.name for path in plugins_dir.iterdir())
    disabled = client.post("/api/v1/plugins/acme.probe/disable").json()
    assert (disabled["applied"], disabled["plugin"]["state"], disabled["plugin"]["enabled_flag"]) == (
        True,
        "disabled",
        False,
    )
    assert api.host.get("acme.probe").state is PluginState.DISABLED
    enabled = client.post("/api/v1/plugins/acme.probe/enable").json()
    assert (enabled["applied"], enabled["plugin"]["state"]) == (True, "enabled")
    unloaded = client.delete("/api/v1/plugins/acme.probe").json()
    assert (unloaded["applied"], unloaded["plugin"]["state"]) == (True, "unloaded")
    assert sorted(path.name for path in plugins_dir.iterdir()) == files_before  # files untouched
    again = client.delete("/api/v1/plugins/acme.probe")
    assert again.status_code == 409
    assert again.json()["applied"] is False
    assert "not loaded" in again.json()["note"]
    assert again.json()["plugin"]["state"] == "unloaded"
    back = client.post("/api/v1/plugins/discover").json()
    assert {p["id"]: p["state"] for p in back["plugins"]} == {"acme.probe": "enabled", "acme.second": "enabled"}
    trail = [
        (e.event, e.actor, e.fields.get("outcome")) for e in reversed(api.store.audit_events(plugin_id="acme.probe"))
    ]
    load = ["plugin.discovered", "plugin.signature.unsigned", "plugin.trust.warning", "plugin.loaded", "plugin.enabled"]
    assert trail == [
        *((name, None, None) for name in load),  # the host's own start: nobody's action
        ("plugin.disabled", "operator", None),
        ("api.plugin.disable", "operator", "ok"),
        ("plugin.enabled", "operator", None),
        ("api.plugin.enable", "operator", "ok"),
        ("plugin.unloaded", "operator", None),
        ("api.plugin.unload", "operator", "ok"),
        ("api.plugin.unload", "operator", "409"),
        *((name, "operator", None) for name in load),  # discover, on the operator's request
    ]


def test_reload_replaces_in_place_or_says_why_not(api, install, probe_wheel, marker):
    client = api.client("admin")
    install(probe_wheel(version="2.0.0"))
    reloaded = client.post("/api/v1/plugins/acme.probe/reload").json()
    assert (reloaded["applied"], reloaded["in_place"], reloaded["plugin"]["version"]) == (True, True, "2.0.0")
    assert reloaded["note"] == "version 1.0.0 replaced by 2.0.0"
    assert client.post("/api/v1/plugins/acme.probe/run", json=sync()).json()["result"]["next_cursor"] == "2.0.0"
    # A broken 3.0.0: the reload is refused and 2.0.0 keeps running.
    install(probe_wheel(version="3.0.0", source="raise SystemError('broken release')\n"))
    refused = client.post("/api/v1/plugins/acme.probe/reload")
    assert refused.status_code == 409
    body = refused.json()
    assert (body["applied"], body["in_place"], body["plugin"]["version"], body["plugin"]["state"]) == (
        False,
        False,
        "2.0.0",
        "enabled",
    )
    assert "the loaded version keeps running" in body["note"]
    assert "broken release" in body["note"]
    assert client.post("/api/v1/plugins/acme.probe/run", json=sync()).json()["result"]["next_cursor"] == "2.0.0"
    # Unloaded, then reloaded from the good files: brought up anew, not in place.
    install(probe_wheel(version="4.0.0"))
    client.delete("/api/v1/plugins/acme.probe")
    anew = client.post("/api/v1/plugins/acme.probe/reload").json()
    assert (anew["applied"], anew["in_place"], anew["plugin"]["state"]) == (True, False, "enabled")
    assert anew["note"] == "it was unloaded: brought up from disk, not replaced in place"


def test_run_validates_the_payload_against_the_envelope(api, marker):
    client = api.client("runner")
    ok = client.post("/api/v1/plugins/acme.probe/run", json=sync())
    assert ok.status_code == 200
    assert ok.json()["result"]["connector"] == "acme_probe"
    assert ok.json()["plugin_id"] == "acme.probe"
    missing = client.post("/api/v1/plugins/acme.probe/run", json={"kind": "sync_request"})
    assert missing.status_code == 422
    assert missing.json()["detail"][0]["loc"] == ["body", "sync_request", "connector"]
    wrong_type = client.post("/api/v1/plugins/acme.probe/run", json={**sync(), "since": "yesterday-ish"})
    assert wrong_type.status_code == 422
    assert wrong_type.json()["detail"][0]["loc"][-1] == "since"
    elsewhere = client.post("/api/v1/plugins/acme.probe/run", json=sync(connector="acme_second"))
    assert elsewhere.status_code == 422  # the connector is another plugin's
    assert marker.read_text().splitlines() == ["acme.probe 1.0.0 ok"]  # only the valid call ran


def test_run_refusals_map_to_status_codes_and_the_breaker_opens(served, install, probe_wheel, marker):
    install(probe_wheel())
    api = served(settings={"plugin_breaker_failures": 2, "plugin_breaker_reset": 60})
    client = api.client("admin")
    client.post("/api/v1/plugins/acme.probe/disable")
    disabled = client.post("/api/v1/plugins/acme.probe/run", json=sync())
    assert disabled.status_code == 409
    assert "disabled" in disabled.json()["detail"]
    client.post("/api/v1/plugins/acme.probe/enable")
    for _ in range(2):
        failed = client.post("/api/v1/plugins/acme.probe/run", json=sync("raise"))
        assert failed.status_code == 502
        assert "provider unreachable" in failed.json()["detail"]
    opened = client.post("/api/v1/plugins/acme.probe/run", json=sync())
    assert opened.status_code == 503
    assert opened.headers["retry-after"] == "5"
    assert client.get("/api/v1/plugins/acme.probe").json()["breaker_state"] == "open"
    assert marker.read_text().splitlines() == ["acme.probe 1.0.0 raise"] * 2  # the open breaker let nothing through
    outcomes = [e.fields["outcome"] for e in api.store.audit_events(event="api.plugin.run")]
    assert outcomes == ["503", "502", "502", "409"]


def test_a_hanging_plugin_answers_504_and_blocks_no_other_request(api, release):
    hung = api.client("admin")
    others = api.client("admin", timeout=5)
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        started = time.monotonic()
        hanging = [
            pool.submit(hung.post, "/api/v1/plugins/acme.probe/run", params={"timeout": 0.5}, json=sync("hang"))
            for _ in range(2)
        ]
        time.sleep(0.2)
        # Meanwhile: reads, an admin change and another plugin's run all answer at once.
        assert others.get("/api/v1/plugins").status_code == 200
        assert others.post("/api/v1/plugins/acme.second/run", json=sync(connector="acme_second")).status_code == 200
        assert others.post("/api/v1/plugins/acme.second/disable").json()["plugin"]["state"] == "disabled"
        assert time.monotonic() - started < 1.5
        answers = [future.result() for future in hanging]
    assert [a.status_code for a in answers] == [504, 504]
    assert answers[0].json() == {"detail": "plugin 'acme.probe' did not answer within 0.5 s"}
    assert time.monotonic() - started < 5
    release.touch()


def test_events_page_and_filter_by_plugin_event_and_actor(api):
    api.client("operator").post("/api/v1/plugins/acme.probe/disable")
    api.client("admin").post("/api/v1/plugins/acme.second/disable")
    api.client("admin").post("/api/v1/plugins/acme.second/enable")
    client = api.client("reader")
    mine = client.get("/api/v1/events", params={"actor": "operator"}).json()["events"]
    assert {e["actor"] for e in mine} == {"operator"}
    assert {e["event"] for e in mine} == {"plugin.disabled", "api.plugin.disable"}
    second = client.get("/api/v1/events", params={"plugin_id": "acme.second", "event": "api.plugin.enable"}).json()
    assert [(e["event"], e["actor"], e["fields"]["state"]) for e in second["events"]] == [
        ("api.plugin.enable", "admin", "enabled")
    ]
    seen, before = [], None
    while True:
        page = client.get("/api/v1/events", params={"limit": 2, **({"before": before} if before else {})}).json()
        seen.extend(e["id"] for e in page["events"])
        assert len(page["events"]) <= 2
        before = page["next_before"]
        if before is None:
            break
    everything = [e["id"] for e in client.get("/api/v1/events", params={"limit": 500}).json()["events"]]
    assert seen == everything
    assert seen == sorted(seen, reverse=True)
    assert len(seen) > 4


def test_metrics_count_calls_failures_latency_breaker_and_restarts(api):
    client = api.client("admin")
    client.post("/api/v1/plugins/acme.probe/run", json=sync())
    client.post("/api/v1/plugins/acme.probe/run", json=sync("raise"))
    text = client.get("/metrics").text
    assert 'aperio_plugin_calls_total{outcome="ok",plugin_id="acme.probe"} 1.0' in text
    assert 'aperio_plugin_calls_total{outcome="failed",plugin_id="acme.probe"} 1.0' in text
    assert 'aperio_plugin_failures_total{plugin_id="acme.probe"} 1.0' in text
    assert 'aperio_plugin_call_duration_seconds_count{plugin_id="acme.probe"} 2.0' in text
    assert 'aperio_plugin_breaker_state{plugin_id="acme.probe",state="closed"} 1.0' in text
    assert 'aperio_plugin_worker_restarts_total{plugin_id="acme.second"} 0.0' in text
    assert 'aperio_plugin_state{plugin_id="acme.second",state="enabled"} 1.0' in text


@pytest.mark.parametrize(
    ("spec", "why"),
    [
        ("evil-1.0-py3-none-any.whl", "not a registry reference"),
        ("acme.box", "no plugin index"),
        ("acme.box@1.0", "no plugin index"),
    ],
)
def test_a_refused_install_answers_one_line_and_changes_nothing(api, plugins_dir, spec, why):
    before = sorted(str(path) for path in plugins_dir.rglob("*"))
    response = api.client("operator").post("/api/v1/plugins/install", json={"spec": spec})
    assert response.status_code == 409
    detail = response.json()["detail"]
    assert "\n" not in detail
    assert detail.startswith(f"install of {spec!r} refused: ")
    assert why in detail
    assert sorted(str(path) for path in plugins_dir.rglob("*")) == before
    assert [p.id for p in api.host.plugins()] == ["acme.probe", "acme.second"]
    event = api.store.audit_events(event="api.plugins.install", limit=1)[0]
    assert (event.actor, event.fields["outcome"], event.fields["spec"]) == ("operator", "409", spec)


@pytest.mark.parametrize(
    "spec", ["../../etc/passwd", "/tmp/evil-1.0-py3-none-any.whl", "file:///tmp/evil.whl", "acme box"]
)
def test_an_install_naming_a_file_on_the_server_is_422_on_the_spec(api, plugins_dir, spec):
    before = sorted(str(path) for path in plugins_dir.rglob("*"))
    response = api.client("admin").post("/api/v1/plugins/install", json={"spec": spec})
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["body", "spec"]
    assert sorted(str(path) for path in plugins_dir.rglob("*")) == before


def test_malformed_install_body_is_422_naming_the_field(api):
    response = api.client("admin").post("/api/v1/plugins/install", json={"spec": "", "pre": "maybe"})
    assert response.status_code == 422
    assert {tuple(error["loc"]) for error in response.json()["detail"]} == {("body", "spec"), ("body", "pre")}


CRASHING_SOURCE = """
import os, time
from aperio_hookspecs import Connector, SyncResult, hookimpl

class Crash(Connector):
    name = "acme_crash"
    provider = "test"

    def sync(self, context, request):
        if request.config.get("mode") == "crash":
            os._exit(3)
        return SyncResult(connector="acme_crash", next_cursor=STARTED)

# A worker's pid is the same in each new sandbox (its own PID namespace); its start time is not.
STARTED = str(time.time_ns())

@hookimpl
def aperio_register_connectors(register):
    register(Crash())
"""


def test_a_worker_that_crashes_during_run_answers_502_and_the_server_goes_on(served, install, probe_wheel):
    install(probe_wheel("acme.crash", source=CRASHING_SOURCE))
    api = served(settings={"plugin_isolation": "process"})
    client = api.client("admin")
    first = client.post("/api/v1/plugins/acme.crash/run", json=sync(connector="acme_crash"))
    assert first.status_code == 200, first.text
    crashed = client.post("/api/v1/plugins/acme.crash/run", json=sync("crash", connector="acme_crash"))
    assert crashed.status_code == 502
    assert "worker" in crashed.json()["detail"]
    assert client.get("/healthz").status_code == 200
    again = client.post("/api/v1/plugins/acme.crash/run", json=sync(connector="acme_crash"))
    assert again.status_code == 200  # a new worker
    assert again.json()["result"]["next_cursor"] != first.json()["result"]["next_cursor"]
    info = client.get("/api/v1/plugins/acme.crash").json()
    assert info["worker_restarts"] >= 1
    assert 'aperio_plugin_worker_restarts_total{plugin_id="acme.crash"}' in client.get("/metrics").text
