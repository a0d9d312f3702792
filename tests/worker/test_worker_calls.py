"""A plugin served by a real worker process: what the host sees of it, and calls across the boundary."""

from __future__ import annotations

import datetime
import inspect
import json
import os
import time

import pytest

from aperio_hookspecs import (
    ActionDefinition,
    Connector,
    CredentialNotGrantedError,
    DeliveryBatch,
    DeliveryReceipt,
    Destination,
    Event,
    Finding,
    RemediationHandler,
    RemediationRequest,
    RemediationResult,
    Resource,
    SyncRequest,
    SyncResult,
)
from aperio_plugins.worker import (
    HandshakeError,
    PluginCallError,
    RemoteTraceback,
    WorkerBoundaryError,
    WorkerPlugin,
    WorkerSettings,
    WorkerState,
)
from worker.helpers import PROBE_ID, connector_of, sync, token

NOW = datetime.datetime(2026, 11, 22, 10, 0, tzinfo=datetime.timezone.utc)


def finding(title: str = "public link", finding_id: str = "f-1") -> Finding:
    return Finding(
        id=finding_id,
        provider="test",
        title=title,
        severity="high",
        resource=Resource(type="file", id="9"),
        detected_at=NOW,
    )


def test_the_stand_in_carries_each_hookimpl_as_a_plain_function_with_the_real_names_and_options(start_worker):
    plugin = start_worker()

    hooks = {name: value for name, value in vars(plugin).items() if hasattr(value, "aperio_impl")}

    assert sorted(hooks) == [
        "aperio_finding_raised",
        "aperio_register_connectors",
        "aperio_register_destinations",
        "aperio_register_remediations",
    ]
    assert all(inspect.isfunction(function) for function in hooks.values())
    assert list(inspect.signature(hooks["aperio_finding_raised"]).parameters) == ["finding"]
    assert list(inspect.signature(hooks["aperio_register_connectors"]).parameters) == ["register"]
    assert hooks["aperio_finding_raised"].aperio_impl == {
        "wrapper": False,
        "hookwrapper": False,
        "optionalhook": False,
        "tryfirst": False,
        "trylast": True,
        "specname": None,
    }
    status = plugin.status()
    assert status.state is WorkerState.READY
    assert status.protocol_version == 1
    assert status.pid != os.getpid()
    assert plugin.description.distribution == "acme-probe"


def test_registration_hooks_register_proxies_with_the_real_names_locally(start_worker):
    plugin = start_worker()
    registered: dict[str, list] = {"connectors": [], "remediations": [], "destinations": []}

    for kind, found in registered.items():
        getattr(plugin, f"aperio_register_{kind}")(found.append)

    (connector,) = registered["connectors"]
    (handler,) = registered["remediations"]
    (destination,) = registered["destinations"]
    assert isinstance(connector, Connector)
    assert (connector.name, connector.provider, connector.description) == (
        "probe",
        "test",
        "does what its request says",
    )
    assert isinstance(handler, RemediationHandler)
    assert handler.action == ActionDefinition(
        name="probe.quarantine",
        provider="test",
        title="Quarantine a file",
        description="moves a file away",
        resource_types=("file",),
        destructive=True,
    )
    assert isinstance(destination, Destination)
    assert (destination.name, destination.description) == ("probe-sink", "accepts every envelope")


def test_sync_remediate_and_deliver_run_in_the_worker_and_return_validated_envelopes(start_worker, make_context):
    plugin = start_worker()
    context = make_context()
    handlers: list = []
    destinations: list = []
    plugin.aperio_register_remediations(handlers.append)
    plugin.aperio_register_destinations(destinations.append)

    result = sync(plugin, context)
    remediated = handlers[0].remediate(
        context, RemediationRequest(id="r-1", action="probe.quarantine", resource=Resource(type="file", id="9"))
    )
    event = Event(id="e-1", provider="test", type="login", occurred_at=NOW)
    receipt = destinations[0].deliver(context, DeliveryBatch(destination="probe-sink", envelopes=(event, finding())))

    worker_pid = plugin.status().pid
    assert isinstance(result, SyncResult)
    assert result.next_cursor == token(worker_pid)
    assert isinstance(remediated, RemediationResult)
    assert (remediated.request_id, remediated.status.value, remediated.detail) == (
        "r-1",
        "succeeded",
        token(worker_pid),
    )
    assert isinstance(receipt, DeliveryReceipt)
    assert receipt.accepted == ("e-1", "f-1")


def test_a_hook_call_crosses_with_an_envelope_argument_and_an_envelope_in_its_result(start_worker):
    plugin = start_worker()

    answer = plugin.aperio_finding_raised(finding())

    assert answer["seen"] == "f-1"
    assert answer["severity"] == "high"
    assert answer["echo"] == finding()  # validated back into a Finding on the host side


def test_the_context_deadline_invocation_and_plugin_id_reach_the_worker(start_worker, make_context):
    plugin = start_worker()
    context = make_context(timeout=7.0)

    remaining, invocation_id, plugin_id = sync(plugin, context, mode="deadline").next_cursor.split("|")

    assert 5.0 < float(remaining) <= 7.0
    assert invocation_id == context.invocation_id
    assert plugin_id == PROBE_ID


def test_kv_and_credentials_are_requests_to_the_host_which_keeps_storage_and_mints_secrets(
    start_worker, make_context, store, minted
):
    plugin = start_worker()

    first = sync(plugin, make_context(), mode="kv").next_cursor
    second = sync(plugin, make_context(), mode="kv").next_cursor
    secret = sync(plugin, make_context(), mode="secret", scope="probe:read").next_cursor
    scopes = sync(plugin, make_context(scopes=("probe:read", "probe:write")), mode="scopes").next_cursor

    assert (first, second) == ("1|count,seen", "2|count,seen")
    assert store.kv_get(PROBE_ID, "count") == "2"  # the host's own store holds the plugin's data
    assert secret == f"token-for-{PROBE_ID}-probe:read"
    assert minted == [(PROBE_ID, "probe:read")]  # minted by the host, for that invocation only
    assert scopes == "probe:read,probe:write"


def test_a_scope_the_manifest_does_not_declare_is_refused_and_the_worker_never_sees_a_secret(
    start_worker, make_context, minted
):
    plugin = start_worker()

    with pytest.raises(PluginCallError) as caught:
        sync(plugin, make_context(), mode="secret", scope="admin:everything")

    assert caught.value.remote_type == "aperio_hookspecs._errors.CredentialNotGrantedError"
    assert "credential scope 'admin:everything' not granted: the plugin's manifest does not declare this scope" in str(
        caught.value
    )
    assert minted == []
    assert CredentialNotGrantedError.__name__ in caught.value.remote_traceback


def test_a_kv_value_that_is_not_a_string_is_refused_in_the_worker(start_worker, make_context, store):
    plugin = start_worker()

    with pytest.raises(PluginCallError, match="KV values are strings, got bytes"):
        sync(plugin, make_context(), mode="kv_bytes")

    assert store.kv_get(PROBE_ID, "raw") is None


def test_plugin_log_events_become_host_events_bound_to_the_plugin_and_invocation(start_worker, make_context, audit):
    plugin = start_worker()
    context = make_context()

    sync(plugin, context, mode="log")

    (fields,) = audit.fields_of("probe.fetched")
    assert fields == {"plugin_id": PROBE_ID, "invocation_id": context.invocation_id, "step": "fetch", "items": 3}


def test_a_plugin_exception_reaches_the_caller_with_type_message_and_traceback_and_the_worker_serves_on(
    start_worker, make_context
):
    plugin = start_worker()
    pid = plugin.status().pid

    with pytest.raises(PluginCallError) as caught:
        sync(plugin, make_context(), mode="raise")

    error = caught.value
    assert error.remote_type == "ConnectionError"
    assert error.remote_message == "provider unreachable"
    assert 'raise ConnectionError("provider unreachable")' in error.remote_traceback
    assert "ConnectionError: provider unreachable" in error.remote_traceback
    assert "acme_probe/__init__.py" in error.remote_traceback
    assert isinstance(error.__cause__, RemoteTraceback)
    assert error.remote_traceback.rstrip() in error.diagnostics()
    assert sync(plugin, make_context()).next_cursor == token(pid)
    with pytest.raises(PluginCallError, match=r"ValueError: cannot handle finding f-1 \(raised by plugin 'acme.probe'"):
        plugin.aperio_finding_raised(finding("raise"))
    assert plugin.status().pid == pid


def test_a_malformed_result_envelope_is_a_typed_error_on_the_host_side(start_worker, make_context):
    plugin = start_worker()

    with pytest.raises(
        WorkerBoundaryError,
        match=r"connector 'probe' returned malformed SyncResult: events\.0\.provider: Field required",
    ):
        sync(plugin, make_context(), mode="malformed")

    assert sync(plugin, make_context()).next_cursor == token(plugin.status().pid)


def test_values_that_cannot_cross_are_typed_errors_naming_the_hook_and_argument(start_worker, make_context):
    plugin = start_worker()

    with pytest.raises(
        WorkerBoundaryError,
        match=r"hook aperio_finding_raised: argument 'finding' cannot cross the process boundary: object is neither JSON-able nor an SDK envelope",
    ):
        plugin.aperio_finding_raised(object())
    with pytest.raises(
        WorkerBoundaryError,
        match=r"hook aperio_finding_raised: TypeError: set is neither JSON-able nor an SDK envelope",
    ):
        plugin.aperio_finding_raised(finding("unencodable"))
    with pytest.raises(WorkerBoundaryError, match=r"connector 'probe': TypeError: object is neither JSON-able"):
        sync(plugin, make_context(), mode="unencodable")

    assert plugin.aperio_finding_raised(finding())["seen"] == "f-1"


def test_print_in_a_plugin_goes_to_the_log_not_into_the_protocol(start_worker, make_context, audit):
    plugin = start_worker()

    assert sync(plugin, make_context(), mode="print").next_cursor == "printed"

    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        lines = [fields["line"] for fields in audit.fields_of("plugin.worker.stderr")]
        if "a plugin printing to stdout" in lines:
            break
        time.sleep(0.05)
    assert "a plugin printing to stdout" in lines
    assert all(fields["plugin_id"] == PROBE_ID for fields in audit.fields_of("plugin.worker.stderr"))


def test_the_worker_environment_is_scrubbed_and_only_the_allowlist_passes(start_worker, make_context, monkeypatch):
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "host-secret-do-not-leak")
    monkeypatch.setenv("APERIO_API_TOKEN", "host-token-do-not-leak")
    monkeypatch.setenv("ACME_PROXY_URL", "http://proxy.internal:3128")
    plugin = start_worker(options=WorkerSettings(env_allowlist=("ACME_PROXY_URL",)))

    environment = json.loads(sync(plugin, make_context(), mode="env").next_cursor)

    assert "host-secret-do-not-leak" not in json.dumps(environment)
    assert "host-token-do-not-leak" not in json.dumps(environment)
    assert environment["ACME_PROXY_URL"] == "http://proxy.internal:3128"
    assert environment["APERIO_PLUGIN_TRUST_MODE"] == "warn"
    # APERIO_WORKER_SPIN_US is a host setting, written to the worker's environment like the others.
    allowed = {"PATH", "LANG", "TZ", "PYTHONPATH", "ACME_PROXY_URL", "TMPDIR", "APERIO_WORKER_SPIN_US"}
    unexpected = [
        name
        for name in environment
        if name not in allowed and not name.startswith(("LC_", "APERIO_PLUGIN", "APERIO_ENVIRONMENT"))
    ]
    if plugin.status().containment == "bwrap":
        # bwrap sets PWD to the directory it changed to (--chdir), the worker's own: no host secret.
        assert unexpected == ["PWD"]
        assert environment["PWD"] == environment["TMPDIR"]
    else:
        assert unexpected == []


def test_the_worker_runs_in_a_private_directory_with_resource_limits(start_worker, make_context):
    plugin = start_worker(options=WorkerSettings(memory_limit=1536 * 1024 * 1024, cpu_time_limit=600))

    cwd = sync(plugin, make_context(), mode="cwd").next_cursor
    limits = sync(plugin, make_context(), mode="limits").next_cursor

    assert os.path.basename(cwd).startswith("aperio-worker-acme.probe-")
    assert oct(os.stat(cwd).st_mode & 0o777) == "0o700"
    address_space = next(line for line in limits.splitlines() if line.startswith("Max address space"))
    cpu_time = next(line for line in limits.splitlines() if line.startswith("Max cpu time"))
    assert address_space.split()[3] == str(1536 * 1024 * 1024)
    assert cpu_time.split()[3:5] == ["600", "605"]
    plugin.stop()
    assert not os.path.exists(cwd)  # removed with the worker


def test_stop_ends_the_worker_and_later_calls_are_refused(start_worker, make_context, audit):
    plugin = start_worker()
    connector = connector_of(plugin)
    pid = plugin.status().pid

    plugin.stop()

    assert plugin.status().state is WorkerState.STOPPED
    assert (
        "plugin.worker.exited",
        {"plugin_id": PROBE_ID, "pid": pid, "returncode": 0, "status": "exited with status 0"},
    ) in audit.events
    with pytest.raises(Exception, match="is stopped"):
        connector.sync(make_context(), SyncRequest(connector="probe"))


WRAPPER_SOURCE = """
from aperio_hookspecs import hookimpl

@hookimpl(wrapper=True)
def aperio_finding_raised(finding):
    return (yield)
"""

BROKEN_SOURCE = """
import no_such_module_anywhere
"""


def test_a_plugin_with_a_wrapper_hookimpl_is_refused_at_start(start_worker, audit):
    with pytest.raises(
        WorkerBoundaryError,
        match=r"implements aperio_finding_raised as a wrapper .* cannot cross a process boundary; run this plugin in process",
    ):
        start_worker("acme.wrapper", source=WRAPPER_SOURCE)

    assert "plugin.worker.exited" in audit.names("acme.wrapper")


def test_a_plugin_that_cannot_load_in_the_worker_is_reported_with_its_stage(start_worker, audit):
    with pytest.raises(HandshakeError) as caught:
        start_worker("acme.broken", source=BROKEN_SOURCE)

    assert caught.value.stage == "load"
    assert "it could not load the plugin" in caught.value.message
    assert "no_such_module_anywhere" in caught.value.message
    assert "plugin.worker.handshake.failed" in audit.names("acme.broken")
    assert "plugin.worker.killed" not in audit.names("acme.broken")  # it exited by itself
    (exited,) = audit.fields_of("plugin.worker.exited")
    assert exited["returncode"] == 3


def test_the_stand_in_is_accepted_by_the_hosts_own_registration_pipeline(
    start_worker, make_host, probe_plugins_dir, make_context
):
    # What _host._activate will do with a WorkerPlugin: prepare (guarded), register, invoke.
    import pluggy

    from aperio_hookspecs import PROJECT_NAME
    from aperio_hookspecs import specs as api_specs
    from aperio_plugins import PluginKind
    from aperio_plugins._catalog import Catalog
    from aperio_plugins._invoke import invoke, operation_for
    from aperio_plugins.pipeline.register import prepare, register

    plugin = start_worker()
    inspected, _ = make_host(plugins_dir=probe_plugins_dir).verify(PROBE_ID)
    manager = pluggy.PluginManager(PROJECT_NAME)
    manager.add_hookspecs(api_specs)
    failures: list = []

    prepared = prepare(
        manager,
        inspected,
        plugin,
        guard=True,
        propagating=frozenset(),
        record=lambda hook, exc: failures.append((hook, exc)),
    )
    registrations = register(manager, Catalog(), prepared)
    results = manager.hook.aperio_finding_raised(finding=finding())
    manager.hook.aperio_finding_raised(finding=finding("raise"))
    request = SyncRequest(connector="probe")
    entry = registrations.get(PluginKind.CONNECTOR, "probe")
    result = invoke(entry, operation_for(request), request, make_context())

    assert registrations.names(PluginKind.REMEDIATION) == ("probe.quarantine",)
    assert registrations.names(PluginKind.DESTINATION) == ("probe-sink",)
    assert results[0]["seen"] == "f-1"
    assert [(hook, type(exc).__name__) for hook, exc in failures] == [("aperio_finding_raised", "PluginCallError")]
    assert result.next_cursor == token(plugin.status().pid)
    assert isinstance(plugin, WorkerPlugin)
