"""One plugin's worker over time: the first start, restarts with backoff, giving up, stopping.

States: starting -> ready; ready -> backoff when the worker dies or is killed;
backoff -> starting when the delay is over; -> failed after too many
consecutive failures; any -> stopping -> stopped. The initial start is not
retried: a plugin that cannot come up is refused at load, with the reason.
"""

from __future__ import annotations

import contextlib
import enum
import logging
import subprocess
import threading
import time
from collections.abc import Callable
from typing import Any

import msgspec

from ..._settings import HostSettings
from ...errors import HandshakeError, WorkerCrashedError, WorkerError, WorkerTimeoutError
from .._settings import WorkerSettings
from ._client import WorkerProcess, describe_exit
from ._description import Description
from ._sandbox import SandboxPlan, plan
from ._spawn import spawn, worker_command, worker_environment
from ._stderr import StderrPump
from ._supervisor import Supervisor, Timer

FailureCallback = Callable[[str, WorkerError], None]
_SETTLE_POLL = 0.05  # how often a caller re-checks while another thread reads a late answer
_log = logging.getLogger("aperio.worker")


class WorkerState(str, enum.Enum):
    STARTING = "starting"
    READY = "ready"
    BACKOFF = "backoff"
    FAILED = "failed"
    STOPPING = "stopping"
    STOPPED = "stopped"


# Looked up once: an enum member read through its class costs a descriptor call per access on 3.11,
# and `acquire` makes one on every call.
_READY = WorkerState.READY


class WorkerStatus(msgspec.Struct, frozen=True):
    """A snapshot of one plugin's worker, for `aperio plugin list` and the API."""

    plugin_id: str
    state: WorkerState
    pid: int | None
    restarts: int
    consecutive_failures: int
    protocol_version: int | None
    last_error: str | None
    containment: str | None = None
    """`bwrap` or `subreaper`: what contains the worker's process tree (docs/worker-protocol.md)."""
    containment_gaps: tuple[str, ...] = ()
    """What that containment does not cover."""


class Lifecycle:
    """Starts, supervises and restarts the worker of one plugin. Thread-safe."""

    def __init__(
        self,
        plugin_id: str,
        *,
        settings: HostSettings,
        search_path: list[str],
        options: WorkerSettings,
        audit: Any,
        logger: Any,
        on_failure: FailureCallback | None,
        network: bool = False,
    ) -> None:
        """Raises `SandboxUnavailableError` when the operator requires a sandbox that cannot be set up."""
        self.plugin_id = plugin_id
        self.options = options
        self._audit = audit
        self._logger = logger.bind(plugin_id=plugin_id)
        self._on_failure = on_failure
        self.sandbox = _choose_sandbox(plugin_id, settings, network, audit)
        self._supervisor = Supervisor.shared()
        self._command = worker_command(plugin_id, search_path, options, self.sandbox.containment)
        self._environment = worker_environment(settings, options)
        self._spin = settings.worker_spin_us / 1e6  # APERIO_WORKER_SPIN_US, validated with the settings
        self._condition = threading.Condition()
        self.state = WorkerState.STARTING
        self._process: WorkerProcess | None = None
        self._description: Description | None = None
        self._failures = 0
        self._restarts = 0
        self._generation = 0  # numbers each worker started, so that one crash is one incident
        self._down: int | None = None  # the generation of the last worker that went down
        self._next_start = 0.0
        self._timer: Timer | None = None
        self._last_error: WorkerError | None = None
        # A worker's exit is recorded (reaped, audited, its crash handled) by its watcher thread after
        # `exited` is set; `stop` waits for the watchers it finds, and for launches under way (which
        # it cannot see yet), so that a stopped worker has its exit recorded and leaves no process.
        self._watchers: set[threading.Thread] = set()
        self._launching = 0
        self._supervisor.track(self)

    # -- public --------------------------------------------------------------------

    def start(self) -> Description:
        """Start the first worker and wait until it has described its plugin. Raises `HandshakeError`."""
        with self._condition:
            self._launching += 1
        self._launch(attempt=0, delay=0.0)
        # The watcher settles the start within start_timeout (it kills a silent worker); the bound
        # here only guards against a watcher that died.
        bound = self.options.start_timeout + 2 * self.options.grace_period + self.options.kill_timeout
        with self._condition:
            self._condition.wait_for(lambda: self.state is not WorkerState.STARTING, timeout=bound)
            if self.state is WorkerState.STARTING:
                self._last_error = HandshakeError(
                    f"worker of plugin {self.plugin_id!r} did not start", plugin_id=self.plugin_id
                )
            if self.state is WorkerState.READY and self._description is not None:
                return self._description
            error = self._last_error
        self.stop(0.0, self.options.kill_timeout)
        raise error if error is not None else HandshakeError(f"worker of plugin {self.plugin_id!r} did not start")

    def acquire(self, deadline: float) -> WorkerProcess:
        """Return a worker ready for a call, waiting for a restart in progress until `deadline`.

        Raises `WorkerCrashedError` (naming the generation that went down) when
        no replacement is ready by `deadline`, or the worker is down for longer
        or for good; `WorkerTimeoutError` when the live worker still owes a
        cancelled call's answer at `deadline`; `WorkerError` once stopped.
        """
        process = self._process  # the common case, without the lock: reading references is atomic
        if self.state is _READY and process is not None and process.accepting():
            return process
        while True:
            with self._condition:
                process = self._process
                if self.state is WorkerState.READY and process is not None and process.accepting():
                    return process
                self._refuse_if_down(deadline)
                remaining = deadline - time.monotonic()
                settling = self.state is WorkerState.READY and process is not None and process.settling()
                if remaining <= 0:
                    raise self._not_ready(process, settling)
                if not settling:
                    self._condition.wait(remaining)
                    continue
            # A cancelled call is still unanswered: read its late answer ourselves (nobody else may be
            # reading), outside the lock. The supervisor kills the worker if it never comes.
            assert process is not None
            if not process.settle(deadline):
                with self._condition:
                    self._condition.wait(min(remaining, _SETTLE_POLL))

    def _refuse_if_down(self, deadline: float) -> None:
        last = f": {self._last_error.message}" if self._last_error is not None else ""
        if self.state is WorkerState.FAILED:
            raise self._down_error(f"is down after {self._failures} consecutive failures{last}")
        if self.state in (WorkerState.STOPPING, WorkerState.STOPPED):
            raise WorkerError(f"the worker of plugin {self.plugin_id!r} is stopped", plugin_id=self.plugin_id)
        if self.state is WorkerState.BACKOFF and self._next_start > deadline:
            wait = self._next_start - time.monotonic()
            raise self._down_error(f"restarts in {wait:.1f} s, after this call's deadline{last}")

    def _down_error(self, what: str, generation: int | None = None) -> WorkerCrashedError:
        # Holding the condition. Every caller refused because one worker went down gets its
        # generation: for the breaker that is the same crash as the calls it broke.
        generation = self._down if generation is None else generation
        last = self._last_error
        known = isinstance(last, WorkerCrashedError) and last.generation == generation
        return WorkerCrashedError(
            f"the worker of plugin {self.plugin_id!r} {what}",
            plugin_id=self.plugin_id,
            returncode=last.returncode if known and isinstance(last, WorkerCrashedError) else None,
            generation=generation,
        )

    def _not_ready(self, process: WorkerProcess | None, settling: bool) -> WorkerError:
        """The error for a call whose deadline passed before a worker could take it (holding the condition)."""
        if settling:
            return WorkerTimeoutError(
                f"the worker of plugin {self.plugin_id!r} still owed a cancelled call's answer at this call's deadline",
                plugin_id=self.plugin_id,
            )
        if self.state is WorkerState.READY and process is not None:
            # Killed or dead, and its watcher has not yet scheduled the restart.
            return self._down_error("went down and was not replaced before this call's deadline", process.generation)
        return self._down_error(f"was not ready again before this call's deadline (it is {self.state.value})")

    def status(self) -> WorkerStatus:
        with self._condition:
            process = self._process
            alive = process is not None and not process.exited.is_set()
            return WorkerStatus(
                plugin_id=self.plugin_id,
                state=self.state,
                pid=process.pid if alive and process is not None else None,
                restarts=self._restarts,
                consecutive_failures=self._failures,
                protocol_version=process.protocol_version if process is not None else None,
                last_error=self._last_error.message if self._last_error is not None else None,
                containment=self.sandbox.containment.value,
                containment_gaps=self.sandbox.gaps(),
            )

    def restart(self) -> None:
        """Forget past failures and start a fresh worker (after giving up, say); returns at once."""
        with self._condition:
            if self.state in (WorkerState.STOPPING, WorkerState.STOPPED, WorkerState.STARTING):
                return
            process = self._process
            self._failures = 0
        if process is not None and not process.exited.is_set():
            process.kill("the operator asked for a restart")
        else:
            self._schedule_restart(None)

    def stop(self, drain_timeout: float | None = None, kill_timeout: float | None = None) -> None:
        """Drain calls in flight, then end the worker (stdin closed, SIGTERM, SIGKILL). Idempotent.

        When it returns the worker has been reaped, its private directory
        removed and its `plugin.worker.exited` event emitted, and its status has no pid.
        """
        kill = self.options.kill_timeout if kill_timeout is None else kill_timeout
        with self._condition:
            if self.state in (WorkerState.STOPPING, WorkerState.STOPPED):
                self._condition.wait_for(lambda: self.state is WorkerState.STOPPED, timeout=60.0)
                return
            self.state = WorkerState.STOPPING
            if self._timer is not None:
                self._timer.cancel()
            self._condition.notify_all()
            # A restart that already left BACKOFF is spawning a worker this method could not see yet;
            # once STOPPING is set no new launch begins, and this one ends promptly (see `_launch`).
            self._condition.wait_for(lambda: self._launching == 0, timeout=self.options.start_timeout + kill)
            process = self._process
            watchers = set(self._watchers)
        if process is not None:
            drain = self.options.stop_timeout if drain_timeout is None else drain_timeout
            process.shutdown(drain, kill)
        # `exited` is set as soon as the process is reaped; its watcher records the exit just after.
        # After the exit a watcher waits at most a grace period for the pipe's last bytes, and a watcher
        # whose handshake failed at most a grace period and a kill timeout: that bounds the join.
        bound = 2 * self.options.grace_period + kill + 1.0
        for watcher in watchers:
            if watcher is not threading.current_thread():  # stop() called back from a watcher (on_failure)
                watcher.join(bound)
        with self._condition:
            self.state = WorkerState.STOPPED
            self._condition.notify_all()

    def stop_now(self) -> None:
        """At interpreter exit: no draining, a short wait, then SIGKILL."""
        self.stop(0.0, 0.5)

    # -- starting --------------------------------------------------------------------

    def _launch(self, *, attempt: int, delay: float) -> None:
        """Spawn a worker and its watcher. The caller counted this launch in `_launching`, under the lock."""
        try:
            self._spawn_and_watch(attempt=attempt, delay=delay)
        finally:
            with self._condition:
                self._launching -= 1
                self._condition.notify_all()

    def _spawn_and_watch(self, *, attempt: int, delay: float) -> None:
        with self._condition:
            self._generation += 1
            generation = self._generation
        try:
            popen = self._supervisor.call(
                lambda: spawn(self._command, self._environment, self.plugin_id, self.sandbox, self._spin)
            )
        except OSError as exc:
            self._start_failed(None, HandshakeError(f"could not start a worker for plugin {self.plugin_id!r}: {exc}"))
            return
        process = WorkerProcess(
            self.plugin_id,
            popen,
            self.options,
            audit=self._audit,
            logger=self._logger,
            schedule=self._supervisor.schedule,
            changed=self._changed,
            generation=generation,
        )
        assert popen.stderr is not None
        StderrPump(popen.stderr.fileno(), self._logger.bind(pid=popen.pid), self.options).start()
        name = f"aperio-worker-watch-{process.pid}"
        watcher = threading.Thread(target=self._watch, args=(process,), name=name, daemon=True)
        with self._condition:
            self._process = process
            self._watchers.add(watcher)
            # stop() began while this worker was spawning: it waits for this launch, then ends this worker.
            unwanted = self.state in (WorkerState.STOPPING, WorkerState.STOPPED)
        if attempt:
            cap = self.options.backoff_cap(attempt)
            self._audit.warning(
                "plugin.worker.restarted",
                plugin_id=self.plugin_id,
                pid=process.pid,
                attempt=attempt,
                delay=round(delay, 3),
                backoff_cap=cap,
            )
        watcher.start()
        if unwanted:
            process.kill("the host is stopping the plugin's worker")

    def _watch(self, process: WorkerProcess) -> None:
        try:
            self._watch_process(process)
        finally:
            with self._condition:
                self._watchers.discard(threading.current_thread())
                self._condition.notify_all()

    def _watch_process(self, process: WorkerProcess) -> None:
        try:
            description = process.handshake()
        except (HandshakeError, OSError) as raised:
            # An OSError (reading a pipe the worker closed oddly, say) fails the start like any other reason.
            exc = raised if isinstance(raised, HandshakeError) else process.handshake_failure(str(raised))
            self._audit.warning(
                "plugin.worker.handshake.failed",
                plugin_id=self.plugin_id,
                pid=process.pid,
                reason=exc.message,
                stage=exc.stage,
            )
            if process.reported_failure:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    process.popen.wait(self.options.grace_period)
            if process.popen.poll() is None:
                process.kill(f"its handshake failed: {exc.message}")
            self._reap(process)
            self._start_failed(process, exc)
            return
        self._ready(process, description)
        try:
            process.watch()
        finally:
            self._exited(process)

    def _reap(self, process: WorkerProcess) -> None:
        process.returncode = process.popen.wait()
        process.exited.set()
        for stream in (process.popen.stdin, process.popen.stdout):
            with contextlib.suppress(OSError):
                stream.close()  # type: ignore[union-attr]
        self._audit_exit(process)

    def _audit_exit(self, process: WorkerProcess) -> None:
        self._audit.info(
            "plugin.worker.exited",
            plugin_id=self.plugin_id,
            pid=process.pid,
            returncode=process.returncode,
            status=describe_exit(process.returncode),
        )

    def _ready(self, process: WorkerProcess, description: Description) -> None:
        restart = False
        with self._condition:
            if self._description is not None and not self._description.same_plugin(description):
                mismatch = "the plugin on disk changed since the host started it: reload the plugin"
            elif self.state is not WorkerState.STARTING or process is not self._process:
                mismatch = "the host no longer wants this worker"
            else:
                mismatch = ""
                restart = self._description is not None
                self._description = self._description or description
                self.state = WorkerState.READY
                self._condition.notify_all()
        if mismatch:
            process.kill(mismatch)
            return
        self._audit.info(
            "plugin.worker.started",
            plugin_id=self.plugin_id,
            pid=process.pid,
            protocol=process.protocol_version,
            start_seconds=round(time.monotonic() - process.started_at, 3),
            restart=restart,
        )
        self._timer = self._supervisor.schedule(self.options.heartbeat_interval, self._heartbeat)

    def _heartbeat(self) -> None:
        with self._condition:
            process = self._process if self.state is WorkerState.READY else None
        if process is None:
            return
        if time.monotonic() - process.started_at >= self.options.restart_reset_after:
            with self._condition:
                self._failures = 0  # up long enough: earlier crashes are forgiven
        process.ping()
        self._timer = self._supervisor.schedule(self.options.heartbeat_interval, self._heartbeat)

    # -- failing ---------------------------------------------------------------------

    def _changed(self) -> None:
        with self._condition:
            self._condition.notify_all()

    def _exited(self, process: WorkerProcess) -> None:
        self._audit_exit(process)
        with self._condition:
            if process is not self._process or self.state in (WorkerState.STOPPING, WorkerState.STOPPED):
                self._condition.notify_all()
                return
        self._failed(process.crash_error(), process)

    def _start_failed(self, process: WorkerProcess | None, error: HandshakeError) -> None:
        with self._condition:
            if self.state in (WorkerState.STOPPING, WorkerState.STOPPED):
                return
            if self._description is None:  # the first start: not retried, the host refuses the plugin
                self._last_error = error
                self.state = WorkerState.FAILED
                self._condition.notify_all()
                return
            if process is not self._process or self.state is not WorkerState.STARTING:
                return
        self._failed(error, process)

    def _failed(self, error: WorkerError, process: WorkerProcess | None) -> None:
        if self._on_failure is not None:
            try:
                self._on_failure(self.plugin_id, error)
            except Exception:  # noqa: BLE001 - the host's callback must not stop the restart
                _log.exception("aperio worker: on_failure callback raised for plugin %s", self.plugin_id)
        with self._condition:
            if process is not None and (
                process.answered or time.monotonic() - process.started_at >= self.options.restart_reset_after
            ):
                self._failures = 0  # it had worked: this is a new run of failures
            self._failures += 1
            self._last_error = error
            self._down = process.generation if process is not None else self._generation
        self._schedule_restart(error)

    def _schedule_restart(self, error: WorkerError | None) -> None:
        with self._condition:
            if self.state in (WorkerState.STOPPING, WorkerState.STOPPED):
                return
            if self._failures > self.options.restart_max_attempts:
                self.state = WorkerState.FAILED
                self._condition.notify_all()
                give_up = True
            else:
                give_up = False
                attempt = max(self._failures, 1)
                delay = self.options.backoff_delay(attempt)
                self.state = WorkerState.BACKOFF
                self._next_start = time.monotonic() + delay
                self._condition.notify_all()
                self._timer = self._supervisor.schedule(delay, lambda: self._restart(attempt, delay))
        if give_up:
            self._audit.error(
                "plugin.worker.gave_up",
                plugin_id=self.plugin_id,
                failures=self._failures,
                reason=error.message if error is not None else None,
            )

    def _restart(self, attempt: int, delay: float) -> None:
        with self._condition:
            if self.state is not WorkerState.BACKOFF:
                return
            self.state = WorkerState.STARTING
            self._restarts += 1
            self._launching += 1  # from here stop() waits for this launch
        self._launch(attempt=attempt, delay=delay)


def _choose_sandbox(plugin_id: str, settings: HostSettings, network: bool, audit: Any) -> SandboxPlan:
    """Plan the worker's containment once, for its first start and every restart; audit a fallback or a refusal."""
    try:
        chosen = plan(settings, network=network, plugin_id=plugin_id)
    except WorkerError as exc:
        audit.error("plugin.worker.sandbox.failed", plugin_id=plugin_id, reason=exc.message)
        raise
    if chosen.fallback_reason is not None:
        audit.warning(
            "plugin.worker.sandbox.fallback",
            plugin_id=plugin_id,
            containment=chosen.containment.value,
            reason=chosen.fallback_reason,
        )
    return chosen
