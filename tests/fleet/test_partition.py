"""A real partition of ONE host: `aperio serve` host-b reaches PostgreSQL through a TCP proxy
(tests/tcp_proxy.py) that the test cuts and heals, while host-a keeps its direct connection.

During the cut host-b serves with its last known state (enable flags, plugins, the tokens it had
verified), says so in `/readyz`, refuses changes that need the shared state with a 503 and a
reason, and holds its audit events; after healing it catches up within 2 s and the held events
are in the shared trail, each once. Also: a pinned release refused for an untrusted signature is
retried with backoff, and converges once the key is trusted, without a new pin."""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from itertools import count
from pathlib import Path
from typing import Any

import httpx
import pytest
from fleet_hosts import Fleet, Served, wait_for
from plugin_builders import connector_wheel
from postgres_server import PostgresServer
from tcp_proxy import TcpProxy

from aperio_plugins.testing import generate_signing_key, install_wheels, sign_wheel_with_key

CAUGHT_UP = 2.0  # seconds: decisions made elsewhere during the cut reach the healed host within this
RUNS_DURING_CUT = 3
SYNC = {"kind": "sync_request", "connector": "acme_conn", "config": {}}
_databases = count(1)


@dataclass
class PartitionedFleet(Fleet):
    """A fleet whose hosts in `through_proxy` reach the database through the proxy's port."""

    proxied_url: str = ""
    through_proxy: set[str] = field(default_factory=set)

    def environment(self, name: str) -> dict[str, str]:
        environment = super().environment(name)
        if name in self.through_proxy:
            environment["APERIO_STATE_URL"] = self.proxied_url
        return environment


@dataclass
class StrictFleet(Fleet):
    """Hosts in strict trust mode that trust the keys in `keys` (none at first)."""

    keys: Path = Path()

    def environment(self, name: str) -> dict[str, str]:
        return {
            **super().environment(name),
            "APERIO_PLUGIN_TRUST_MODE": "strict",
            "APERIO_PLUGIN_TRUSTED_KEYS_DIR": str(self.keys),
        }


@pytest.fixture
def partitioned(postgres_server: PostgresServer, tmp_path: Path) -> Iterator[tuple[PartitionedFleet, TcpProxy]]:
    url = postgres_server.create_database(f"partition_{next(_databases)}")
    with TcpProxy(postgres_server.port) as proxy:
        made = PartitionedFleet(
            tmp_path,
            {"APERIO_STATE_URL": url},
            [],
            proxied_url=url.replace(f":{postgres_server.port}/", f":{proxy.port}/"),
            through_proxy={"host-b"},
        )
        try:
            yield made, proxy
        finally:
            for host in made.hosts:
                if host.process.poll() is None:
                    host.process.kill()
                    host.process.wait(timeout=30)


def _token(fleet: Fleet, name: str, *permissions: str, on: str = "host-a") -> str:
    created = fleet.aperio("token", "create", name, *(f"--permission={p}" for p in permissions), on=on)
    assert created.returncode == 0, created.stderr
    return next(word for word in (created.stdout + created.stderr).split() if word.startswith("aperio_"))


def _run(served: Served, token: str) -> httpx.Response:
    return httpx.post(
        f"{served.url}/api/v1/plugins/acme.conn/run",
        json=SYNC,
        headers={"Authorization": f"Bearer {token}"},
        timeout=15,
    )


def _trail(served: Served, token: str, **params: str) -> list[dict[str, Any]]:
    response = served.get("/api/v1/events", token, params={**params, "limit": 500})
    assert response.status_code == 200, response.text
    return list(response.json()["events"])


def _outcomes(events: list[dict[str, Any]], host: str) -> list[str]:
    return sorted(str(event["fields"].get("outcome")) for event in events if event["host"] == host)


def test_a_host_cut_off_from_postgresql_serves_with_its_last_known_state(
    partitioned: tuple[PartitionedFleet, TcpProxy], tmp_path: Path
) -> None:
    fleet, proxy = partitioned
    wheel = connector_wheel(tmp_path / "wheels", "acme.conn")
    for name in ("host-a", "host-b"):
        install_wheels([wheel], target=fleet.plugins_dir(name))
    a, b = fleet.start("host-a"), fleet.start("host-b")
    admin = fleet.token
    assert admin is not None
    ops = _token(fleet, "ops", "plugins:read", "plugins:execute")
    seen_revoked = _token(fleet, "seen-revoked", "plugins:read")
    late = _token(fleet, "late", "plugins:read")
    assert b.state_of("acme.conn", admin) == "enabled"
    for token in (ops, seen_revoked, late):
        assert b.get("/api/v1/plugins", token).status_code == 200  # host-b has verified each of them
    # Revoked on host-a and never presented to host-b again: host-b's agent refreshes the records
    # it keeps on its passes (every 0.5 s), so the revocation is known to it before the cut.
    assert fleet.aperio("token", "revoke", "seen-revoked").returncode == 0
    time.sleep(1.5)

    def refused_on_b(actor: str) -> int:
        events = _trail(a, admin, event="api.auth.refused", actor=actor)
        return sum(1 for event in events if event["host"] == "host-b")

    assert _run(b, ops).status_code == 200
    assert proxy.live_connections > 0  # host-b's pool and listener really go through the proxy

    proxy.cut()
    wait_for(lambda: b.get("/readyz").status_code == 503, 15, interval=0.2)
    ready = b.get("/readyz").json()
    assert ready["status"].startswith("state store unavailable, serving with the last known state"), ready
    assert b.get("/healthz").status_code == 200
    assert a.get("/readyz").status_code == 200  # only host-b is cut off

    # Decisions made elsewhere during the cut: they cannot reach host-b yet.
    assert a.post("/api/v1/plugins/acme.conn/disable", admin).status_code == 200
    assert fleet.aperio("token", "revoke", "late").returncode == 0
    never_seen = _token(fleet, "never-seen", "plugins:read")

    # host-b keeps serving with what it last knew: its plugins, their flags, the tokens it verified.
    started = time.monotonic()
    assert b.state_of("acme.conn", admin) == "enabled"
    for _ in range(RUNS_DURING_CUT):
        assert _run(b, ops).status_code == 200
    assert time.monotonic() - started < 5  # no request waits for the database
    assert b.get("/api/v1/plugins", seen_revoked).status_code == 401  # a revocation seen before is honoured
    assert b.get("/api/v1/plugins", late).status_code == 200  # revoked during the cut: known after healing
    refused = b.get("/api/v1/plugins", never_seen)
    assert refused.status_code == 503
    assert "has not checked this token before" in refused.json()["detail"]

    # Changes that need the shared state: 503 with a reason; nothing changed on host-b.
    enabling = b.post("/api/v1/plugins/acme.conn/enable", admin)
    assert enabling.status_code == 503, enabling.text
    assert "shared state store is out of reach" in enabling.json()["detail"]
    assert enabling.headers["retry-after"] == "5"
    assert b.state_of("acme.conn", admin) == "enabled"
    for command in (("token", "create", "x", "--permission=plugins:read"), ("fleet", "pin", str(tmp_path / "x"))):
        cli = fleet.aperio(*command, on="host-b")
        assert cli.returncode != 0
        assert "Traceback" not in cli.stderr
        assert len(cli.stderr.strip().splitlines()) == 1, cli.stderr
    assert a.state_of("acme.conn", admin) == "disabled"

    proxy.heal()
    healed = time.monotonic()
    wait_for(lambda: b.state_of("acme.conn", admin) == "disabled", CAUGHT_UP + 1)
    took = time.monotonic() - healed
    assert took < CAUGHT_UP, took
    wait_for(lambda: b.get("/readyz").status_code == 200, CAUGHT_UP)
    assert b.get("/api/v1/plugins", late).status_code == 401
    assert b.get("/api/v1/plugins", never_seen).status_code == 200

    # Held audit events reach the shared trail, each once (read on host-a, which was never cut).
    def runs_on_b() -> list[str]:
        return _outcomes(_trail(a, admin, plugin_id="acme.conn", event="api.plugin.run"), "host-b")

    wait_for(lambda: len(runs_on_b()) == 1 + RUNS_DURING_CUT, 10, interval=0.2)
    refusals = _outcomes(_trail(a, admin, plugin_id="acme.conn", event="api.plugin.enable"), "host-b")
    assert refusals == ["503"]
    assert refused_on_b("seen-revoked") == 1  # the refusal during the cut, held and written
    time.sleep(1.5)  # more passes of host-b's agent: nothing is written twice
    assert runs_on_b() == ["ok"] * (1 + RUNS_DURING_CUT)
    disabled_events = _trail(a, admin, plugin_id="acme.conn", event="plugin.disabled")
    assert [(e["actor"], e["host"]) for e in disabled_events] == [("admin", "host-a")]
    assert a.stop() == 0
    assert b.stop() == 0
    assert "serving with the last known state" in b.output
    assert "Traceback" not in b.output


def test_a_refused_pinned_release_is_retried_with_backoff_until_the_key_is_trusted(tmp_path: Path) -> None:
    keys = tmp_path / "trusted-keys"
    keys.mkdir()
    fleet = StrictFleet(tmp_path, {"APERIO_STATE_DIR": str(tmp_path / "shared-state")}, [], keys=keys)
    marker = tmp_path / "imported.txt"
    private, public = generate_signing_key(tmp_path / "signer")
    wheel = sign_wheel_with_key(connector_wheel(tmp_path / "wheels", "acme.signed", marker=marker), private)
    lock = {
        "format_version": 1,
        "plugins": [
            {
                "plugin_ids": ["acme.signed"],
                "distribution": "acme-signed",
                "version": "1.0.0",
                "sha256": hashlib.sha256(wheel.read_bytes()).hexdigest(),
                "source": wheel.resolve().as_uri(),
            }
        ],
    }
    (tmp_path / "fleet.lock").write_text(json.dumps(lock))

    served = fleet.start("host-a")
    try:
        token = fleet.token
        assert token is not None
        assert fleet.aperio("fleet", "pin", str(tmp_path / "fleet.lock")).returncode == 0

        def host_view() -> dict[str, Any]:
            hosts = served.get("/api/v1/fleet", token).json()["hosts"]
            return dict(hosts[0]) if hosts else {}

        wait_for(lambda: bool(host_view().get("refusals")), 30, interval=0.3)
        view = host_view()
        assert "acme.signed" in view["refusals"][0]["plugin_ids"]
        assert view["retry"] is not None
        first_due = view["retry"]["next_attempt_at"]
        status = fleet.aperio("fleet", "status")
        assert "refused releases retried at" in status.stdout, status.stdout
        # Retried again and still refused: the next attempt moves further out (backoff).
        wait_for(lambda: (host_view().get("retry") or {}).get("retries", 0) >= 1, 15, interval=0.3)
        retried = host_view()["retry"]
        assert retried["next_attempt_at"] > first_due
        assert not any(path.name.startswith("acme_signed") for path in fleet.plugins_dir("host-a").iterdir())
        assert not marker.exists()  # refused code never ran

        shutil.copy(public, keys / public.name)  # the operator fixes the cause; no new pin
        wait_for(lambda: served.get("/api/v1/plugins/acme.signed", token).status_code == 200, 30, interval=0.3)
        wait_for(lambda: not host_view().get("refusals") and host_view().get("retry") is None, 10, interval=0.3)
        info = served.get("/api/v1/plugins/acme.signed", token).json()
        assert info["state"] == "enabled", (info["error"], info["signature_status"])
        assert served.stop() == 0
    finally:
        if served.process.poll() is None:
            served.process.kill()
