"""Many clients run plugins while an operator enables, disables, reloads and unloads them, against a
real uvicorn: nothing deadlocks, in-flight calls finish on the code they started with, new calls see
the new state, and no decision or audit record is lost."""

from __future__ import annotations

import concurrent.futures
import time

import pytest

from aperio_plugins import PluginState


def sync(mode: str = "ok", **config) -> dict:
    return {"kind": "sync_request", "connector": "acme_probe", "config": {"mode": mode, **config}}


@pytest.fixture
def api(served, install, probe_wheel):
    install(probe_wheel())
    return served()


def test_in_flight_calls_finish_on_the_code_they_started_with(api, install, probe_wheel):
    runner = api.client("admin")
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        slow = [
            pool.submit(runner.post, "/api/v1/plugins/acme.probe/run", json=sync("slow", seconds=1.0)) for _ in range(6)
        ]
        time.sleep(0.3)  # all six are inside the plugin now
        install(probe_wheel(version="2.0.0"))
        reloaded = api.client("admin").post("/api/v1/plugins/acme.probe/reload").json()
        assert reloaded["plugin"]["version"] == "2.0.0"
        fresh = api.client("admin").post("/api/v1/plugins/acme.probe/run", json=sync()).json()
        answers = [future.result(timeout=30) for future in slow]
    assert [a.status_code for a in answers] == [200] * 6
    assert {a.json()["result"]["next_cursor"] for a in answers} == {"1.0.0"}
    assert fresh["result"]["next_cursor"] == "2.0.0"


def test_many_clients_and_lifecycle_changes_neither_deadlock_nor_lose_state(api, marker):
    clients, runs_each, cycles = 16, 12, 6
    actions = ["disable", "enable", "reload", "unload", "reload"]  # reload after unload brings it back

    def client_loop(index: int) -> list[tuple[int, str | None]]:
        client = api.client("runner", timeout=30)
        seen = []
        for _ in range(runs_each):
            response = client.post("/api/v1/plugins/acme.probe/run", json=sync("slow", seconds=0.01))
            seen.append((response.status_code, response.json().get("result", {}).get("next_cursor")))
        return seen

    def operator_loop() -> list[tuple[str, int, str]]:
        client = api.client("operator", timeout=30)
        done = []
        for _ in range(cycles):
            for action in actions:
                if action == "unload":
                    response = client.delete("/api/v1/plugins/acme.probe")
                else:
                    response = client.post(f"/api/v1/plugins/acme.probe/{action}")
                done.append((action, response.status_code, response.json()["plugin"]["state"]))
        return done

    started = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(clients + 1) as pool:
        operator = pool.submit(operator_loop)
        runners = [pool.submit(client_loop, index) for index in range(clients)]
        done = operator.result(timeout=120)
        results = [item for future in runners for item in future.result(timeout=120)]
    elapsed = time.monotonic() - started
    assert elapsed < 120
    # Every change applied and answered with the state it produced.
    expected = {"disable": "disabled", "enable": "enabled", "reload": "enabled", "unload": "unloaded"}
    assert [(action, status, state) for action, status, state in done] == [
        (action, 200, expected[action]) for _ in range(cycles) for action in actions
    ]
    # A run either ran (on the one version there is) or was refused because the plugin was not enabled.
    assert len(results) == clients * runs_each
    assert set(results) <= {(200, "1.0.0"), (409, None)}
    ran = sum(1 for status, _ in results if status == 200)
    assert ran > 0
    assert len(marker.read_text().splitlines()) == ran  # every accepted run reached the plugin once, no more
    # State: the last action wins, in memory and in the store; nothing went missing from the trail.
    assert api.host.get("acme.probe").state is PluginState.ENABLED
    assert api.store.enabled_flags()["acme.probe"] is True
    audited = [e for e in api.store.audit_events(actor="operator", limit=1000) if e.event.startswith("api.plugin.")]
    assert len(audited) == cycles * len(actions)
    run_audits = api.store.audit_events(event="api.plugin.run", limit=1000)
    assert len(run_audits) == clients * runs_each
    assert api.client("reader").get("/readyz").json()["status"] == "ready"
