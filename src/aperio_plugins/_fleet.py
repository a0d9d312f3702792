"""The fleet agent inside `aperio serve`: decisions made on any host reach this one, this host
converges to the fleet's pinned lock, and it beats so that `aperio fleet status` lists it.

One background thread. On PostgreSQL it wakes on the NOTIFY a decision's commit sends; everywhere
(SQLite, or while the listener reconnects) it also polls every `poll_interval`. A decision is
applied through the host's public methods inside `applying_received()`, so it is audited once, by
the host where it was made, and the store write it repeats changes nothing (no echo). A database
error never ends the thread: it is logged, retried with backoff, and shown by `problem` (the
API's `/readyz`); meanwhile the host serves with its last known state. When the store answers
again the agent writes the audit events the store held meanwhile and runs its `after_sync`
callbacks (the API refreshes its last-known tokens there).

A pinned release this host refused is retried with exponential backoff (`RETRY_FIRST` doubling to
`RETRY_MAX`), so that fixing the cause (trusting the signer's key, say) converges without a new pin;
the retry state is in the heartbeat (`aperio fleet status`).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any, Protocol

from ._fleet_name import host_name
from ._fleet_records import FleetRecords, PinnedLock
from ._host import PluginHost
from ._model import Isolation, PluginState
from ._state import StateStore
from .errors import AperioError, StateStoreError, UnknownPluginError

_log = logging.getLogger("aperio.fleet")

POLL_INTERVAL = 0.5  # seconds; the SQLite path's propagation delay is at most this plus one pass
HEARTBEAT_INTERVAL = 2.0
HOST_TTL = timedelta(seconds=10)  # a host that has not beaten for this long is gone from the status
_BACKOFF_FIRST = 0.5
# Capped low: a host cut off from the store must see it back (and apply what it missed) within
# about 2 s of healing; one connection attempt a second per host is cheap.
_BACKOFF_MAX = 1.0
RETRY_FIRST = 2.0  # seconds before a refused pinned release is tried again; doubles each time
RETRY_MAX = 300.0


class Listener(Protocol):
    def wait(self, timeout: float) -> bool: ...
    def close(self) -> None: ...


class FleetStore(StateStore, FleetRecords, Protocol):
    """What the agent needs of the state store (both backends are one)."""


@dataclass
class _Reconciled:
    revision: int | None = None
    installed: list[dict[str, object]] = field(default_factory=list)
    refusals: list[dict[str, object]] = field(default_factory=list)
    drift: list[str] = field(default_factory=list)


@dataclass
class _Retry:
    """When the refused releases of the current revision are tried again (monotonic and wall clock)."""

    attempt: int = 0  # retries made so far for this revision
    due: float = 0.0
    due_at: datetime | None = None

    def schedule(self, first: float, cap: float) -> float:
        delay = min(first * 2.0**self.attempt, cap)
        self.due = time.monotonic() + delay
        self.due_at = datetime.now(timezone.utc) + timedelta(seconds=delay)
        return delay


class FleetAgent:
    """Follows the shared state for one host; `start()` and `stop()` with the server's lifespan."""

    def __init__(
        self,
        host: PluginHost,
        store: FleetStore,
        *,
        name: str | None = None,
        poll_interval: float = POLL_INTERVAL,
        heartbeat_interval: float = HEARTBEAT_INTERVAL,
        retry_first: float = RETRY_FIRST,
        retry_max: float = RETRY_MAX,
    ) -> None:
        self.host = host
        self.store = store
        self.name = name or host_name()
        self.poll_interval = poll_interval
        self.heartbeat_interval = heartbeat_interval
        self.started_at = datetime.now(timezone.utc)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._problem: str | None = None
        self._flags: dict[str, bool] | None = None
        self._isolation: dict[str, Isolation] | None = None
        self._reconciled = _Reconciled()
        self._retry: _Retry | None = None
        self.retry_first = retry_first
        self.retry_max = retry_max
        self._last_beat = 0.0
        # Run after every pass that reached the store (not while it is away); their errors are logged.
        self.after_sync: list[Callable[[], None]] = []

    @property
    def problem(self) -> str | None:
        """Why the shared state is out of reach right now (None while it answers)."""
        return self._problem

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="aperio-fleet", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=15)
            self._thread = None
        if self._problem is not None:
            return  # the store is out of reach: the TTL removes this host from the status
        try:
            self.store.forget_host(self.name)
        except AperioError as exc:
            _log.warning("fleet: could not remove this host from the fleet status: %s", exc.message)

    def _run(self) -> None:
        listener: Listener | None = None
        backoff = _BACKOFF_FIRST
        while not self._stop.is_set():
            try:
                if self._problem is not None:
                    self._reconnect()
                if listener is None:
                    listener = self._listen()
                self.sync_once()
                if self._problem is not None:
                    _log.warning("fleet: state store reachable again")
                self._problem = None
                backoff = _BACKOFF_FIRST
                self._caught_up()
            except AperioError as exc:
                listener = self._drop(listener)
                self._fail(exc.message.splitlines()[0], backoff)
                backoff = min(backoff * 2, _BACKOFF_MAX)
                continue
            except Exception as exc:  # noqa: BLE001 - the loop must outlive any one failure
                listener = self._drop(listener)
                self._fail(f"{type(exc).__name__}: {exc}", backoff)
                backoff = min(backoff * 2, _BACKOFF_MAX)
                continue
            if listener is None:
                self._stop.wait(self.poll_interval)
                continue
            try:
                listener.wait(self.poll_interval)
            except AperioError as exc:
                listener = self._drop(listener)
                self._fail(exc.message.splitlines()[0], backoff)
        self._drop(listener)

    def _reconnect(self) -> None:
        # Ask the store to try the server now rather than at its own next probe.
        reconnect = getattr(self.store, "reconnect", None)
        if reconnect is not None:
            reconnect()

    def _caught_up(self) -> None:
        flush = getattr(self.store, "flush_held_audit", None)
        if flush is not None:
            written = flush()
            if written:
                _log.warning("fleet: wrote %d audit event(s) held while the state store was away", written)
        for callback in self.after_sync:
            try:
                callback()
            except AperioError as exc:
                _log.warning("fleet: after a pass: %s", exc.message.splitlines()[0])

    def _listen(self) -> Listener | None:
        make = getattr(self.store, "listener", None)
        return None if make is None else make()

    @staticmethod
    def _drop(listener: Listener | None) -> None:
        if listener is not None:
            listener.close()

    def _fail(self, reason: str, backoff: float) -> None:
        if self._problem is None:
            _log.error("fleet: state store unavailable, serving with the last known state: %s", reason)
        self._problem = reason
        self._stop.wait(backoff)

    def sync_once(self) -> None:
        """One pass: apply new decisions, converge to a new pin, beat when due. Raises `AperioError`."""
        self._apply_decisions()
        self._converge()
        if time.monotonic() - self._last_beat >= self.heartbeat_interval:
            self._beat()

    def _apply_decisions(self) -> None:
        from .api._trail import applying_received

        flags = self.store.enabled_flags()
        isolation = self.store.isolation_overrides()
        first = self._flags is None
        changed_flags = {pid for pid in flags if first or self._flags.get(pid) != flags[pid]}  # type: ignore[union-attr]
        changed_isolation = (
            set()
            if first or self._isolation is None
            else {
                pid for pid in set(isolation) | set(self._isolation) if isolation.get(pid) != self._isolation.get(pid)
            }
        )
        for plugin_id in sorted(changed_flags | changed_isolation):
            try:
                info = self.host.get(plugin_id)
                with applying_received():
                    wanted = flags.get(plugin_id)
                    if wanted is False and info.state is PluginState.ENABLED:
                        self.host.disable(plugin_id)
                    elif wanted is True and info.state is PluginState.DISABLED:
                        self.host.enable(plugin_id)
                    elif plugin_id in changed_isolation and info.state in (PluginState.ENABLED, PluginState.DISABLED):
                        # An isolation choice takes effect when the plugin is next loaded: now.
                        self.host.reload(plugin_id)
            except UnknownPluginError:
                continue  # a decision about a plugin this host does not have
            except StateStoreError:
                raise  # the loop backs off and the next pass applies it
            except AperioError as exc:
                # Not retried until the decision changes again: a plugin that cannot come up here
                # would otherwise be retried, and logged, on every pass.
                _log.warning("fleet: could not apply the decision about %s: %s", plugin_id, exc.message)
        # Only once every change was applied: after a store error the next pass sees them again.
        self._flags, self._isolation = flags, isolation

    def _converge(self) -> None:
        pinned = self.store.pinned_lock()
        if pinned is None:
            return
        retry = self._retry
        if pinned.revision == self._reconciled.revision:
            if retry is None or time.monotonic() < retry.due:
                return
            retry.attempt += 1
        else:
            retry = _Retry()
        self._reconciled = reconcile(self.host, self.store, pinned)
        if not self._reconciled.refusals:
            self._retry = None
            return
        delay = retry.schedule(self.retry_first, self.retry_max)
        self._retry = retry
        _log.warning(
            "fleet: lock revision %s: %d release(s) refused; retry %d in %.0f s",
            pinned.revision,
            len(self._reconciled.refusals),
            retry.attempt + 1,
            delay,
        )

    def _beat(self) -> None:
        plugins = [
            {"id": info.id, "version": info.version, "state": info.state.value, "distribution": info.distribution}
            for info in self.host.plugins()
        ]
        report = {
            "plugins": plugins,
            "installed": self._reconciled.installed,
            "refusals": self._reconciled.refusals,
            "drift": self._reconciled.drift,
            "retry": None
            if self._retry is None or self._retry.due_at is None
            else {
                "retries": self._retry.attempt,
                "next_attempt_at": self._retry.due_at.isoformat(),
            },
        }
        self.store.beat(
            self.name,
            started_at=self.started_at,
            lock_revision=self._reconciled.revision,
            report=json.dumps(report, sort_keys=True, default=str),
        )
        self._last_beat = time.monotonic()


def reconcile(host: PluginHost, store: StateStore, pinned: PinnedLock) -> _Reconciled:
    """Install what `pinned` lists that this host lacks, release by release, as `aperio plugin
    install --locked` would (the same checks and atomic transaction), then bring new plugins up.

    A refused release is reported with its reason and leaves the plugins directory as it was; the
    others still install. Installed distributions the lock does not list are reported as drift.
    """
    from .api._trail import applying_received
    from .registry import LockFile, RegistryClient

    outcome = _Reconciled(revision=pinned.revision)
    try:
        lock = LockFile.model_validate_json(pinned.lock_text)
    except ValueError as exc:
        outcome.refusals.append({"plugin_ids": [], "version": None, "reason": f"the pinned lock is invalid: {exc}"})
        return outcome
    # Not closed: closing a client closes its store, which is the host's. The trust configuration is
    # re-read, and the host's with it, so that a key added since the last attempt counts for the
    # install's check and for the load after it alike.
    client = RegistryClient(host.settings, store, host.reload_trust())
    changed = False
    for entry in lock.plugins:
        try:
            [result] = client.install_locked(lock, only=frozenset({entry.plugin_ids[0]}))
        except StateStoreError:
            raise  # not this release's fault: the revision is retried once the store answers
        except AperioError as exc:
            outcome.refusals.append(
                {"plugin_ids": entry.plugin_ids, "version": entry.version, "reason": exc.message.splitlines()[0]}
            )
            continue
        outcome.installed.append({"plugin_ids": list(result.plugin_ids), "version": result.version})
        changed = changed or not result.unchanged
    if changed:
        with applying_received():
            host.load()
            host.verify_pending()  # pinned plugins activated on first use show their signature status now
    pinned_distributions = {entry.distribution.lower().replace("_", "-") for entry in lock.plugins}
    outcome.drift = sorted(
        {
            f"{info.id} ({info.distribution} {info.version}) is installed but not in the fleet lock"
            for info in host.plugins()
            if info.distribution and info.distribution.lower().replace("_", "-") not in pinned_distributions
        }
    )
    _log.info(
        "fleet: lock revision %s: %d installed, %d refused",
        pinned.revision,
        len(outcome.installed),
        len(outcome.refusals),
    )
    return outcome


def fleet_view(store: FleetStore, ttl: timedelta = HOST_TTL) -> dict[str, Any]:
    """The fleet as `aperio fleet status --json` and `GET /api/v1/fleet` show it."""
    pinned = store.pinned_lock()
    hosts = []
    for beat in store.live_hosts(ttl):
        try:
            report = json.loads(beat.report)
        except ValueError:
            report = {}
        hosts.append(
            {
                "host": beat.host_name,
                "started_at": beat.started_at.isoformat(),
                "heartbeat_at": beat.heartbeat_at.isoformat(),
                "lock_revision": beat.lock_revision,
                "plugins": report.get("plugins", []),
                "refusals": report.get("refusals", []),
                "drift": report.get("drift", []),
                "retry": report.get("retry"),
            }
        )
    lock = None
    if pinned is not None:
        try:
            releases = json.loads(pinned.lock_text).get("plugins", [])
        except ValueError:
            releases = []
        lock = {
            "revision": pinned.revision,
            "pinned_at": pinned.pinned_at.isoformat(),
            "pinned_by": pinned.pinned_by,
            "pinned_on": pinned.pinned_on,
            "plugins": releases,
        }
    return {"lock": lock, "hosts": hosts}
