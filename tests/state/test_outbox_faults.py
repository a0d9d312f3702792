"""Nothing lost when the delivering host dies: real host processes, SIGKILLed 20 times mid-batch while the
Splunk HEC example (a fresh build, API 1.2) posts to a HEC receiver on 127.0.0.1, on both backends.
The next host takes each dead host's batches over when their lease runs out."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

import pytest
from hec_receiver import hec_receiver

TESTS = Path(__file__).resolve().parents[1]
SPLUNK_HEC = TESTS.parent / "example_plugins" / "splunk-hec"
KILLS = 20
BATCHES, EVENTS_PER_BATCH = 30, 10


@pytest.fixture(scope="module")
def fresh_splunk_hec(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The Splunk HEC example as this tree has it, installed by pip into a directory of its own."""
    target = tmp_path_factory.mktemp("splunk-hec-site")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-deps",
            "--no-build-isolation",
            "--target",
            str(target),
            str(SPLUNK_HEC),
        ],
        check=True,
    )
    return target


def _environment(backend, tmp_path: Path, site: Path) -> dict[str, str]:
    environment = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(site), str(TESTS)]),
        "APERIO_PLUGINS_DIR": str(tmp_path / "plugins"),
        "APERIO_PLUGIN_TRUSTED_KEYS_DIR": str(tmp_path / "keys"),
        "APERIO_PLUGIN_TRUSTED_IDENTITIES": str(tmp_path / "identities.toml"),
        "APERIO_PLUGIN_TRUST_MODE": "disabled",
        "APERIO_ENVIRONMENT": "development",
        "APERIO_OUTBOX_LEASE": "1",
        "APERIO_OUTBOX_MAX_ATTEMPTS": "1000",  # every kill spends an attempt; none may dead-letter here
        "APERIO_OUTBOX_BASE_DELAY": "0.05",
        "APERIO_OUTBOX_MAX_DELAY": "0.2",
    }
    if backend.name == "sqlite":
        environment["APERIO_STATE_DIR"] = str(Path(backend.location).parent)
    else:
        environment["APERIO_STATE_DIR"] = str(tmp_path / "state")
        environment["APERIO_STATE_URL"] = backend.location
    return environment


def _host(environment: dict[str, str], *argv: str) -> subprocess.Popen[str]:
    command = [sys.executable, str(TESTS / "outbox_host.py"), *argv]
    return subprocess.Popen(command, env=environment, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_sigkilled_hosts_lose_no_event_and_duplicates_repeat_their_key(backend, tmp_path, fresh_splunk_hec):
    environment = _environment(backend, tmp_path, fresh_splunk_hec)
    rng = random.Random(14)
    with hec_receiver() as receiver:
        producer = _host(environment, "enqueue", str(BATCHES), str(EVENTS_PER_BATCH), receiver.url)
        out, err = producer.communicate(timeout=120)
        assert producer.returncode == 0, err
        keys = out.split()
        assert len(keys) == len(set(keys)) == BATCHES

        receiver.delay = 0.02  # each chunk takes a moment: a kill lands between chunks of one batch
        kills = 0
        while kills < KILLS:
            seen = receiver.requests
            dispatcher = _host(environment, "dispatch")
            deadline = time.monotonic() + 30
            while receiver.requests == seen and dispatcher.poll() is None and time.monotonic() < deadline:
                time.sleep(0.005)
            assert dispatcher.poll() is None, f"the host finished before it was killed: {dispatcher.stderr.read()}"
            assert receiver.requests > seen, "the host delivered nothing in 30 s"
            time.sleep(rng.uniform(0.0, 0.06))
            dispatcher.send_signal(signal.SIGKILL)
            dispatcher.communicate(timeout=30)
            assert dispatcher.returncode == -signal.SIGKILL
            kills += 1

        receiver.delay = 0.0
        last = _host(environment, "dispatch")
        _, err = last.communicate(timeout=120)
        assert last.returncode == 0, err

    expected = {f"b{batch}-e{n}" for batch in range(BATCHES) for n in range(EVENTS_PER_BATCH)}
    counted = receiver.ids()
    assert set(counted) == expected  # zero events lost, counted at the receiver
    keys_by_batch: dict[str, set[str | None]] = defaultdict(set)
    for key, envelope_id in receiver.indexed:
        keys_by_batch[envelope_id.split("-")[0]].add(key)
    # One key per batch, the same on every redelivery: a duplicate always repeats its key.
    assert all(len(batch_keys) == 1 for batch_keys in keys_by_batch.values())
    assert {key for batch_keys in keys_by_batch.values() for key in batch_keys} == set(keys)
    duplicates = {envelope_id: n for envelope_id, n in counted.items() if n > 1}
    assert duplicates, "no kill landed mid-batch"
    for envelope_id in duplicates:
        assert len(set(receiver.keys_of(envelope_id))) == 1
    print(f"{KILLS} kills: {len(expected)} events, {sum(counted.values()) - len(expected)} duplicate deliveries")
