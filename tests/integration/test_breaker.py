"""Circuit breakers through the host: open after repeated failures, fail fast, probe, close; one
worker crash is one failure, however many calls it broke (real worker processes, killed from outside)."""

from __future__ import annotations

import os
import re
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import pytest
import structlog
from plugin_builders import FINDING, connector_wheel
from worker_processes import interpreter, token

from aperio_hookspecs import SyncRequest
from aperio_plugins import CircuitOpenError, PluginCallError
from aperio_plugins.errors import WorkerCrashedError
from aperio_plugins.testing import PluginWheel
from aperio_plugins.worker import WorkerSettings

FLAKY = """
import pathlib
from aperio_hookspecs import Connector, SyncResult, hookimpl

CALLS = []
BROKEN = pathlib.Path({flag!r})

def _maybe_fail():
    CALLS.append(1)
    if BROKEN.exists():
        raise ConnectionError("provider down")

class Flaky(Connector):
    name = "flaky"
    provider = "test"

    def sync(self, context, request):
        _maybe_fail()
        return SyncResult(connector="flaky")

@hookimpl
def aperio_register_connectors(register):
    register(Flaky())

@hookimpl
def aperio_finding_raised(finding):
    _maybe_fail()
    return "acme.flaky"
"""


@pytest.fixture
def broken_flag(tmp_path):
    flag = tmp_path / "broken"
    flag.touch()
    return flag


@pytest.fixture
def host(make_host, install, wheel_dir, broken_flag):
    source = FLAKY.format(flag=str(broken_flag))
    install(
        PluginWheel("acme-flaky", plugins={"acme.flaky": "acme_flaky"}, files={"acme_flaky/__init__.py": source}).build(
            wheel_dir
        ),
        connector_wheel(wheel_dir, "acme.steady"),
    )
    host = make_host(settings={"plugin_breaker_failures": 3, "plugin_breaker_window": 60, "plugin_breaker_reset": 0.3})
    host.load()
    return host


def test_a_failing_plugin_is_skipped_once_its_breaker_opens_and_the_others_still_answer(host, audit):
    import acme_flaky

    for _ in range(6):
        assert host.hook.aperio_finding_raised(finding=FINDING) == ["acme.steady"]

    assert len(acme_flaky.CALLS) == 3  # three failures opened the breaker; the next three were not made
    info = host.get("acme.flaky")
    assert info.breaker_state == "open"
    assert info.call_failures == 3
    assert audit.names("acme.flaky").count("plugin.breaker.opened") == 1
    assert host.get("acme.steady").breaker_state == "closed"


def test_run_fails_fast_while_open_then_a_probe_closes_it(host, broken_flag, audit):
    import acme_flaky

    for _ in range(3):
        with pytest.raises(PluginCallError, match="provider down"):
            host.run("acme.flaky", SyncRequest(connector="flaky"))
    with pytest.raises(
        CircuitOpenError, match=r"circuit breaker is open after repeated failures \(next probe in 0\.\ds\)"
    ) as raised:
        host.run("acme.flaky", SyncRequest(connector="flaky"))
    assert 0 < raised.value.retry_in <= 0.3
    assert len(acme_flaky.CALLS) == 3

    broken_flag.unlink()  # the provider recovers
    time.sleep(0.35)
    assert host.run("acme.flaky", SyncRequest(connector="flaky")).connector == "flaky"
    assert host.get("acme.flaky").breaker_state == "closed"
    names = audit.names("acme.flaky")
    assert (
        names.index("plugin.breaker.opened")
        < names.index("plugin.breaker.half_open")
        < names.index("plugin.breaker.closed")
    )


def test_a_failed_probe_opens_the_breaker_again(host):
    import acme_flaky

    for _ in range(3):
        host.hook.aperio_finding_raised(finding=FINDING)
    time.sleep(0.35)
    host.hook.aperio_finding_raised(finding=FINDING)  # the probe, still failing
    assert host.get("acme.flaky").breaker_state == "open"
    host.hook.aperio_finding_raised(finding=FINDING)
    assert len(acme_flaky.CALLS) == 4


def test_a_propagating_hook_fails_fast_with_a_typed_error(make_host, install, wheel_dir):
    class ValidationSpecs:
        from aperio_hookspecs import hookspec, propagate_errors

        @propagate_errors
        @hookspec
        def acme_validate(self, value: str) -> None:
            """Refuse a value by raising."""

    source = (
        "from aperio_hookspecs import hookimpl\n@hookimpl\ndef acme_validate(value):\n    raise ValueError(value)\n"
    )
    install(
        PluginWheel("acme-val", plugins={"acme.val": "acme_val"}, files={"acme_val/__init__.py": source}).build(
            wheel_dir
        )
    )
    host = make_host(hookspecs=[ValidationSpecs], settings={"plugin_breaker_failures": 2})
    host.load()
    for _ in range(2):
        with pytest.raises(PluginCallError, match="ValueError: x"):
            host.hook.acme_validate(value="x")
    with pytest.raises(CircuitOpenError, match="acme_validate not called"):
        host.hook.acme_validate(value="x")


# -- one crash, many callers: real worker processes ------------------------------------------

ECHO = """
import os, pathlib, time
from aperio_hookspecs import Connector, SyncResult, hookimpl

SLOW_START = pathlib.Path({slow_start!r})
if SLOW_START.exists():  # set by the test before it kills the worker: the restart takes this long
    time.sleep(float(SLOW_START.read_text()))

class Echo(Connector):
    name = "echo"
    provider = "test"

    def sync(self, context, request):
        if request.config.get("mode") == "fail":
            raise ConnectionError("provider down")
        time.sleep(float(request.config.get("seconds", 0)))
        # Which process answers, in words the host can check from outside the sandbox (tests/worker_processes.py).
        who = open("/proc/self/stat", "rb").read().rsplit(b")", 1)[1].split()[19].decode()
        return SyncResult(connector="echo", next_cursor=f"{{request.config['value']}}|{{who}}|{{context.remaining():.2f}}")

@hookimpl
def aperio_register_connectors(register):
    register(Echo())
"""


@dataclass
class Outcome:
    value: str
    timeout: float
    started: float
    ended: float
    answer: str | None = None
    error: BaseException | None = None

    @property
    def elapsed(self) -> float:
        return self.ended - self.started


class StampedAudit:
    """The audit trail, with the monotonic time of each event (when the host saw the crash, say)."""

    def __init__(self, audit) -> None:
        self.audit = audit
        self.logger = structlog.wrap_logger(structlog.ReturnLogger(), processors=[self.stamp, audit])

    @staticmethod
    def stamp(logger, method, event_dict):
        return {**event_dict, "at": time.monotonic()}

    def first(self, name: str, **fields) -> dict | None:
        matching = [f for f in self.audit.fields_of(name) if all(f.get(k) == v for k, v in fields.items())]
        return matching[0] if matching else None

    def wait_for(self, name: str, timeout: float = 30.0, **fields) -> dict:
        deadline = time.monotonic() + timeout
        while (found := self.first(name, **fields)) is None:
            assert time.monotonic() < deadline, f"no {name} {fields} within {timeout} s"
            time.sleep(0.01)
        return found


@pytest.fixture
def stamped(audit):
    return StampedAudit(audit)


@pytest.fixture
def slow_start(tmp_path):
    return tmp_path / "slow-start"


@pytest.fixture
def echo_host(make_host, install, wheel_dir, slow_start, stamped):
    source = ECHO.format(slow_start=str(slow_start))
    install(
        PluginWheel("acme-echo", plugins={"acme.echo": "acme_echo"}, files={"acme_echo/__init__.py": source}).build(
            wheel_dir
        )
    )
    # Two failures within a minute open the breaker: one crash counted once per call in flight would.
    host = make_host(
        settings={"plugin_isolation": "process", "plugin_breaker_failures": 2, "plugin_breaker_reset": 60},
        worker_settings=WorkerSettings(restart_initial_delay=0.05, restart_max_delay=0.2, start_timeout=30),
        audit_logger=stamped.logger,
    )
    host.load()
    assert host.get("acme.echo").worker_pid is not None
    return host


def call(host, value: str, timeout: float, seconds: float = 0.0) -> Outcome:
    outcome = Outcome(value, timeout, time.monotonic(), 0.0)
    request = SyncRequest(connector="echo", config={"value": value, "seconds": seconds})
    try:
        outcome.answer = host.run("acme.echo", request, timeout=timeout).next_cursor
    except Exception as exc:  # noqa: BLE001 - every outcome is collected, then checked
        outcome.error = exc
    outcome.ended = time.monotonic()
    return outcome


def burst(host, threads: int, stop: threading.Event, timeout: float, seconds: float):
    """Start `threads` callers, each calling in a loop until `stop`; return the pool and their futures."""

    def caller(thread: int) -> list[Outcome]:
        outcomes = []
        while not stop.is_set():
            outcomes.append(call(host, f"{thread}-{len(outcomes)}", timeout, seconds))
        return outcomes

    pool = ThreadPoolExecutor(threads)
    return pool, [pool.submit(caller, thread) for thread in range(threads)]


# From outside, "the worker" is the process the host reports (bwrap's, under the sandbox) or the interpreter
# inside it; either way the host saw a SIGKILL it did not send.
@pytest.mark.parametrize("target", ["reported", "interpreter"])
def test_one_outside_kill_mid_burst_is_one_failure_and_calls_during_the_restart_wait_for_the_new_worker(
    target, echo_host, stamped, audit
):
    host = echo_host
    pid = host.get("acme.echo").worker_pid
    first = token(pid)
    victim = pid if target == "reported" else interpreter(pid)[0]
    stop = threading.Event()
    pool, futures = burst(host, threads=6, stop=stop, timeout=10.0, seconds=0.05)
    try:
        time.sleep(0.5)  # the burst is under way: every thread has a call in flight or about to be
        killed_at = time.monotonic()
        os.kill(victim, signal.SIGKILL)  # from outside: the host did not do this
        seen = stamped.wait_for("plugin.worker.exited", pid=pid)
        stamped.wait_for("plugin.worker.started", restart=True)
        time.sleep(0.5)
    finally:
        stop.set()
        pool.shutdown()
    per_thread = [future.result() for future in futures]
    outcomes = [outcome for outcomes in per_thread for outcome in outcomes]

    crashes = [outcome for outcome in outcomes if outcome.error is not None]
    for outcome in crashes:  # every call answers correctly or fails with a crash error
        assert isinstance(outcome.error, WorkerCrashedError), repr(outcome.error)
        assert outcome.started < seen["at"], "a call made after the host saw the crash failed"
        assert outcome.error.generation == crashes[0].error.generation  # one crash, one incident
        assert "was killed by signal SIGKILL (9)" in outcome.error.message
        assert "host" not in outcome.error.message  # the host does not know who killed it, and does not say
    assert crashes, "the kill hit no call in flight"
    new = token(host.get("acme.echo").worker_pid)
    for outcome in outcomes:
        if outcome.error is None:
            value, answered_by, _ = outcome.answer.split("|")
            assert value == outcome.value  # its own answer
            if outcome.started > seen["at"]:
                assert answered_by == new
            elif outcome.ended < killed_at:
                assert answered_by == first
        assert outcome.elapsed <= outcome.timeout + 0.25  # none waits past its deadline
    during_restart = [outcome for outcome in outcomes if outcome.started > seen["at"]]
    assert len(during_restart) >= 6
    assert all(outcome.error is None for outcome in during_restart)  # they waited for the new worker
    assert all(any(o.started > seen["at"] and o.error is None for o in thread) for thread in per_thread)

    info = host.get("acme.echo")
    assert info.breaker_state == "closed"
    assert "plugin.breaker.opened" not in audit.names("acme.echo")
    assert info.worker_restarts == 1
    assert not any(fields["pid"] == pid for fields in audit.fields_of("plugin.worker.killed"))
    assert host.run("acme.echo", SyncRequest(connector="echo", config={"value": "after"})).next_cursor.startswith(
        "after|"
    )


def test_calls_during_a_slow_restart_wait_within_their_own_deadline(echo_host, stamped, slow_start, audit):
    host = echo_host
    pid = host.get("acme.echo").worker_pid
    victim = interpreter(pid)[0]  # under bwrap the interpreter inside, not the process the host knows
    slow_start.write_text("2.5")  # the replacement takes 2.5 s to import its plugin
    with ThreadPoolExecutor(8) as pool:
        in_flight = [pool.submit(call, host, f"flight-{n}", 10.0, 1.0) for n in range(2)]
        time.sleep(0.3)
        os.kill(victim, signal.SIGKILL)
        seen = stamped.wait_for("plugin.worker.exited", pid=pid)
        short = [pool.submit(call, host, f"short-{n}", 0.6) for n in range(3)]
        long = [pool.submit(call, host, f"long-{n}", 15.0) for n in range(3)]
        results = {
            name: [future.result() for future in futures]
            for name, futures in (("flight", in_flight), ("short", short), ("long", long))
        }

    for outcome in results["flight"]:
        assert isinstance(outcome.error, WorkerCrashedError)
        assert outcome.error.message.endswith(f"(pid {pid}) was killed by signal SIGKILL (9)")  # 128+9 is a signal
    for outcome in results["short"]:  # the new worker cannot be ready in time: a crash error, at the deadline
        assert isinstance(outcome.error, WorkerCrashedError), repr(outcome.error)
        assert "before this call's deadline" in outcome.error.message
        assert outcome.error.generation == results["flight"][0].error.generation
        assert outcome.elapsed <= outcome.timeout + 0.25
    for outcome in results["long"]:  # they wait for the new worker, and get its answer
        assert outcome.error is None, repr(outcome.error)
        value, answered_by, remaining = outcome.answer.split("|")
        assert (value, answered_by) == (outcome.value, token(host.get("acme.echo").worker_pid))
        # The plugin's deadline is the caller's: what was left after waiting for the restart.
        assert float(remaining) <= outcome.timeout - (outcome.elapsed - 0.5)
        assert outcome.started > seen["at"]
        assert 2.0 < outcome.elapsed <= outcome.timeout
    assert host.get("acme.echo").breaker_state == "closed"  # five failed calls, one crash
    assert host.get("acme.echo").call_failures == 5


# -- late outcomes and retry_in, in process ---------------------------------------------------

MOODY = """
import time
from aperio_hookspecs import Connector, SyncResult, hookimpl

class Moody(Connector):
    name = "moody"
    provider = "test"

    def sync(self, context, request):
        if request.config.get("mode") == "fail":
            raise ConnectionError("provider down")
        time.sleep(float(request.config.get("seconds", 0)))
        return SyncResult(connector="moody")

@hookimpl
def aperio_register_connectors(register):
    register(Moody())
"""


@pytest.fixture
def moody_host(make_host, install, wheel_dir):
    install(
        PluginWheel("acme-moody", plugins={"acme.moody": "acme_moody"}, files={"acme_moody/__init__.py": MOODY}).build(
            wheel_dir
        )
    )
    host = make_host(settings={"plugin_breaker_failures": 3, "plugin_breaker_window": 60, "plugin_breaker_reset": 1.5})
    host.load()
    return host


def moody(host, **config):
    return host.run("acme.moody", SyncRequest(connector="moody", config=config))


def test_a_call_that_started_before_the_breaker_opened_does_not_close_it(moody_host, audit):
    host = moody_host
    with ThreadPoolExecutor(1) as pool:
        slow = pool.submit(moody, host, seconds=0.6)
        time.sleep(0.1)
        for _ in range(3):
            with pytest.raises(PluginCallError):
                moody(host, mode="fail")
        opened_at = time.monotonic()
        assert host.get("acme.moody").breaker_state == "open"
        assert slow.result().connector == "moody"  # it succeeds after the breaker opened

    assert host.get("acme.moody").breaker_state == "open"
    assert "plugin.breaker.closed" not in audit.names("acme.moody")
    with pytest.raises(CircuitOpenError) as refused:
        moody(host)
    expected = 1.5 - (time.monotonic() - opened_at)
    assert refused.value.retry_in == pytest.approx(expected, abs=0.05)
    stated = float(re.search(r"next probe in (\d+\.\d)s", refused.value.message).group(1))
    assert stated == pytest.approx(refused.value.retry_in, abs=0.051)


def test_retry_in_is_when_the_probe_is_let_through(moody_host):
    host = moody_host
    for _ in range(3):
        with pytest.raises(PluginCallError):
            moody(host, mode="fail")
    with pytest.raises(CircuitOpenError) as refused:
        moody(host)
    probe_at = time.monotonic() + refused.value.retry_in
    time.sleep(max(0.0, probe_at - time.monotonic() - 0.15))
    with pytest.raises(CircuitOpenError) as early:
        moody(host)  # a little before: still refused, with the rest of the wait
    assert early.value.retry_in == pytest.approx(probe_at - time.monotonic(), abs=0.05)
    time.sleep(max(0.0, probe_at - time.monotonic() + 0.02))

    with ThreadPoolExecutor(1) as pool:
        probe = pool.submit(moody, host, seconds=0.4)  # the probe: let through, slow
        time.sleep(0.15)
        with pytest.raises(CircuitOpenError, match="half-open: a probe call is in flight") as during:
            moody(host)  # one probe at a time
        assert during.value.retry_in == 0.0
        assert probe.result().connector == "moody"
    assert host.get("acme.moody").breaker_state == "closed"
    assert moody(host).connector == "moody"


def test_a_failed_probe_opens_the_breaker_for_a_full_reset_timeout(moody_host):
    host = moody_host
    for _ in range(3):
        with pytest.raises(PluginCallError):
            moody(host, mode="fail")
    time.sleep(1.55)
    with pytest.raises(PluginCallError):
        moody(host, mode="fail", seconds=0.3)  # the probe fails after 0.3 s
    failed_at = time.monotonic()
    with pytest.raises(CircuitOpenError) as refused:
        moody(host)
    assert refused.value.retry_in == pytest.approx(1.5 - (time.monotonic() - failed_at), abs=0.05)
