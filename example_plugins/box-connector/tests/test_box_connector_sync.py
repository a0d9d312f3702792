"""The Box connector against a Box API on 127.0.0.1: pagination, cursors, normalization and findings."""

from __future__ import annotations

import time
from datetime import datetime, timedelta, timezone

import pytest
from aperio_box_connector import REMOVE_SHARED_LINK, BoxConnector

from aperio_hookspecs import Actor, Severity, SyncRequest, SyncResult


def run_sync(box, context, *, cursor=None, max_items=10_000, **config) -> SyncResult:
    request = SyncRequest(connector="box", cursor=cursor, max_items=max_items, config={"base_url": box.url, **config})
    return BoxConnector().sync(context, request)


def file_source(item_id: str, name: str, item_type: str = "file") -> dict:
    # The admin_logs shape of an item: item_* keys, a parent, an owner.
    return {
        "item_type": item_type,
        "item_id": item_id,
        "item_name": name,
        "parent": {"type": "folder", "name": "Finance", "id": "7700"},
        "owned_by": {"type": "user", "id": "11446498", "name": "Ava Admin", "login": "ava@example.com"},
    }


def shared_link(access: str, *, effective: str | None = None, password: bool = False) -> dict:
    return {
        "url": "https://app.box.com/s/rh935iit6ewrmw0unyul",
        "access": access,
        "effective_access": effective or access,
        "is_password_enabled": password,
        "permissions": {"can_download": True, "can_preview": True, "can_edit": False},
    }


def test_sync_pages_through_users_and_events(box_api, box_read_context):
    box_api.add_user("Ava Admin", role="admin")
    box_api.add_user("Olga Old", role="admin", status="inactive")
    box_api.add_user("Cole Coadmin", role="coadmin", status="inactive")
    box_api.add_user("Una User", status="inactive")
    box_api.add_user("Ravi Regular")
    events = [box_api.add_event("LOGIN") for _ in range(5)]

    result = run_sync(box_api, box_read_context, user_page_size=2, event_page_size=2)

    assert [event.id for event in result.events] == [event["event_id"] for event in events]
    user_calls = box_api.calls("/2.0/users")
    assert [call.query["offset"] for call in user_calls] == ["0", "2", "4"]
    assert all("role" in call.query["fields"].split(",") for call in user_calls)
    event_calls = box_api.calls("/2.0/events")
    assert len(event_calls) == 4  # 2 + 2 + 1, then the empty page that ends the stream
    assert event_calls[0].query == {"stream_type": "admin_logs", "stream_position": "0", "limit": "2"}
    assert result.next_cursor == event_calls[-1].query["stream_position"] != "0"
    assert {request.authorization for request in box_api.requests} == {f"Bearer {box_api.token}"}
    assert sorted(finding.id for finding in result.findings) == [
        "box:inactive-admin:user:10000001",
        "box:inactive-admin:user:10000002",
    ]


def test_next_sync_resumes_from_the_cursor(box_api, box_read_context):
    first_batch = [box_api.add_event("LOGIN") for _ in range(3)]
    first = run_sync(box_api, box_read_context, scan_users=False)
    second_batch = [box_api.add_event("UPLOAD") for _ in range(2)]

    second = run_sync(box_api, box_read_context, cursor=first.next_cursor, scan_users=False)
    third = run_sync(box_api, box_read_context, cursor=second.next_cursor, scan_users=False)

    assert [event.id for event in first.events] == [event["event_id"] for event in first_batch]
    assert [event.id for event in second.events] == [event["event_id"] for event in second_batch]
    assert third.events == ()
    assert third.next_cursor == second.next_cursor


def test_max_items_caps_a_sync_and_the_cursor_loses_nothing(box_api, box_read_context):
    all_ids = [box_api.add_event("PREVIEW")["event_id"] for _ in range(7)]

    seen: list[str] = []
    cursor = None
    for _ in range(3):
        result = run_sync(box_api, box_read_context, cursor=cursor, max_items=3, event_page_size=5, scan_users=False)
        assert len(result.events) <= 3
        seen.extend(event.id for event in result.events)
        cursor = result.next_cursor

    assert seen == all_ids
    # Never asked Box for more than could still be returned.
    assert all(int(call.query["limit"]) <= 3 for call in box_api.calls("/2.0/events"))


def test_has_more_is_false_when_the_sync_drained_the_stream(box_api, box_read_context):
    for _ in range(5):
        box_api.add_event("LOGIN")

    result = run_sync(box_api, box_read_context, event_page_size=2, scan_users=False)

    assert len(result.events) == 5
    assert result.has_more is False
    assert box_api.calls("/2.0/events")[-1].query["stream_position"] == result.next_cursor  # ended on an empty page


def test_has_more_is_true_when_max_items_stopped_the_sync(box_api, box_read_context):
    all_ids = [box_api.add_event("PREVIEW")["event_id"] for _ in range(7)]

    first = run_sync(box_api, box_read_context, max_items=4, event_page_size=3, scan_users=False)
    rest = run_sync(box_api, box_read_context, cursor=first.next_cursor, max_items=4, scan_users=False)

    assert (len(first.events), first.has_more) == (4, True)
    assert (len(rest.events), rest.has_more) == (3, False)
    assert [event.id for event in first.events + rest.events] == all_ids
    finished = [record for record in box_read_context.logger.records if record.event == "box.sync.finished"]
    assert [record.fields["has_more"] for record in finished] == [True, False]


def test_has_more_is_true_when_the_cap_falls_exactly_on_the_end_of_the_stream(box_api, box_read_context):
    # admin_logs says nothing about what follows a page until asked, so a sync
    # capped by max_items cannot know it took the last event; the next one says so.
    for _ in range(3):
        box_api.add_event("LOGIN")

    capped = run_sync(box_api, box_read_context, max_items=3, scan_users=False)
    after = run_sync(box_api, box_read_context, cursor=capped.next_cursor, max_items=3, scan_users=False)

    assert (len(capped.events), capped.has_more) == (3, True)
    assert (after.events, after.has_more) == ((), False)
    assert after.next_cursor == capped.next_cursor


def test_events_are_normalized_from_both_box_source_shapes(box_api, box_read_context):
    admin_style = box_api.add_event(
        "UPLOAD", source=file_source("5000948880", "Q2 forecast.xlsx"), created_at="2024-05-06T10:53:43-07:00"
    )
    object_style = box_api.add_event(
        "COLLABORATION_INVITE",
        source={"type": "folder", "id": "7700", "name": "Finance", "owned_by": {"type": "user", "id": "42"}},
        created_at="2024-05-06T18:00:00Z",
    )
    user_style = box_api.add_event(
        "EDIT_USER", source={"type": "user", "id": "10000001", "name": "Olga Old", "login": "olga@example.com"}
    )

    result = run_sync(box_api, box_read_context, scan_users=False)

    upload, invite, edit = result.events
    assert upload.provider == "box"
    assert upload.type == "UPLOAD"
    assert upload.occurred_at == datetime(2024, 5, 6, 10, 53, 43, tzinfo=timezone(timedelta(hours=-7)))
    assert upload.actor == Actor(id="11446498", name="Ava Admin", login="ava@example.com")
    assert upload.resource is not None
    resource = upload.resource
    assert (resource.type, resource.id, resource.name) == ("file", "5000948880", "Q2 forecast.xlsx")
    assert upload.resource.owner == "ava@example.com"
    assert upload.resource.attributes == {"parent_id": "7700"}
    assert upload.ip_address == "203.0.113.7"
    assert upload.raw == admin_style
    assert invite.occurred_at == datetime(2024, 5, 6, 18, 0, tzinfo=timezone.utc)
    assert (invite.resource.type, invite.resource.id, invite.resource.owner) == ("folder", "7700", "42")
    assert invite.raw == object_style
    assert edit.resource.attributes == {"login": "olga@example.com"}
    assert edit.raw == user_style


@pytest.fixture
def local_zone_not_utc(monkeypatch):
    # On a machine whose zone is UTC, reading a naive time as local time would look right; make it not UTC.
    if not hasattr(time, "tzset"):
        pytest.skip("time.tzset is Unix-only")
    monkeypatch.setenv("TZ", "Asia/Kolkata")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


@pytest.mark.usefixtures("local_zone_not_utc")
def test_a_time_without_an_offset_is_read_as_utc(box_api, box_read_context):
    entry = box_api.add_event("LOGIN", created_at="2024-05-06T10:53:43")

    result = run_sync(box_api, box_read_context, scan_users=False)

    (event,) = result.events
    assert datetime(2024, 5, 6, 10, 53, 43).astimezone().utcoffset() != timedelta(0)  # the fixture took effect
    assert event.occurred_at == datetime(2024, 5, 6, 10, 53, 43, tzinfo=timezone.utc)
    assert event.raw["created_at"] == entry["created_at"]  # Box's own text is kept


def test_an_event_without_a_time_is_skipped_and_logged(box_api, box_read_context):
    broken = box_api.add_event("LOGIN")
    broken["created_at"] = None
    kept = box_api.add_event("LOGIN")

    result = run_sync(box_api, box_read_context, scan_users=False)

    assert [event.id for event in result.events] == [kept["event_id"]]
    skipped = [record for record in box_read_context.logger.records if record.event == "box.event.skipped"]
    assert [record.fields["event_id"] for record in skipped] == [broken["event_id"]]


@pytest.mark.parametrize(
    ("event_type", "where", "link", "expected"),
    [
        ("SHARE", "additional_details", shared_link("open"), Severity.HIGH),
        ("ITEM_SHARED_UPDATE", "source", shared_link("open"), Severity.HIGH),
        ("SHARED_LINK_SEND", "additional_details", shared_link("open"), Severity.HIGH),
        ("SHARE", "additional_details", shared_link("open", password=True), Severity.MEDIUM),
        ("SHARE", "additional_details", shared_link("open", effective="company"), None),
        ("SHARE", "additional_details", shared_link("company"), None),
        ("SHARE", "additional_details", shared_link("collaborators"), None),
        ("UNSHARE", "additional_details", shared_link("open"), None),
        ("DOWNLOAD", "source", shared_link("open"), None),
    ],
    ids=[
        "share-open",
        "shared-update-open",
        "shared-link-send-open",
        "open-behind-password",
        "open-narrowed-by-enterprise",
        "company-link",
        "collaborators-link",
        "unshare",
        "download-of-shared-item",
    ],
)
def test_open_shared_link_finding(box_api, box_read_context, event_type, where, link, expected):
    source = file_source("5000948880", "Q2 forecast.xlsx")
    if where == "source":
        source = {"type": "file", "id": "5000948880", "name": "Q2 forecast.xlsx", "shared_link": link}
        event = box_api.add_event(event_type, source=source)
    else:
        event = box_api.add_event(event_type, source=source, additional_details={"shared_link": link})

    result = run_sync(box_api, box_read_context, scan_users=False)

    if expected is None:
        assert result.findings == ()
        return
    (finding,) = result.findings
    assert finding.id == "box:open-shared-link:file:5000948880"
    assert finding.severity is expected
    assert finding.remediation_action == REMOVE_SHARED_LINK == "box.remove-shared-link"
    assert (finding.resource.type, finding.resource.id) == ("file", "5000948880")
    assert finding.evidence["event_id"] == event["event_id"]
    assert finding.evidence["url"] == link["url"]
    assert finding.evidence["shared_by"] == "ava@example.com"


def test_a_folder_shared_twice_gives_one_finding_with_the_latest_evidence(box_api, box_read_context):
    folder = file_source("7700", "Finance", item_type="folder")
    box_api.add_event("SHARE", source=folder, additional_details={"shared_link": shared_link("open", password=True)})
    latest = box_api.add_event(
        "ITEM_SHARED_UPDATE", source=folder, additional_details={"shared_link": shared_link("open")}
    )

    result = run_sync(box_api, box_read_context, scan_users=False)

    (finding,) = result.findings
    assert finding.id == "box:open-shared-link:folder:7700"
    assert finding.resource.type == "folder"
    assert finding.evidence["event_id"] == latest["event_id"]
    assert finding.severity is Severity.HIGH


def test_inactive_admin_finding_describes_the_account(box_api, box_read_context):
    box_api.add_user("Olga Old", role="admin", status="inactive")

    result = run_sync(box_api, box_read_context)

    (finding,) = result.findings
    assert finding.title == "Inactive Box account still holds the admin role"
    assert finding.severity is Severity.MEDIUM
    assert finding.remediation_action is None
    assert finding.resource.type == "user"
    assert finding.resource.attributes == {"login": "olga.old@example.com", "role": "admin", "status": "inactive"}


def test_scan_users_false_never_lists_users(box_api, box_read_context):
    box_api.add_user("Olga Old", role="admin", status="inactive")

    result = run_sync(box_api, box_read_context, scan_users=False)

    assert box_api.calls("/2.0/users") == []
    assert result.findings == ()


def test_sync_logs_its_start_and_end_without_the_token(box_api, box_read_context):
    box_api.add_user("Ava Admin", role="admin")
    box_api.add_event("LOGIN")

    run_sync(box_api, box_read_context)

    records = box_read_context.logger.records
    events = [record.event for record in records]
    assert events[0] == "box.sync.started"
    assert events[-1] == "box.sync.finished"
    assert records[-1].fields["events"] == 1
    assert records[-1].fields["plugin_id"] == "aperio.box-connector"
    assert box_api.token not in repr(records)
