"""A PostgreSQL restart under a running host: the pool replaces the dropped connections, nothing is lost."""

from __future__ import annotations

from aperio_plugins._state_postgres import PostgresStateStore


def test_a_store_keeps_working_after_the_server_restarts(postgres_server):
    url = postgres_server.create_database("restarted")
    store = PostgresStateStore(url, pool_size=3)
    try:
        store.set_enabled("acme.a", False)
        store.kv_set("acme.a", "cursor", "1")
        postgres_server.stop()
        postgres_server.start()
        # Every pooled connection was cut by the restart; each call gets a live one.
        assert store.enabled_flags() == {"acme.a": False}
        for value in range(5):
            store.kv_set("acme.a", "cursor", str(value))
        assert store.kv_get("acme.a", "cursor") == "4"
    finally:
        store.close()
