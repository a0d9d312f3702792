"""Helpers for worker tests: the probe plugin's source, wheel building, process inspection.

The probe plugin does whatever `request.config["mode"]` says, so that one
installed wheel (per session: pip costs a second) serves most cases; plugins
that misbehave at import time get wheels of their own.
"""

from __future__ import annotations

import re
import threading
import time
from pathlib import Path
from typing import Any

from worker_processes import alive, identity, token, worker_pids  # noqa: F401 - re-exported for the worker tests

from aperio_hookspecs import SyncRequest
from aperio_plugins import HostSettings, TrustMode
from aperio_plugins.testing import PluginWheel
from aperio_plugins.worker import WorkerPlugin, WorkerSettings
from aperio_plugins.worker import _protocol as protocol

PROBE_ID = "acme.probe"

PROBE_SOURCE = """
import ctypes, fcntl, json, os, stat, sys, time
from aperio_hookspecs import (
    ActionDefinition, Connector, DeliveryReceipt, Destination, RemediationHandler, RemediationResult,
    SyncResult, hookimpl,
)


# Which process answered, in words the host can check from outside the sandbox (tests/worker_processes.py).
_WHO = open("/proc/self/stat", "rb").read().rsplit(b")", 1)[1].split()[19].decode()


def _ok(context, request, cursor=None):
    return SyncResult(connector="probe", next_cursor=cursor if cursor is not None else _WHO)


def _protocol_pipes():
    # The worker keeps its protocol pipe on a private descriptor; a hostile plugin can still find it.
    for name in os.listdir("/proc/self/fd"):
        fd = int(name)
        try:
            if fd > 2 and stat.S_ISFIFO(os.fstat(fd).st_mode) and fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_ACCMODE == os.O_WRONLY:
                yield fd
        except OSError:
            pass


def _raise(context, request):
    raise ConnectionError("provider unreachable")


def _freeze(context, request):
    # Stop the whole worker a moment after answering: it will answer no heartbeat.
    import signal, threading
    threading.Timer(0.2, os.kill, (os.getpid(), signal.SIGSTOP)).start()
    return _ok(context, request)


def _memory(context, request):
    hoard = []
    while True:
        hoard.append(bytearray(32 * 1024 * 1024))


def _stderr(context, request):
    long_line = b"y" * (1 << 20)
    for _ in range(int(request.config["long_mb"])):
        os.write(2, long_line)
    os.write(2, b"\\n")
    block = (b"x" * 99 + b"\\n") * 655  # 64 KiB of short lines
    for _ in range(int(request.config["short_mb"]) * 16):
        os.write(2, block)
    return _ok(context, request)


MODES = {
    "ok": _ok,
    "secret": lambda c, r: _ok(c, r, c.credentials.get(r.config["scope"]).secret.get_secret_value()),
    "scopes": lambda c, r: _ok(c, r, ",".join(sorted(c.credentials.scopes))),
    "kv": lambda c, r: (c.kv.set("count", str(int(c.kv.get("count") or 0) + 1)), c.kv.set("seen", "yes"),
                        _ok(c, r, c.kv.get("count") + "|" + ",".join(c.kv.keys())))[-1],
    "kv_bytes": lambda c, r: c.kv.set("raw", b"bytes"),
    "log": lambda c, r: (c.logger.bind(step="fetch").info("probe.fetched", items=3), _ok(c, r))[-1],
    "raise": _raise,
    "malformed": lambda c, r: {"connector": "probe", "events": [{"id": "e1"}]},
    "unencodable": lambda c, r: object(),
    "hang": lambda c, r: time.sleep(3600),
    "sleep": lambda c, r: (time.sleep(float(r.config["seconds"])), _ok(c, r, "late"))[-1],
    "exit": lambda c, r: os._exit(int(r.config.get("status", 1))),
    "segv": lambda c, r: ctypes.string_at(0),
    "memory": _memory,
    "stderr": _stderr,
    "garbage": lambda c, r: ([os.write(fd, b"\\xde\\xad\\xbe\\xef not a frame") for fd in _protocol_pipes()], _ok(c, r))[-1],
    "print": lambda c, r: (print("a plugin printing to stdout"), _ok(c, r, "printed"))[-1],
    "env": lambda c, r: _ok(c, r, json.dumps(dict(os.environ))),
    "cwd": lambda c, r: _ok(c, r, os.getcwd()),
    "limits": lambda c, r: _ok(c, r, open("/proc/self/limits").read()),
    "echo": lambda c, r: _ok(c, r, r.config["value"] + (c.kv.get("missing") or "")),
    "freeze": _freeze,
    "deadline": lambda c, r: _ok(c, r, f"{c.remaining():.1f}|{c.invocation_id}|{c.plugin_id}"),
}


class Probe(Connector):
    name = "probe"
    provider = "test"
    description = "does what its request says"

    def sync(self, context, request):
        return MODES[request.config.get("mode", "ok")](context, request)


class Quarantine(RemediationHandler):
    action = ActionDefinition(
        name="probe.quarantine", provider="test", title="Quarantine a file", description="moves a file away",
        resource_types=("file",), destructive=True,
    )

    def remediate(self, context, request):
        return RemediationResult(request_id=request.id, action=request.action, status="succeeded", detail=_WHO)


class Sink(Destination):
    name = "probe-sink"
    description = "accepts every envelope"

    def deliver(self, context, batch):
        return DeliveryReceipt(destination="probe-sink", accepted=[envelope.id for envelope in batch.envelopes])


@hookimpl
def aperio_register_connectors(register):
    register(Probe())


@hookimpl
def aperio_register_remediations(register):
    register(Quarantine())


@hookimpl
def aperio_register_destinations(register):
    register(Sink())


@hookimpl(trylast=True)
def aperio_finding_raised(finding):
    if finding.title == "unencodable":
        return {1, 2}
    if finding.title == "raise":
        raise ValueError("cannot handle finding " + finding.id)
    return {"seen": finding.id, "severity": finding.severity.value, "echo": finding}
"""

KINDS = ("connector", "remediation", "destination")

FAST = WorkerSettings(
    start_timeout=30.0,
    grace_period=1.0,
    heartbeat_interval=5.0,
    stop_timeout=2.0,
    kill_timeout=1.0,
    restart_initial_delay=0.05,
    restart_max_delay=0.5,
)


def build_plugin(directory: Path, plugin_id: str, source: str, **options: Any) -> Path:
    """Build a plugin wheel whose only module is `source`; return its path."""
    package = plugin_id.replace(".", "_").replace("-", "_")
    options.setdefault("kinds", KINDS)
    wheel = PluginWheel(
        package.replace("_", "-"), plugins={plugin_id: package}, files={f"{package}/__init__.py": source}, **options
    )
    return wheel.build(directory)


def host_settings(plugins_dir: Path, state: Path) -> HostSettings:
    return HostSettings(
        plugins_dir=plugins_dir,
        state_dir=state / "state",
        plugin_trusted_keys_dir=state / "keys",
        plugin_trusted_identities=state / "trusted-identities.toml",
        plugin_trust_mode=TrustMode.WARN,
    )


def connector_of(plugin: WorkerPlugin) -> Any:
    """Return the connector proxy the plugin registers, through its registration hook as the host calls it."""
    registered: list[Any] = []
    plugin.aperio_register_connectors(registered.append)  # type: ignore[attr-defined]
    return registered[0]


def sync(plugin: WorkerPlugin, context: Any, **config: Any) -> Any:
    return connector_of(plugin).sync(context, SyncRequest(connector="probe", config=config))


def peak_rss_kib() -> int:
    """The peak resident size of this process since the last `reset_peak_rss()`."""
    return int(re.search(r"VmHWM:\s+(\d+)", Path("/proc/self/status").read_text()).group(1))  # type: ignore[union-attr]


def reset_peak_rss() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def send_frame(fd: int, message: list[Any]) -> None:
    """Write `message` to `fd` as one protocol frame, as the other side of a channel would."""
    protocol.write_frame(fd, protocol.pack(message))


def send_frame_later(fd: int, message: list[Any], delay: float) -> threading.Thread:
    """Write `message` as one frame after `delay` seconds, from a thread; join the thread returned."""

    def send() -> None:
        time.sleep(delay)
        send_frame(fd, message)

    thread = threading.Thread(target=send)
    thread.start()
    return thread
