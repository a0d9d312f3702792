"""A host process for the outbox tests: loads the real Splunk HEC example and runs its dispatcher.

    python outbox_host.py dispatch   # deliver until nothing is queued (or until killed)
    python outbox_host.py enqueue N SIZE URL  # queue N batches of SIZE events for splunk-hec at URL

The state store comes from the environment (`APERIO_STATE_DIR` or `APERIO_STATE_URL`), the policy
from `APERIO_OUTBOX_*`, as in `aperio serve`.
"""

from __future__ import annotations

import sys
import time
from datetime import datetime, timezone

from hec_receiver import TOKEN

from aperio_hookspecs import Event
from aperio_plugins import HostSettings, PluginHost
from aperio_plugins._dispatch import Dispatcher, DispatchPolicy
from aperio_plugins._state_url import open_state_store


def events(batch: int, size: int) -> list[Event]:
    when = datetime(2026, 12, 7, tzinfo=timezone.utc)
    return [
        Event(id=f"b{batch}-e{n}", provider="outbox-test", type="test.event", occurred_at=when, raw={"n": n})
        for n in range(size)
    ]


def main(argv: list[str]) -> int:
    settings = HostSettings()
    store = open_state_store(settings)
    host = PluginHost(
        settings,
        search_path=sys.path,
        state_store=store,
        credential_provider=lambda plugin_id, scope: TOKEN,
        discovery_cache=False,
    )
    host.load(only=["aperio.splunk-hec"])
    if argv[0] == "enqueue":
        count, size, url = int(argv[1]), int(argv[2]), argv[3]
        config = {"url": url, "max_batch_bytes": 1200, "max_retries": 0}
        for batch in range(count):
            print(host.deliver("splunk-hec", events(batch, size), config), flush=True)
        return 0
    dispatcher = Dispatcher(host, store, DispatchPolicy.from_environment())
    print("ready", flush=True)
    while True:
        dispatcher.drain()
        queued = sum(c.batches for c in store.outbox_counts() if c.state.value == "queued")
        if queued == 0:
            return 0
        time.sleep(0.1)  # leases of a killed host still running out


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
