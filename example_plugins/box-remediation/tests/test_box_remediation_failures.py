"""box.remove-shared-link when things go wrong: missing items, refusals, tokens, scopes, server errors."""

from __future__ import annotations

import pytest
from aperio_box_remediation import RemoveSharedLink

from aperio_hookspecs import (
    CredentialNotGrantedError,
    PluginConfigurationError,
    ProviderError,
    RemediationRequest,
    RemediationStatus,
    Resource,
)
from aperio_hookspecs.testing import make_context


def remediation(box, kind="file", item_id="42", *, dry_run=False, action="box.remove-shared-link", **config):
    return RemediationRequest(
        id="rem-0002",
        action=action,
        resource=Resource(type=kind, id=item_id),
        config={"base_url": box.url, **config},
        dry_run=dry_run,
    )


def recording_handler() -> tuple[RemoveSharedLink, list[float]]:
    sleeps: list[float] = []
    return RemoveSharedLink(sleep=sleeps.append), sleeps


@pytest.mark.parametrize("dry_run", [False, True], ids=["real", "dry-run"])
def test_a_missing_item_fails_with_a_clear_detail(box_items, box_write_context, dry_run):
    result = RemoveSharedLink().remediate(box_write_context, remediation(box_items, "file", "999", dry_run=dry_run))

    assert result.status is RemediationStatus.FAILED
    assert "file 999 not found" in result.detail
    assert "not_found" in result.detail
    assert box_items.methods() == ["GET"]


def test_an_item_deleted_between_read_and_write_fails(box_items, box_write_context):
    box_items.add_item("file", "42")
    box_items.fail_next("PUT", "/2.0/files/42", 404)

    result = RemoveSharedLink().remediate(box_write_context, remediation(box_items))

    assert result.status is RemediationStatus.FAILED
    assert "file 42 not found" in result.detail
    assert box_items.methods() == ["GET", "PUT"]


def test_an_item_out_of_the_tokens_reach_fails_as_not_permitted(box_items, box_write_context):
    box_items.add_item("folder", "7700")
    box_items.forbidden.add(("folder", "7700"))

    result = RemoveSharedLink().remediate(box_write_context, remediation(box_items, "folder", "7700"))

    assert result.status is RemediationStatus.FAILED
    assert "folder 7700 not permitted" in result.detail
    assert box_items.link_of("folder", "7700") is not None


def test_box_keeping_the_link_is_a_failure_not_a_success(box_items, box_write_context):
    box_items.add_item("file", "42")
    link = {"url": "https://app.box.com/s/x", "access": "open"}
    kept = {"type": "file", "id": "42", "etag": "2", "shared_link": link}
    box_items.fail_next("PUT", "/2.0/files/42", 200, body=kept)

    result = RemoveSharedLink().remediate(box_write_context, remediation(box_items))

    assert result.status is RemediationStatus.FAILED
    assert "Box still reports a shared link (open) on file 42" in result.detail


def test_a_wrong_token_is_a_provider_error_with_status_401(box_items):
    box_items.add_item("file", "42")
    context = make_context("aperio.box-remediation", credentials={"box:write": "stale-token"})

    with pytest.raises(ProviderError) as caught:
        RemoveSharedLink().remediate(context, remediation(box_items))

    assert caught.value.status == 401
    assert "stale-token" not in str(caught.value)
    assert box_items.link_of("file", "42") is not None


def test_without_the_write_scope_nothing_is_sent(box_items):
    box_items.add_item("file", "42")
    context = make_context("aperio.box-remediation", credentials={"box:read": box_items.token})

    with pytest.raises(CredentialNotGrantedError) as caught:
        RemoveSharedLink().remediate(context, remediation(box_items, dry_run=True))

    assert caught.value.scope == "box:write"
    assert box_items.requests == []


def test_a_transient_503_on_the_write_is_retried(box_items, box_write_context):
    box_items.add_item("file", "42")
    box_items.fail_next("PUT", "/2.0/files/42", 503, headers={"Retry-After": "2"})
    handler, sleeps = recording_handler()

    result = handler.remediate(box_write_context, remediation(box_items))

    assert result.status is RemediationStatus.SUCCEEDED
    assert sleeps == [2.0]
    assert box_items.methods() == ["GET", "PUT", "PUT"]
    assert box_items.link_of("file", "42") is None


def test_a_429_on_the_read_waits_then_goes_on(box_items, box_write_context):
    box_items.add_item("file", "42")
    box_items.fail_next("GET", "/2.0/files/42", 429, headers={"Retry-After": "0"})

    result = RemoveSharedLink().remediate(box_write_context, remediation(box_items))

    assert result.status is RemediationStatus.SUCCEEDED
    assert box_items.methods() == ["GET", "GET", "PUT"]


def test_a_persistent_5xx_is_a_provider_error_and_changes_nothing(box_items, box_write_context):
    box_items.add_item("file", "42")
    box_items.fail_next("PUT", "/2.0/files/42", 500, times=5)
    handler, sleeps = recording_handler()

    with pytest.raises(ProviderError) as caught:
        handler.remediate(box_write_context, remediation(box_items, max_retries=2, retry_backoff=0.1))

    assert caught.value.status == 500
    assert "internal_server_error" in str(caught.value)
    assert sleeps == [0.1, 0.2]
    assert box_items.link_of("file", "42") is not None


@pytest.mark.parametrize(
    ("kind", "item_id", "action", "expected"),
    [
        ("user", "42", "box.remove-shared-link", "resource type 'user'"),
        ("file", "../users/42", "box.remove-shared-link", "is not a Box id"),
        ("file", "42?fields=x", "box.remove-shared-link", "is not a Box id"),
        ("file", "42", "box.remove-collaborator", "not 'box.remove-collaborator'"),
    ],
    ids=["unsupported-type", "path-traversal-id", "query-injection-id", "other-action"],
)
def test_a_request_this_action_cannot_serve_fails_before_any_call(
    box_items, box_write_context, kind, item_id, action, expected
):
    box_items.add_item("file", "42")

    result = RemoveSharedLink().remediate(box_write_context, remediation(box_items, kind, item_id, action=action))

    assert result.status is RemediationStatus.FAILED
    assert expected in result.detail
    assert box_items.requests == []


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"base_url": "http://api.box.example"}, "base_url: .* plain http"),
        ({"base_url": 443}, "base_url: expected a string"),
        ({"max_retries": -1}, "max_retries"),
        ({"max_retries": True}, "max_retries"),
        ({"retry_backoff": "1"}, "retry_backoff"),
        ({"baseurl": "x"}, "unknown config key.*baseurl"),
    ],
    ids=["cleartext-off-host", "url-not-text", "negative-retries", "bool-as-int", "string-backoff", "typo"],
)
def test_bad_config_is_refused_before_any_call(box_items, box_write_context, config, message):
    request = remediation(box_items)
    request = request.model_copy(update={"config": {**request.config, **config}})

    with pytest.raises(PluginConfigurationError, match=message):
        RemoveSharedLink().remediate(box_write_context, request)

    assert box_items.requests == []


@pytest.mark.parametrize("dry_run", [False, True], ids=["real", "dry-run"])
def test_any_parameter_is_refused_by_name_before_any_call(box_items, box_write_context, dry_run):
    box_items.add_item("file", "42")
    request = remediation(box_items, dry_run=dry_run).model_copy(update={"parameters": {"notify_owner": True}})

    with pytest.raises(
        PluginConfigurationError,
        match=r"unknown parameter\(s\) notify_owner for box\.remove-shared-link; it takes none$",
    ):
        RemoveSharedLink().remediate(box_write_context, request)

    assert box_items.requests == []
    assert box_items.link_of("file", "42") is not None


def test_connection_settings_passed_as_parameters_are_pointed_to_config(box_items, box_write_context):
    # Where they travelled before requests had a config: ignoring them would send the token to api.box.com.
    box_items.add_item("file", "42")
    request = RemediationRequest(
        id="rem-0003",
        action="box.remove-shared-link",
        resource=Resource(type="file", id="42"),
        parameters={"base_url": box_items.url, "max_retries": 1},
    )

    with pytest.raises(PluginConfigurationError) as caught:
        RemoveSharedLink().remediate(box_write_context, request)

    message = str(caught.value)
    assert "unknown parameter(s) base_url, max_retries" in message
    assert "connection settings (base_url, max_retries) go in RemediationRequest.config" in message
    assert box_items.requests == []
