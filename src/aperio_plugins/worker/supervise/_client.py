"""The host side of one worker process: handshake, calls, context requests, cancellation,
heartbeats, and its end. Restarts are the business of `_lifecycle.Lifecycle`, which owns these."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ...errors import HandshakeError, WorkerCrashedError, WorkerTimeoutError
from .. import _protocol as protocol
from .._settings import WorkerSettings
from .._tree import descendants
from ._channel import Call, HostChannel
from ._context_ops import perform
from ._description import Description, DescriptionError, parse_description
from ._placement import Placement

Schedule = Callable[[float, Callable[[], None]], Any]
_LEVELS = frozenset(("debug", "info", "warning", "error"))


def describe_exit(returncode: int | None) -> str:
    """Return 'exited with status 1' or 'was killed by signal SIGSEGV (11)'."""
    if returncode is None:
        return "has not exited"
    if returncode >= 0:
        return f"exited with status {returncode}"
    try:
        name = signal.Signals(-returncode).name
    except ValueError:
        name = "an unknown signal"
    return f"was killed by signal {name} ({-returncode})"


_PF_EXITING = 0x4  # in /proc/<pid>/stat's flags: the process is running its exit
_SIGKILL_BIT = 1 << (signal.SIGKILL - 1)


def _still_running(pid: int) -> bool:
    """Whether our child `pid` is alive and not already on its way out for another reason.

    A worker killed from outside is often noticed first as a broken pipe: the
    kernel closes its descriptors before it becomes a zombie. A process that
    has exited (seen without reaping it, WNOWAIT), is exiting, or has a SIGKILL
    pending was not ended by the host's signal, whatever the host does next.
    """
    try:
        if os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None:
            return False
    except ChildProcessError:
        return False  # already reaped: it has exited
    try:
        stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        status = Path(f"/proc/{pid}/status").read_text()
    except (OSError, IndexError):
        return True  # no /proc to ask: waitid said it has not exited
    if stat[0] in ("Z", "X", "x") or int(stat[6]) & _PF_EXITING:
        return False
    pending = 0
    for line in status.splitlines():
        if line.startswith(("SigPnd:", "ShdPnd:")):
            pending |= int(line.split()[1], 16)
    return not pending & _SIGKILL_BIT


class WorkerProcess(HostChannel):
    """One running worker process and its channel. Thread-safe."""

    def __init__(
        self,
        plugin_id: str,
        popen: subprocess.Popen[bytes],
        options: WorkerSettings,
        *,
        audit: Any,
        logger: Any,
        schedule: Schedule,
        changed: Callable[[], None],
        generation: int = 0,
    ) -> None:
        assert popen.stdin is not None
        assert popen.stdout is not None
        super().__init__(popen.stdin.fileno(), popen.stdout.fileno(), options)
        self.plugin_id = plugin_id
        self.popen = popen
        self.pid = popen.pid
        self.audit = audit
        self.logger = logger
        self._schedule = schedule
        self._notify_owner = changed
        self.started_at = time.monotonic()
        self.description: Description | None = None
        self.protocol_version: int | None = None
        self.answered = False  # a call was answered: the plugin works in this worker
        self.generation = generation  # which incarnation of the plugin's worker this is
        self.kill_reason: str | None = None
        self.killed_by_host = False  # the host's SIGKILL reached a live process (see `kill`)
        self.stopped_by_host = False  # the host sent SIGTERM to end it (see `shutdown`)
        self.reported_failure = False
        self.returncode: int | None = None
        self.exited = threading.Event()
        self.board = getattr(popen, "board", None)  # set by `spawn` when spinning is on
        # CPU placement hints need Linux's affinity calls, and are given only where nothing spins: with
        # spinning on, a pair on two CPUs answers sooner than a pair on one, and each hint's move
        # between the two placements was what made the unpinned p99 (docs/worker-protocol.md, "Third pass").
        hints = hasattr(os, "sched_setaffinity") and self.board is None
        self.placement = Placement(self._interpreter_pid) if hints else None

    # -- life and death ------------------------------------------------------------

    def accepting(self) -> bool:
        """Whether a new call may be sent: alive, not doomed, and no cancelled call unanswered."""
        return not self._dead and self.kill_reason is None and not self._abandoned

    def settling(self) -> bool:
        """Whether the worker is alive but owes the answer to a cancelled call."""
        return bool(self._abandoned) and not self._dead and self.kill_reason is None

    def crash_error(self) -> WorkerCrashedError:
        how = describe_exit(self.returncode)
        message = f"worker of plugin {self.plugin_id!r} (pid {self.pid}) {how}{self.killer(self.returncode)}"
        return WorkerCrashedError(
            message, plugin_id=self.plugin_id, returncode=self.returncode, generation=self.generation
        )

    def killer(self, returncode: int | None) -> str:
        """Say who ended the worker, only when that is known: the host, for a reason it recorded."""
        if self.killed_by_host and returncode in (-signal.SIGKILL, None):
            return f" (the host killed it: {self.kill_reason})"
        if self.stopped_by_host and returncode == -signal.SIGTERM:
            return " (the host stopped it)"
        return ""  # an outside signal, or a crash: the exit status or signal is all there is to say

    def kill(self, reason: str) -> None:
        """SIGKILL the worker, once, recording why; its end of file then fails the calls in flight."""
        with self._state:
            if self.kill_reason is not None or self.exited.is_set():
                return
            self.kill_reason = reason
        # A worker killed from outside is often noticed first as a broken pipe: if it has already
        # exited (a zombie not yet reaped), the host's signal is not what ended it.
        if _still_running(self.pid):
            self.killed_by_host = True
            self.audit.warning("plugin.worker.killed", plugin_id=self.plugin_id, pid=self.pid, reason=reason)
            with contextlib.suppress(OSError):
                self.popen.kill()
        self.changed()

    def changed(self) -> None:
        self._notify_owner()

    def wait_exit(self) -> None:
        if not self.exited.wait(self.options.grace_period):
            self.kill("it closed its stdout but did not exit")
            self.exited.wait(self.options.kill_timeout)

    def watch(self) -> None:
        """On the watcher thread: wait for the exit, then fail what is still in flight."""
        self.returncode = self.popen.wait()
        self.exited.set()
        with self._read_lock:
            while not self._dead:
                # A dead process's pipe yields what it wrote, then end of file; should it stay
                # open (a descendant holds it), the grace period ends the wait all the same.
                messages = self.read(self.options.grace_period)
                if not messages:
                    self.on_eof()
                    break
                for message in messages:
                    self.route(message)
        with contextlib.suppress(OSError):
            self.popen.stdout.close()  # type: ignore[union-attr]

    def shutdown(self, drain_timeout: float, kill_timeout: float) -> None:
        """Let calls in flight finish (up to `drain_timeout`), close stdin, SIGTERM, then SIGKILL."""
        deadline = time.monotonic() + drain_timeout
        with self._idle:
            self._idle_waiters += 1
            try:
                while self._calls and (left := deadline - time.monotonic()) > 0:
                    self._idle.wait(left)
            finally:
                self._idle_waiters -= 1
        with self._write_lock, contextlib.suppress(OSError):
            self.popen.stdin.close()  # type: ignore[union-attr]
        # A worker exits by itself at end of input; SIGTERM is for one that is busy.
        if self.exited.wait(min(1.0, kill_timeout)):
            return
        self.stopped_by_host = _still_running(self.pid)
        with contextlib.suppress(OSError):
            self.popen.terminate()
        if not self.exited.wait(kill_timeout):
            self.kill(f"it did not exit within {kill_timeout:g} s of SIGTERM")
            self.exited.wait(kill_timeout)

    # -- handshake -----------------------------------------------------------------

    def handshake(self) -> Description:
        """Read the handshake line, agree on a version, read the description. Raises `HandshakeError`."""
        deadline = self.started_at + self.options.start_timeout
        try:
            announced = protocol.parse_handshake(self._read_line(deadline))
        except protocol.ProtocolError as exc:
            raise self._handshake_error(str(exc)) from None
        version = protocol.choose_version(protocol.PROTOCOL_VERSIONS, announced.protocols)
        if version is None:
            theirs = ", ".join(map(str, announced.protocols))
            ours = ", ".join(map(str, protocol.PROTOCOL_VERSIONS))
            raise self._handshake_error(f"it speaks protocol versions {theirs}; this host speaks {ours}")
        if (announced.transport, announced.codec) != (protocol.TRANSPORT, protocol.CODEC):
            raise self._handshake_error(
                f"it offers {announced.transport!r} with {announced.codec!r};"
                f" this host speaks {protocol.TRANSPORT!r} with {protocol.CODEC!r}"
            )
        self.protocol_version = version
        self.write(protocol.pack([protocol.HELLO, version]), deadline)
        self.description = self._read_description(deadline)
        return self.description

    def handshake_failure(self, reason: str) -> HandshakeError:
        """Return the error for a start that failed for a reason outside the protocol."""
        return self._handshake_error(reason)

    def _handshake_error(self, reason: str, stage: str | None = None) -> HandshakeError:
        return HandshakeError(
            f"worker of plugin {self.plugin_id!r} (pid {self.pid}): {reason}", plugin_id=self.plugin_id, stage=stage
        )

    def _silent(self, what: str) -> HandshakeError:
        return self._handshake_error(f"{what} within the start timeout of {self.options.start_timeout:g} s")

    def _ended(self, when: str) -> HandshakeError:
        try:  # nothing else waits for the process before its handshake is done
            returncode: int | None = self.popen.wait(timeout=self.options.grace_period)
        except subprocess.TimeoutExpired:
            returncode = None
        if self.killed_by_host and returncode in (-signal.SIGKILL, None):
            return self._handshake_error(f"killed {when}: {self.kill_reason}")
        return self._handshake_error(f"it {describe_exit(returncode)} {when}")

    def _read_line(self, deadline: float) -> bytes:
        line = bytearray()
        while not line.endswith(b"\n"):
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not self._poller.poll(max(1, int(remaining * 1000))):
                raise self._silent("no handshake line")
            byte = os.read(self._fd_read, 1)  # byte by byte: frames follow the line in the same pipe
            if not byte:
                raise self._ended("before its handshake")
            line += byte
            if len(line) > protocol.MAX_HANDSHAKE_LINE:
                raise self._handshake_error(f"{len(line)} bytes without a newline instead of a handshake line")
        return bytes(line)

    def _read_description(self, deadline: float) -> Description:
        while True:
            messages = self.read(max(0.0, deadline - time.monotonic()))
            if messages is None or self.kill_reason is not None:
                raise self._ended("before it was ready")
            if messages:
                return self._ready(messages[0])
            if time.monotonic() >= deadline:
                raise self._silent("no description of its plugin")

    def _ready(self, message: list[Any]) -> Description:
        if message[0] == protocol.FAILED and len(message) == 2 and isinstance(message[1], dict):
            self.reported_failure = True  # it exits by itself (status 3): no need to kill it
            stage = message[1].get("stage")
            raise self._handshake_error(
                f"it could not load the plugin: {message[1].get('message')}", stage if isinstance(stage, str) else None
            )
        if message[0] != protocol.READY or len(message) != 2:
            raise self._handshake_error(f"it sent {str(message[0])[:40]!r} instead of its description")
        try:
            return parse_description(message[1], self.plugin_id)
        except DescriptionError as exc:
            raise self._handshake_error(f"its description is malformed: {exc}") from None

    # -- calls -----------------------------------------------------------------------

    def call(
        self,
        message: list[Any],
        context: Any,
        label: str,
        deadline: float,
        encode: Callable[[list[Any]], bytes] = protocol.pack,
    ) -> list[Any]:
        """Send `message`, whose index 1 is a placeholder for the call id, and return the RESULT or
        ERROR answer.

        Raises TypeError, ValueError or OverflowError for a message that cannot be
        encoded, `WorkerTimeoutError` past `deadline`, `WorkerCrashedError` if the worker dies.
        """
        placement = self.placement
        if placement is None or not placement.due():
            answer = self.request(message, context, label, deadline, encode)
        else:
            hinted = placement.before(alone=not self._calls)
            start = time.monotonic()
            try:
                answer = self.request(message, context, label, deadline, encode)
            finally:
                placement.after(hinted, time.monotonic() - start)
        self.answered = True
        return answer

    def _interpreter_pid(self) -> int | None:
        """Return the host-side pid of the worker's interpreter (under the sandbox, a grandchild
        of `pid`, known inside by the pid its description gave), or None."""
        if self.description is None:
            return None
        inner = self.description.pid
        for pid in (self.pid, *descendants(self.pid)):
            try:
                status = Path(f"/proc/{pid}/status").read_text()
            except OSError:
                continue
            for line in status.splitlines():
                # NSpid: the pid in each namespace, the worker's own last.
                if line.startswith("NSpid:") and line.split()[-1] == str(inner):
                    return pid
        return None

    def time_out(self, call: Call) -> None:
        # The check first: should the cancel itself not get through, the worker is killed all the same.
        self._schedule(self.options.grace_period, self.check_abandoned)
        self.changed()  # a worker with an unanswered cancel takes no new calls
        self.audit.warning(
            "plugin.worker.timeout", plugin_id=self.plugin_id, pid=self.pid, call=call.label, call_id=call.id
        )
        self.write(protocol.pack([protocol.CANCEL, call.id]))
        raise WorkerTimeoutError(
            f"plugin {self.plugin_id!r}: {call.label} did not answer before its deadline; the call was cancelled",
            plugin_id=self.plugin_id,
        )

    def check_abandoned(self) -> None:
        """Kill the worker if a cancelled call is still unanswered after the grace period."""
        self.drain()
        now = time.monotonic()
        with self._state:
            overdue = sorted(call_id for call_id, until in self._abandoned.items() if until <= now)
        if overdue:
            self.kill(f"it did not answer the cancel of call {overdue[0]} within {self.options.grace_period:g} s")

    # -- heartbeats ------------------------------------------------------------------

    def ping(self) -> None:
        """Ping an idle worker (a busy one is watched by its calls' deadlines); check the answer later."""
        self.check_heartbeat()
        if not self._write_lock.acquire(blocking=False):  # never wait behind a large frame on this thread
            return
        try:
            with self._state:
                if self._dead or self._calls or self._abandoned or self._pings:
                    return
                ping_id = next(self._ids)
                self._pings[ping_id] = time.monotonic()
            # Non-blocking, and a ping is tiny: it fits, or the pipe is full and the worker is not reading.
            with contextlib.suppress(OSError):
                self._write_until(protocol.frame(protocol.pack([protocol.PING, ping_id])), time.monotonic())
        finally:
            self._write_lock.release()
        self._schedule(self.options.grace_period, self.check_heartbeat)

    def check_heartbeat(self) -> None:
        """Kill an idle worker whose ping went unanswered for the grace period."""
        self.drain()
        now = time.monotonic()
        with self._state:
            idle = not self._calls and not self._abandoned
            overdue = any(now - sent >= self.options.grace_period for sent in self._pings.values())
            if not idle:
                self._pings.clear()  # a busy serial worker answers pings late; its calls are watched instead
        if idle and overdue and not self._dead:
            self.kill(f"it did not answer a heartbeat within {self.options.grace_period:g} s")

    # -- what the worker asks of the host -------------------------------------------

    def serve_context(self, call: Call, message: list[Any]) -> None:
        if len(message) != 5:
            self.kill("it sent a malformed context request")
            return
        _, _, request_id, operation, arguments = message
        try:
            reply = [protocol.CTX_OK, request_id, perform(call.context, operation, arguments)]
        except Exception as exc:  # noqa: BLE001 - any refusal goes back to the plugin, typed by name
            reason = getattr(exc, "reason", None) or str(exc)
            reply = [protocol.CTX_ERROR, request_id, type(exc).__name__, str(reason)]
        try:
            payload = protocol.pack(reply)
        except (TypeError, ValueError, OverflowError) as exc:
            payload = protocol.pack([protocol.CTX_ERROR, request_id, "TypeError", f"unencodable answer: {exc}"])
        self.write(payload)

    def refuse_context(self, message: list[Any]) -> None:
        if len(message) == 5:
            reply = [protocol.CTX_ERROR, message[2], "DeadlineExceededError", "the call was cancelled by the host"]
            self.write(protocol.pack(reply))

    def log(self, call: Call | None, message: list[Any]) -> None:
        if len(message) != 5 or not isinstance(message[4], dict):
            return
        _, _, level, event, fields = message
        context = call.context if call is not None else None
        logger = context.logger if context is not None else self.logger
        method = getattr(logger, level if level in _LEVELS else "info")
        clean = {str(key): value for key, value in fields.items() if str(key) != "event"}
        with contextlib.suppress(Exception):  # the host's logger must not fail a call
            method(str(event), **clean)
