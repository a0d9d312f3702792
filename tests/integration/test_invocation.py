"""`PluginHost.run`: payload dispatch, boundary validation, credentials, KV, and broadcast of findings."""

from __future__ import annotations

import pytest

from aperio_hookspecs import Credential, SyncRequest
from aperio_plugins import HookError, LifecycleError, PluginCallError, _invoke
from aperio_plugins.testing import PluginWheel

SOURCE = """
import datetime
from aperio_hookspecs import Connector, SyncResult, Finding, Resource, hookimpl

SEEN = []

class Probe(Connector):
    name = "probe"
    provider = "test"

    def sync(self, context, request):
        mode = request.config.get("mode")
        if mode == "secret":
            secret = context.credentials.get(request.config["scope"]).secret.get_secret_value()
            return SyncResult(connector="probe", next_cursor=secret)
        if mode == "kv":
            count = int(context.kv.get("count") or 0) + 1
            context.kv.set("count", str(count))
            return SyncResult(connector="probe", next_cursor=str(count))
        if mode == "malformed":
            return {"connector": "probe", "events": [{"id": "e1"}]}
        if mode == "wrong_type":
            return "done"
        if mode == "other_connector":
            return SyncResult(connector="someone-else")
        if mode == "raise":
            raise ConnectionError("provider unreachable")
        if mode == "finding":
            finding = Finding(
                id="f1", provider="test", title="open link", severity="high",
                resource=Resource(type="file", id="9"), detected_at=datetime.datetime(2026, 1, 1, tzinfo=datetime.timezone.utc),
            )
            return SyncResult(connector="probe", findings=[finding])
        return SyncResult(connector="probe", next_cursor=context.plugin_id + ":" + str(context.remaining() > 0))

@hookimpl
def aperio_register_connectors(register):
    register(Probe())

@hookimpl
def aperio_finding_raised(finding):
    SEEN.append(finding.id)
"""


@pytest.fixture
def host(make_host, install, wheel_dir):
    minted = []

    def provider(plugin_id: str, scope: str) -> Credential | str:
        minted.append((plugin_id, scope))
        return f"token-for-{plugin_id}-{scope}"

    wheel = PluginWheel(
        "acme-probe",
        plugins={"acme.probe": "acme_probe"},
        files={"acme_probe/__init__.py": SOURCE},
        credential_scopes=("probe:read",),
    )
    install(wheel.build(wheel_dir))
    host = make_host(credential_provider=provider)
    host.load()
    host.minted = minted
    return host


def sync(host, **config):
    return host.run("acme.probe", SyncRequest(connector="probe", config=config))


def test_run_hands_the_plugin_its_own_context(host):
    assert sync(host).next_cursor == "acme.probe:True"


def test_run_accepts_a_plain_mapping_payload(host):
    assert host.run("acme.probe", {"kind": "sync_request", "connector": "probe"}).connector == "probe"


def test_declared_credential_scope_is_minted_for_the_invocation(host):
    assert sync(host, mode="secret", scope="probe:read").next_cursor == "token-for-acme.probe-probe:read"
    assert host.minted == [("acme.probe", "probe:read")]


def test_undeclared_credential_scope_is_refused_and_nothing_is_minted(host):
    with pytest.raises(
        PluginCallError, match="credential scope 'admin:write' not granted: the plugin's manifest does not declare"
    ):
        sync(host, mode="secret", scope="admin:write")
    assert host.minted == []


def test_host_without_a_credential_provider_refuses_every_scope(make_host, install, wheel_dir):
    wheel = PluginWheel(
        "acme-probe",
        plugins={"acme.probe": "acme_probe"},
        files={"acme_probe/__init__.py": SOURCE},
        credential_scopes=("probe:read",),
    )
    install(wheel.build(wheel_dir))
    host = make_host()
    host.load()
    with pytest.raises(PluginCallError, match="no credential provider configured"):
        sync(host, mode="secret", scope="probe:read")


def test_kv_is_kept_by_the_host_across_calls_and_restarts(host, make_host):
    assert [sync(host, mode="kv").next_cursor for _ in range(2)] == ["1", "2"]
    host.close()
    again = make_host()
    again.load()
    assert sync(again, mode="kv").next_cursor == "3"


@pytest.mark.parametrize(
    ("mode", "message"),
    [
        ("malformed", r"returned a malformed SyncResult: events.0.*Field required"),
        ("wrong_type", "returned str, expected SyncResult"),
        ("other_connector", "returned a SyncResult for connector 'someone-else', not 'probe'"),
        ("raise", "ConnectionError: provider unreachable"),
    ],
)
def test_a_plugin_failure_at_the_boundary_is_the_plugins_not_the_hosts(host, audit, mode, message):
    with pytest.raises(PluginCallError, match=message):
        sync(host, mode=mode)
    info = host.get("acme.probe")
    assert info.call_failures == 1
    assert audit.fields_of("plugin.call.failed")[0]["hook"] == "connector.sync"
    assert sync(host).next_cursor == "acme.probe:True"  # the plugin and the host carry on


def test_findings_from_a_sync_are_broadcast(host):
    import acme_probe

    sync(host, mode="finding")
    assert acme_probe.SEEN == ["f1"]


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        ({"kind": "sync_request"}, "invalid payload for plugin 'acme.probe': sync_request.connector: Field required"),
        ({"kind": "telepathy"}, "invalid payload"),
        ({"kind": "sync_request", "connector": "nope"}, "provides no connector 'nope' \\(it provides: probe\\)"),
        (
            {"kind": "delivery_batch", "destination": "siem", "envelopes": []},
            "provides no destination 'siem' \\(it provides: none\\)",
        ),
    ],
)
def test_bad_payloads_get_a_typed_error(host, payload, message):
    with pytest.raises(HookError, match=message):
        host.run("acme.probe", payload)


def test_a_disabled_plugin_receives_no_calls(host):
    host.disable("acme.probe")
    with pytest.raises(LifecycleError, match="is disabled: it receives no calls"):
        sync(host)


@pytest.fixture
def isolated_host(make_host, install, wheel_dir):
    wheel = PluginWheel(
        "acme-probe",
        plugins={"acme.probe": "acme_probe"},
        files={"acme_probe/__init__.py": SOURCE},
        credential_scopes=("probe:read",),
    )
    install(wheel.build(wheel_dir))
    host = make_host(settings={"plugin_isolation": "process"})
    host.load()
    return host


@pytest.mark.parametrize(
    ("mode", "message"),
    [
        ("malformed", r"returned malformed SyncResult: events\.0\..*Field required"),
        ("wrong_type", "returned str, not a SyncResult"),
        ("other_connector", "returned a SyncResult for connector 'someone-else', not 'probe'"),
    ],
)
def test_a_worker_result_is_refused_by_the_host_at_the_boundary(isolated_host, mode, message):
    with pytest.raises(PluginCallError, match=message):
        sync(isolated_host, mode=mode)
    assert isolated_host.get("acme.probe").call_failures == 1
    assert sync(isolated_host).next_cursor == "acme.probe:True"


def test_a_worker_result_is_validated_once_and_an_in_process_result_once(isolated_host, host, monkeypatch):
    # The worker's JSON is validated by the host as it arrives (the proxy's unwrap); `run` does not
    # dump and validate that model again. An in-process plugin's object is validated by `run`.
    revalidated: list[object] = []
    original = _invoke._revalidate

    def spy(result: object, result_type: type) -> object:
        revalidated.append(result)
        return original(result, result_type)

    monkeypatch.setattr(_invoke, "_revalidate", spy)
    assert sync(isolated_host).next_cursor == "acme.probe:True"
    assert revalidated == []
    assert sync(host).next_cursor == "acme.probe:True"
    assert len(revalidated) == 1
