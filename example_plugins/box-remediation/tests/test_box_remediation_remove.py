"""box.remove-shared-link against Box files and folders on 127.0.0.1: removal, dry run, not needed."""

from __future__ import annotations

import pytest
from aperio_box_remediation import RemoveSharedLink

from aperio_hookspecs import ActionDefinition, RemediationRequest, RemediationStatus, Resource


def remediation(box, kind: str, item_id: str, *, dry_run: bool = False, **config) -> RemediationRequest:
    return RemediationRequest(
        id="rem-0001",
        action="box.remove-shared-link",
        resource=Resource(type=kind, id=item_id),
        config={"base_url": box.url, **config},
        dry_run=dry_run,
    )


def test_the_action_is_declared_destructive_with_dry_run():
    action = RemoveSharedLink.action

    assert ActionDefinition.model_validate(action.model_dump()) == action
    assert action.name == "box.remove-shared-link"
    assert action.provider == "box"
    assert action.resource_types == ("file", "folder")
    assert action.destructive is True
    assert action.supports_dry_run is True


@pytest.mark.parametrize(("kind", "collection"), [("file", "files"), ("folder", "folders")])
def test_removes_the_shared_link_on_the_server(box_items, box_write_context, kind, collection):
    before = box_items.add_item(kind, "5000948880")["shared_link"]

    result = RemoveSharedLink().remediate(box_write_context, remediation(box_items, kind, "5000948880"))

    assert result.status is RemediationStatus.SUCCEEDED
    assert box_items.link_of(kind, "5000948880") is None
    get, put = box_items.requests
    assert (get.method, get.path, get.query) == ("GET", f"/2.0/{collection}/5000948880", {"fields": "shared_link"})
    assert (put.method, put.path, put.query) == ("PUT", f"/2.0/{collection}/5000948880", {"fields": "shared_link"})
    assert put.body == {"shared_link": None}
    assert put.authorization == f"Bearer {box_items.token}"
    assert result.request_id == "rem-0001"
    assert result.action == "box.remove-shared-link"
    assert result.changes == {
        "shared_link": {
            "from": {"url": before["url"], "access": "open", "effective_access": "open", "is_password_enabled": False},
            "to": None,
        }
    }


def test_dry_run_reads_but_never_writes(box_items, box_write_context):
    link = box_items.add_item("file", "42")["shared_link"]

    result = RemoveSharedLink().remediate(box_write_context, remediation(box_items, "file", "42", dry_run=True))

    assert result.status is RemediationStatus.DRY_RUN
    assert box_items.link_of("file", "42") == link
    assert box_items.methods() == ["GET"]
    assert link["url"] in result.detail
    assert result.changes["shared_link"]["to"] is None


@pytest.mark.parametrize("dry_run", [False, True], ids=["real", "dry-run"])
def test_an_item_without_a_shared_link_is_not_needed(box_items, box_write_context, dry_run):
    box_items.add_item("folder", "7700", access=None)

    result = RemoveSharedLink().remediate(box_write_context, remediation(box_items, "folder", "7700", dry_run=dry_run))

    assert result.status is RemediationStatus.NOT_NEEDED
    assert box_items.methods() == ["GET"]
    assert result.changes == {}


def test_a_company_link_is_removed_too(box_items, box_write_context):
    # The action removes whatever link there is; deciding which links matter is the finding's job.
    box_items.add_item("file", "77", access="company")

    result = RemoveSharedLink().remediate(box_write_context, remediation(box_items, "file", "77"))

    assert result.status is RemediationStatus.SUCCEEDED
    assert box_items.link_of("file", "77") is None


def test_a_second_run_finds_nothing_to_do(box_items, box_write_context):
    box_items.add_item("file", "42")
    handler = RemoveSharedLink()

    first = handler.remediate(box_write_context, remediation(box_items, "file", "42"))
    second = handler.remediate(box_write_context, remediation(box_items, "file", "42"))

    assert (first.status, second.status) == (RemediationStatus.SUCCEEDED, RemediationStatus.NOT_NEEDED)
    assert box_items.methods() == ["GET", "PUT", "GET"]


def test_logs_the_outcome_without_the_token(box_items, box_write_context):
    box_items.add_item("file", "42")

    RemoveSharedLink().remediate(box_write_context, remediation(box_items, "file", "42"))

    records = box_write_context.logger.records
    assert [record.event for record in records] == ["box.remediation.started", "box.remediation.finished"]
    assert records[-1].fields["status"] == "succeeded"
    assert records[-1].fields["item"] == "file:42"
    assert box_items.token not in repr(records)
