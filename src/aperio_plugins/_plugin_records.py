"""The host's records: one per plugin id, changed under one lock, read as `PluginInfo` snapshots.

`PluginHost` decides when a record changes (after the stage that can fail has run); the
callbacks the stages carry for later (a guard's failed call, a breaker's move, a worker's
death) change one field of one record here, never the host.
"""

from __future__ import annotations

import threading
import traceback
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import msgspec

from ._catalog import PluginRegistrations
from ._model import Candidate, Isolation, PluginInfo, PluginState
from .errors import PluginCallError, UnknownPluginError

if TYPE_CHECKING:
    from .pipeline.register import Activated

_MAX_TRACEBACK_CHARS = 4000


@dataclass
class Slot:
    """The record of one plugin id. Replaced field by field, only after a step succeeded."""

    info: PluginInfo
    candidate: Candidate | None = None
    activated: Activated | None = None

    @property
    def registrations(self) -> PluginRegistrations:
        return self.activated.registrations if self.activated is not None else PluginRegistrations()


class Records:
    """Every plugin id the host knows, and the duplicates that lost to another distribution."""

    def __init__(self, audit: Any) -> None:
        self.lock = threading.RLock()
        self.slots: dict[str, Slot] = {}
        self.shadowed: list[PluginInfo] = []
        self._audit = audit

    def snapshot(self) -> tuple[PluginInfo, ...]:
        """Every record, by id, duplicates after their winner."""
        with self.lock:
            rows = [snapshot(slot) for slot in self.slots.values()] + list(self.shadowed)
        return tuple(sorted(rows, key=lambda info: (info.id, info.state is PluginState.FAILED, info.location or "")))

    def slot(self, plugin_id: str) -> Slot:
        """The record of `plugin_id`; raises `UnknownPluginError` if there is none."""
        slot = self.slots.get(plugin_id)
        if slot is None:
            known = ", ".join(sorted(self.slots)) or "none"
            raise UnknownPluginError(f"no plugin with id {plugin_id!r} (known: {known})", plugin_id=plugin_id)
        return slot

    def update(self, plugin_id: str, **changes: Any) -> None:
        """Change fields of the info of `plugin_id`, if the host still knows it."""
        with self.lock:
            slot = self.slots.get(plugin_id)
            if slot is not None:
                slot.info = msgspec.structs.replace(slot.info, **changes)

    def call_failed(self, plugin_id: str, hook_name: str, exc: BaseException) -> None:
        """Count a failed call against `plugin_id` and audit it (`plugin.call.failed`)."""
        text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))[-_MAX_TRACEBACK_CHARS:]
        error_type, error = type(exc).__name__, str(exc)
        if isinstance(exc, PluginCallError) and exc.remote_type is not None:
            # Raised by the plugin in its worker: recorded in the words of the same fault in process.
            error_type, error = exc.plugin_error_type or error_type, exc.remote_message or ""
        with self.lock:
            slot = self.slots.get(plugin_id)
            if slot is not None:
                slot.info = msgspec.structs.replace(
                    slot.info,
                    call_failures=slot.info.call_failures + 1,
                    last_call_error=f"{hook_name}: {error_type}: {error}",
                )
        fields = {"hook": hook_name, "error_type": error_type, "error": error, "traceback": text}
        self._audit.error("plugin.call.failed", plugin_id=plugin_id, **fields)


def snapshot(slot: Slot) -> PluginInfo:
    """The slot's info, with the live state of its worker if it runs in one."""
    activated = slot.activated
    # Only a plugin loaded into a worker has one; the worker's host side was imported to start it.
    if activated is None or activated.loaded.isolation is not Isolation.PROCESS:
        return slot.info
    from .worker import WorkerPlugin

    worker = activated.loaded.plugin
    if not isinstance(worker, WorkerPlugin):
        return slot.info
    live = worker.status()
    return msgspec.structs.replace(
        slot.info,
        worker_pid=live.pid,
        worker_restarts=live.restarts,
        worker_state=live.state.value,
        worker_containment=live.containment,
        worker_containment_gaps=live.containment_gaps,
    )
