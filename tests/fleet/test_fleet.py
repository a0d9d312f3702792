"""A fleet of real `aperio serve` processes on one state store (PostgreSQL with LISTEN/NOTIFY, and
one SQLite file, polled): decisions made on one host reach the others within 2 s and are audited
once with actor and origin host; a revoked token is refused everywhere; every host converges to
the pinned lock and reports what it refused; a host that stops beating leaves the status."""

from __future__ import annotations

import hashlib
import json
import shutil
import signal
from pathlib import Path

import pytest
from fleet_hosts import Fleet, wait_for
from plugin_builders import connector_wheel
from postgres_server import MISSING, find_bindir, start_server

from aperio_plugins.testing import install_wheels

PROPAGATION = 2.0  # seconds: the bound for a decision to reach every host


def _events(fleet: Fleet, served, **params: str) -> list[dict]:
    return served.get("/api/v1/events", fleet.token, params={**params, "limit": 500}).json()["events"]


def test_disable_and_enable_reach_every_host_and_are_audited_once(fleet: Fleet, tmp_path: Path) -> None:
    wheel = connector_wheel(tmp_path / "wheels", "acme.conn")
    for name in ("host-a", "host-b"):
        install_wheels([wheel], target=fleet.plugins_dir(name))
    a, b = fleet.start("host-a"), fleet.start("host-b")
    token = fleet.token
    assert token is not None
    assert a.state_of("acme.conn", token) == b.state_of("acme.conn", token) == "enabled"

    assert a.post("/api/v1/plugins/acme.conn/disable", token).status_code == 200
    took = wait_for(lambda: b.state_of("acme.conn", token) == "disabled", PROPAGATION)
    assert took < PROPAGATION
    # Enabled again from the CLI on host A's machine: the CLI's decision reaches both servers.
    enabled = fleet.aperio("plugin", "enable", "acme.conn", on="host-a")
    assert enabled.returncode == 0, enabled.stderr
    wait_for(lambda: b.state_of("acme.conn", token) == "enabled", PROPAGATION)
    wait_for(lambda: a.state_of("acme.conn", token) == "enabled", PROPAGATION)

    # An isolation choice made on A: B reloads the plugin into a worker process.
    assert b.get("/api/v1/plugins/acme.conn", token).json()["worker_pid"] is None
    isolated = fleet.aperio("plugin", "isolate", "acme.conn", "process", on="host-a")
    assert isolated.returncode == 0, isolated.stderr

    def in_worker(served) -> bool:
        return served.get("/api/v1/plugins/acme.conn", token).json()["worker_pid"] is not None

    wait_for(lambda: in_worker(b), PROPAGATION)
    wait_for(lambda: in_worker(a), PROPAGATION)
    assert b.state_of("acme.conn", token) == "enabled"
    assert len(_events(fleet, b, plugin_id="acme.conn", event="plugin.isolation.set")) == 1

    disabled = _events(fleet, b, plugin_id="acme.conn", event="plugin.disabled")
    assert [(e["actor"], e["host"]) for e in disabled] == [("admin", "host-a")]  # once, not once per host
    by_cli = [
        e for e in _events(fleet, b, plugin_id="acme.conn", event="plugin.enabled") if e["fields"].get("persisted")
    ]
    assert len(by_cli) == 1
    assert by_cli[0]["actor"].startswith("cli")
    assert by_cli[0]["host"] == "host-a"
    assert a.stop() == 0
    assert b.stop() == 0


def test_a_token_revoked_on_one_host_is_refused_on_the_others(fleet: Fleet) -> None:
    a, b = fleet.start("host-a"), fleet.start("host-b")
    created = fleet.aperio("token", "create", "ops", "--permission", "plugins:read", on="host-b")
    assert created.returncode == 0, created.stderr
    ops = next(word for word in (created.stdout + created.stderr).split() if word.startswith("aperio_"))
    assert a.get("/api/v1/plugins", ops).status_code == 200
    revoked = fleet.aperio("token", "revoke", "ops", on="host-b")
    assert revoked.returncode == 0, revoked.stderr
    wait_for(lambda: a.get("/api/v1/plugins", ops).status_code == 401, PROPAGATION)
    events = _events(fleet, a, event="token.revoked")
    assert [(e["fields"]["name"], e["host"]) for e in events] == [("ops", "host-b")]
    assert a.stop() == 0
    assert b.stop() == 0


def _lock(wheel: Path, plugin_id: str, distribution: str, version: str, sha256: str | None = None) -> dict:
    return {
        "plugin_ids": [plugin_id],
        "distribution": distribution,
        "version": version,
        "sha256": sha256 or hashlib.sha256(wheel.read_bytes()).hexdigest(),
        "source": wheel.resolve().as_uri(),
    }


def test_every_host_converges_to_the_pinned_lock_and_reports_refusals(fleet: Fleet, tmp_path: Path) -> None:
    good = connector_wheel(tmp_path / "wheels", "acme.pinned", version="1.2.0")
    marker = tmp_path / "imported-bad.txt"
    bad = connector_wheel(tmp_path / "wheels", "acme.tampered", marker=marker)
    a, b = fleet.start("host-a"), fleet.start("host-b")
    token = fleet.token
    assert token is not None
    lock_file = tmp_path / "fleet.lock"
    releases = [
        _lock(good, "acme.pinned", "acme-pinned", "1.2.0"),
        # The digest pinned is not the wheel's: every host must refuse it and install nothing of it.
        _lock(bad, "acme.tampered", "acme-tampered", "1.0.0", sha256="0" * 64),
    ]
    lock_file.write_text(json.dumps({"format_version": 1, "plugins": releases}))
    pinned = fleet.aperio("fleet", "pin", str(lock_file))
    assert pinned.returncode == 0, pinned.stderr
    assert "revision 1" in pinned.stdout

    def converged() -> bool:
        hosts = {h["host"]: h for h in b.get("/api/v1/fleet", token).json()["hosts"]}
        return all(
            name in hosts
            and hosts[name]["lock_revision"] == 1
            and any(p["id"] == "acme.pinned" and p["state"] == "enabled" for p in hosts[name]["plugins"])
            for name in ("host-a", "host-b")
        )

    wait_for(converged, 60, interval=0.3)
    assert a.state_of("acme.pinned", token) == b.state_of("acme.pinned", token) == "enabled"
    view = b.get("/api/v1/fleet", token).json()
    assert view["lock"]["revision"] == 1
    assert view["lock"]["pinned_on"] == "host-a"
    for host in view["hosts"]:
        [refusal] = host["refusals"]
        assert refusal["plugin_ids"] == ["acme.tampered"]
        assert "sha256" in refusal["reason"] or "digest" in refusal["reason"], refusal["reason"]
    for name in ("host-a", "host-b"):
        listed = {path.name for path in fleet.plugins_dir(name).iterdir()}
        assert any(entry.startswith("acme_pinned") for entry in listed)
        assert not any("tampered" in entry for entry in listed), listed  # nothing half-installed
    assert not marker.exists()  # the refused plugin's code never ran
    assert b.get("/api/v1/fleet").status_code == 401

    status = fleet.aperio("fleet", "status")
    assert status.returncode == 0, status.stderr
    assert "host-a" in status.stdout
    assert "host-b" in status.stdout
    assert "could not install acme.tampered" in status.stdout
    assert a.stop() == 0
    assert b.stop() == 0


def test_a_host_that_stops_beating_leaves_the_status_after_the_ttl(fleet: Fleet) -> None:
    a, b = fleet.start("host-a"), fleet.start("host-b")

    def live() -> set[str]:
        shown = json.loads(fleet.aperio("fleet", "status", "--json").stdout)
        return {host["host"] for host in shown["hosts"]}

    wait_for(lambda: live() == {"host-a", "host-b"}, 10, interval=0.5)
    b.process.send_signal(signal.SIGKILL)  # no clean stop: only the TTL removes it
    b.process.wait(timeout=30)
    assert "host-b" in live()
    wait_for(lambda: live() == {"host-a"}, 20, interval=1.0)
    assert a.stop() == 0  # a clean stop removes a host at once
    wait_for(lambda: live() == set(), 5, interval=0.5)


def test_a_host_cut_off_from_postgresql_says_so_and_catches_up_after(tmp_path: Path) -> None:
    bindir = find_bindir()
    if bindir is None:
        pytest.skip(MISSING)
    # A server of its own: stopping the session's would cut every other test off too.
    server = start_server(bindir)
    fleet = Fleet(tmp_path, {"APERIO_STATE_URL": server.create_database("partition")}, [])
    try:
        wheel = connector_wheel(tmp_path / "wheels", "acme.conn")
        for name in ("host-a", "host-b"):
            install_wheels([wheel], target=fleet.plugins_dir(name))
        a, b = fleet.start("host-a"), fleet.start("host-b")
        token = fleet.token
        assert token is not None
        assert a.post("/api/v1/plugins/acme.conn/disable", token).status_code == 200
        wait_for(lambda: b.state_of("acme.conn", token) == "disabled", PROPAGATION)

        server.stop()
        wait_for(lambda: b.get("/readyz").status_code == 503, 15, interval=0.2)
        ready = b.get("/readyz").json()
        assert ready["status"].startswith("state store unavailable"), ready
        assert b.get("/healthz").status_code == 200  # still serving, with the last state it knew
        assert b.process.poll() is None

        server.start()
        wait_for(lambda: b.get("/readyz").status_code == 200, 30, interval=0.2)
        wait_for(lambda: a.get("/readyz").status_code == 200, 30, interval=0.2)
        assert b.state_of("acme.conn", token) == "disabled"  # nothing lost
        assert a.post("/api/v1/plugins/acme.conn/enable", token).status_code == 200
        wait_for(lambda: b.state_of("acme.conn", token) == "enabled", PROPAGATION)
        assert a.stop() == 0
        assert b.stop() == 0
        assert "state store unavailable" in b.output  # logged, not a traceback
        assert "Traceback" not in b.output
    finally:
        for host in fleet.hosts:
            if host.process.poll() is None:
                host.process.kill()
        server.stop()
        shutil.rmtree(server.directory, ignore_errors=True)


def test_pinning_an_unreadable_or_invalid_lock_is_refused_in_one_line(tmp_path: Path) -> None:
    fleet = Fleet(tmp_path, {"APERIO_STATE_DIR": str(tmp_path / "shared-state")}, [])
    missing = fleet.aperio("fleet", "pin", str(tmp_path / "nope.lock"))
    assert missing.returncode == 1
    assert "cannot read lock file" in missing.stderr
    assert "Traceback" not in missing.stderr
    invalid = tmp_path / "bad.lock"
    invalid.write_text(json.dumps({"format_version": 1, "plugins": [{"plugin_ids": []}]}))
    refused = fleet.aperio("fleet", "pin", str(invalid))
    assert refused.returncode == 1
    assert "is invalid" in refused.stderr
    status = json.loads(fleet.aperio("fleet", "status", "--json").stdout)
    assert status == {"lock": None, "hosts": []}  # nothing was pinned
