"""Process isolation through the host: the host application's code does not change, the plugin
runs in a real worker process (`python -m aperio_plugins.worker`)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from plugin_builders import FINDING
from worker_processes import ended, token, tree

from aperio_hookspecs import SyncRequest
from aperio_plugins import Isolation, PluginCallError, PluginState
from aperio_plugins.errors import WorkerCrashedError
from aperio_plugins.testing import PluginWheel, manifest_toml
from aperio_plugins.worker import WorkerSettings

SOURCE = """
import os
from aperio_hookspecs import Connector, SyncResult, hookimpl

# Which process answers, in words the host can check from outside the sandbox (tests/worker_processes.py).
WHO = open("/proc/self/stat", "rb").read().rsplit(b")", 1)[1].split()[19].decode()

class Probe(Connector):
    name = "probe"
    provider = "test"

    def sync(self, context, request):
        mode = request.config.get("mode")
        if mode == "crash":
            os._exit(7)
        if mode == "raise":
            raise ConnectionError("provider down")
        token = context.credentials.get("probe:read").secret.get_secret_value()
        count = int(context.kv.get("count") or 0) + 1
        context.kv.set("count", str(count))
        return SyncResult(connector="probe", next_cursor=f"{WHO}:{token}:{count}")

@hookimpl
def aperio_register_connectors(register):
    register(Probe())

@hookimpl
def aperio_finding_raised(finding):
    return WHO
"""


def probe_wheel(wheel_dir, isolation="any"):
    manifest = manifest_toml(
        {
            "acme.probe": {
                "summary": "probe",
                "kinds": ["connector"],
                "credential_scopes": ["probe:read"],
                "isolation": isolation,
            }
        }
    )
    return PluginWheel(
        "acme-probe", plugins={"acme.probe": "acme_probe"}, files={"acme_probe/__init__.py": SOURCE}, manifest=manifest
    ).build(wheel_dir)


@pytest.fixture
def worker_host(make_host, install, wheel_dir):
    install(probe_wheel(wheel_dir))

    def worker_host(**kwargs):
        kwargs.setdefault("settings", {"plugin_isolation": "process"})
        kwargs.setdefault("worker_settings", WorkerSettings(restart_initial_delay=0.05, restart_max_delay=0.2))
        host = make_host(credential_provider=lambda plugin_id, scope: "s3cret", **kwargs)
        host.load()
        return host

    return worker_host


def test_a_process_isolated_plugin_is_called_the_same_way(worker_host):
    host = worker_host()
    info = host.get("acme.probe")
    assert info.state is PluginState.ENABLED
    assert info.isolation is Isolation.PROCESS
    assert info.worker_pid is not None
    assert info.worker_pid != os.getpid()
    # The default (APERIO_PLUGIN_SANDBOX=auto) is what runs here: bubblewrap wherever it is installed.
    assert info.worker_containment == ("bwrap" if shutil.which("bwrap") else "subreaper")
    assert Path(f"/proc/{info.worker_pid}").exists()
    who = token(info.worker_pid)  # the interpreter under the pid the host reports (bwrap's, in the sandbox)
    assert who is not None

    assert host.hook.aperio_finding_raised(finding=FINDING) == [who]
    result = host.run("acme.probe", SyncRequest(connector="probe"))
    assert result.next_cursor == f"{who}:s3cret:1"  # credential minted and KV kept by the host
    assert host.run("acme.probe", SyncRequest(connector="probe")).next_cursor.endswith(":2")
    assert list(host.connectors) == ["probe"]


def test_a_plugin_exception_in_the_worker_is_the_plugins_failure(worker_host):
    host = worker_host()
    with pytest.raises(PluginCallError, match="ConnectionError: provider down"):
        host.run("acme.probe", SyncRequest(connector="probe", config={"mode": "raise"}))
    assert host.get("acme.probe").call_failures == 1
    assert host.run("acme.probe", SyncRequest(connector="probe")).connector == "probe"


@pytest.mark.parametrize("isolation", ["inprocess", "process"])
def test_the_same_plugin_fault_has_the_same_type_and_record_wherever_the_plugin_runs(worker_host, audit, isolation):
    host = worker_host(settings={"plugin_isolation": isolation})
    assert host.get("acme.probe").isolation is Isolation(isolation)

    with pytest.raises(PluginCallError) as caught:
        host.run("acme.probe", SyncRequest(connector="probe", config={"mode": "raise"}))

    error = caught.value
    assert type(error) is PluginCallError
    assert error.message == "plugin 'acme.probe' failed in connector 'probe': ConnectionError: provider down"
    assert error.plugin_error_type == "ConnectionError"
    assert host.get("acme.probe").last_call_error == "connector.sync: ConnectionError: provider down"
    (failed,) = audit.fields_of("plugin.call.failed")
    assert (failed["error_type"], failed["error"]) == ("ConnectionError", "provider down")
    # Only a worker has a traceback of its own to add; `aperio -v` prints it from diagnostics().
    if isolation == "process":
        assert 'raise ConnectionError("provider down")' in error.diagnostics()
        assert 'raise ConnectionError("provider down")' not in error.diagnostics(remote_traceback=False)
    else:
        assert error.remote_traceback is None
        assert isinstance(error.__cause__, ConnectionError)


def test_a_worker_that_dies_mid_call_is_restarted(worker_host, audit):
    host = worker_host()
    first_pid = host.get("acme.probe").worker_pid
    first = token(first_pid)
    with pytest.raises(WorkerCrashedError, match=r"\(pid \d+\) exited with status 7\b") as crashed:
        host.run("acme.probe", SyncRequest(connector="probe", config={"mode": "crash"}))
    assert crashed.value.returncode == 7
    result = host.run("acme.probe", SyncRequest(connector="probe"))
    info = host.get("acme.probe")
    assert info.worker_pid != first_pid
    assert not result.next_cursor.startswith(f"{first}:")
    assert result.next_cursor.startswith(f"{token(info.worker_pid)}:")
    assert info.worker_restarts >= 1
    assert info.call_failures >= 1
    assert "plugin.worker.restarted" in audit.names()


def test_unload_and_close_stop_the_worker(worker_host):
    host = worker_host()
    worker = tree(host.get("acme.probe").worker_pid)
    assert len(worker) == (3 if host.get("acme.probe").worker_containment == "bwrap" else 1)
    host.unload("acme.probe")
    # The host's child reaped, the sandbox and everything in it dead: no survivor, no zombie of the host's.
    assert ended(worker)
    host.load()
    worker = tree(host.get("acme.probe").worker_pid)
    host.close()
    assert ended(worker)


@pytest.mark.parametrize(
    ("host_default", "manifest", "override", "expected"),
    [
        ("inprocess", "any", None, Isolation.INPROCESS),
        ("process", "any", None, Isolation.PROCESS),
        ("inprocess", "process", None, Isolation.PROCESS),  # the plugin asks to be isolated
        ("process", "inprocess", None, Isolation.PROCESS),  # a plugin cannot opt out of the host's default
        ("process", "any", Isolation.INPROCESS, Isolation.INPROCESS),  # only the operator can, per plugin
        ("inprocess", "any", Isolation.PROCESS, Isolation.PROCESS),
    ],
)
def test_who_decides_the_isolation(make_host, install, wheel_dir, host_default, manifest, override, expected):
    install(probe_wheel(wheel_dir, manifest))
    if override is not None:
        make_host(settings={"plugin_isolation": host_default}).persist_isolation("acme.probe", override)
    host = make_host(settings={"plugin_isolation": host_default})
    host.load()
    assert host.get("acme.probe").isolation is expected


def test_the_cli_isolates_a_plugin_and_lists_its_worker(install, wheel_dir, plugins_dir, tmp_path):
    install(probe_wheel(wheel_dir))
    env = {
        **os.environ,
        "APERIO_PLUGINS_DIR": str(plugins_dir),
        "APERIO_STATE_DIR": str(tmp_path / "state"),
        "APERIO_PLUGIN_TRUST_MODE": "warn",
        "APERIO_PLUGIN_TRUSTED_KEYS_DIR": str(tmp_path / "keys"),
    }
    aperio = str(Path(sys.executable).with_name("aperio"))
    result = subprocess.run(
        [aperio, "plugin", "isolate", "acme.probe", "process"], capture_output=True, text=True, env=env, check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "acme.probe: isolation process"
    rows = {
        row["id"]: row
        for row in json.loads(
            subprocess.run(
                [aperio, "plugin", "list", "--json"], capture_output=True, text=True, env=env, check=True
            ).stdout
        )
    }
    assert rows["acme.probe"]["isolation"] == "process"
    assert rows["acme.probe"]["worker_pid"] is not None
    assert rows["acme.probe"]["breaker_state"] == "closed"
    unknown = subprocess.run(
        [aperio, "plugin", "isolate", "acme.nope", "process"], capture_output=True, text=True, env=env, check=False
    )
    assert unknown.returncode == 1
    assert unknown.stderr.startswith("error: no installed plugin with id 'acme.nope'")


def test_a_hundred_consecutive_crashes_open_the_breaker_and_cost_the_host_little(worker_host):
    import resource

    from aperio_plugins import CircuitOpenError

    host = worker_host(
        settings={"plugin_isolation": "process", "plugin_breaker_failures": 5, "plugin_breaker_reset": 60}
    )
    before = resource.getrusage(resource.RUSAGE_SELF)
    outcomes = []
    for _ in range(100):
        try:
            host.run("acme.probe", SyncRequest(connector="probe", config={"mode": "crash"}))
        except CircuitOpenError:
            outcomes.append("fast")
        except WorkerCrashedError:
            outcomes.append("crashed")
    after = resource.getrusage(resource.RUSAGE_SELF)

    assert outcomes[:5] == ["crashed"] * 5
    assert outcomes[5:] == ["fast"] * 95  # the breaker opened: no more workers died for nothing
    assert host.get("acme.probe").breaker_state == "open"
    host_cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    assert host_cpu < 5.0, f"the host spent {host_cpu:.2f} s of CPU on 100 failing calls"


def test_a_restarted_worker_verifies_the_plugin_itself_in_strict(make_host, install, wheel_dir, tmp_path):
    """The worker does not take the host's word: a file changed after the host verified the plugin is
    refused by the worker that starts after a crash, and the changed code never runs."""
    from aperio_plugins import SignatureStatus
    from aperio_plugins.testing import generate_signing_key, sign_wheel_with_key

    private, public = generate_signing_key(tmp_path / "author")
    trusted = tmp_path / "keys"
    trusted.mkdir(mode=0o700)
    (trusted / public.name).write_bytes(public.read_bytes())
    install(sign_wheel_with_key(probe_wheel(wheel_dir), private))
    host = make_host(
        "strict",
        settings={"plugin_isolation": "process"},
        worker_settings=WorkerSettings(restart_initial_delay=0.05, restart_max_delay=0.2),
        credential_provider=lambda plugin_id, scope: "s3cret",
    )
    host.load()
    info = host.get("acme.probe")
    assert (info.state, info.signature_status) == (PluginState.ENABLED, SignatureStatus.VERIFIED)

    ran = tmp_path / "tampered-ran.txt"
    init = next(tmp_path.glob("plugins/acme_probe/__init__.py"))
    init.write_text(init.read_text() + f"\nimport pathlib\npathlib.Path({str(ran)!r}).write_text('ran')\n")
    with pytest.raises(WorkerCrashedError):
        host.run("acme.probe", SyncRequest(connector="probe", config={"mode": "crash"}))

    with pytest.raises(
        WorkerCrashedError,
        match=r"it could not load the plugin: invalid signature: files do not match the signed statement:"
        r" acme_probe/__init__\.py modified",
    ):
        host.run("acme.probe", SyncRequest(connector="probe"))
    assert not ran.exists()
