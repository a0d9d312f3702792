"""The Box connector: users and enterprise events in, envelopes out."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import ClassVar

from aperio_hookspecs import (
    Connector,
    Event,
    Finding,
    InvocationContext,
    PluginLogger,
    ProviderError,
    SyncRequest,
    SyncResult,
)
from aperio_hookspecs.http import HttpTransport, Sleep

from ._client import PROVIDER, BoxClient, JsonObject
from ._config import parse_config
from ._findings import inactive_admin, open_shared_link
from ._normalize import normalize_event, text

READ_SCOPE = "box:read"
# admin_logs starts at the oldest retained event from position 0.
FIRST_POSITION = "0"


class BoxConnector(Connector):
    """Syncs Box users and the enterprise event stream (admin_logs)."""

    name: ClassVar[str] = "box"
    provider: ClassVar[str] = PROVIDER
    description: ClassVar[str] = "Box users and enterprise events; flags open shared links and inactive admins."

    def __init__(self, *, sleep: Sleep = time.sleep) -> None:
        # Injectable so that tests can check a Retry-After is honoured without waiting it out.
        self._sleep = sleep

    def sync(self, context: InvocationContext, request: SyncRequest) -> SyncResult:
        """Return the events after `request.cursor`, the findings they and the user list show, and the next cursor.

        `has_more` is True when `request.max_items` stopped the sync before the
        end of the event stream. Raises `PluginConfigurationError` for a bad
        `request.config`, `CredentialNotGrantedError`
        without scope box:read, `ProviderError` when Box refuses or fails, and
        `DeadlineExceededError` when the deadline passes between or during pages.
        """
        config = parse_config(request.config)
        token = context.credentials.get(READ_SCOPE).secret.get_secret_value()
        log = context.logger.bind(connector=self.name)
        transport = HttpTransport(context, provider=PROVIDER, policy=config.retry_policy, sleep=self._sleep)
        client = BoxClient(transport, base_url=config.base_url, token=token)
        detected_at = datetime.now(timezone.utc)
        log.info("box.sync.started", cursor=request.cursor, max_items=request.max_items, base_url=config.base_url)

        findings: dict[str, Finding] = {}
        users = 0
        if config.scan_users:
            for user in _users(context, client, config.user_page_size, log):
                users += 1
                _keep(findings, inactive_admin(user, detected_at))

        stream = _event_entries(context, client, request, config.event_page_size, log)
        events: dict[str, Event] = {}
        for entry in stream.entries:
            event = normalize_event(entry)
            if event is None:
                log.warning("box.event.skipped", event_id=text(entry, "event_id"), reason="no event_id, type or time")
                continue
            if event.id in events:
                continue  # the streaming feeds may repeat an event; admin_logs promises not to
            events[event.id] = event
            # Later events overwrite earlier ones for the same item: the finding carries the latest evidence.
            _keep(findings, open_shared_link(entry, event, detected_at))

        log.info(
            "box.sync.finished",
            users=users,
            events=len(events),
            findings=len(findings),
            next_cursor=stream.next_cursor,
            has_more=stream.has_more,
        )
        return SyncResult(
            connector=self.name,
            events=tuple(events.values()),
            findings=tuple(findings.values()),
            next_cursor=stream.next_cursor,
            has_more=stream.has_more,
        )


def _keep(findings: dict[str, Finding], finding: Finding | None) -> None:
    if finding is not None:
        findings[finding.id] = finding


def _users(context: InvocationContext, client: BoxClient, page_size: int, log: PluginLogger) -> Iterator[JsonObject]:
    offset = 0
    while True:
        context.check_deadline()
        page = client.users_page(offset, page_size)
        log.debug("box.users.page", offset=offset, count=len(page.entries), total_count=page.total_count)
        yield from page.entries
        offset += len(page.entries)
        if not page.entries or offset >= page.total_count:
            return


@dataclass(frozen=True)
class _EventStream:
    """The raw events of one sync, where the next sync starts, and whether the stream goes on past them."""

    entries: list[JsonObject]
    next_cursor: str
    has_more: bool


def _event_entries(
    context: InvocationContext, client: BoxClient, request: SyncRequest, page_size: int, log: PluginLogger
) -> _EventStream:
    """Return up to `request.max_items` raw events after the cursor, and the position after the last one."""
    position = request.cursor or FIRST_POSITION
    entries: list[JsonObject] = []
    while len(entries) < request.max_items:
        context.check_deadline()
        # Never asking for more than may still be returned keeps the cursor
        # exact: the next sync resumes right after the last event returned here.
        limit = min(page_size, request.max_items - len(entries))
        page = client.events_page(position, limit)
        log.debug("box.events.page", stream_position=position, count=len(page.entries))
        if len(page.entries) > limit:
            # Dropping the surplus would lose events behind the cursor for good.
            raise ProviderError(PROVIDER, f"GET /2.0/events: asked for {limit} events, got {len(page.entries)}")
        position = page.next_stream_position
        if not page.entries:
            # An empty page is the only end-of-stream sign admin_logs gives.
            return _EventStream(entries, position, has_more=False)
        entries.extend(page.entries)
    # Stopped by max_items before an empty page. admin_logs tells what lies
    # beyond a position only when asked for it, so this is True even when
    # exactly max_items events were left: the next sync then finds none and
    # says so. A false True costs one sync; a false False would strand events
    # until the next scheduled one.
    return _EventStream(entries, position, has_more=True)
