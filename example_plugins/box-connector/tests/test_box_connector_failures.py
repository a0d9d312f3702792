"""The Box connector's refusals and failures: tokens, scopes, rate limits, server errors, deadlines, config."""

from __future__ import annotations

import time

import pytest
from aperio_box_connector import BoxConnector

from aperio_hookspecs import (
    CredentialNotGrantedError,
    DeadlineExceededError,
    PluginConfigurationError,
    ProviderError,
    SyncRequest,
)
from aperio_hookspecs.testing import make_context


def sync_request(box, **config) -> SyncRequest:
    return SyncRequest(connector="box", config={"base_url": box.url, **config})


def recording_connector() -> tuple[BoxConnector, list[float]]:
    sleeps: list[float] = []
    return BoxConnector(sleep=sleeps.append), sleeps


def test_wrong_token_is_a_provider_error_with_status_401(box_api):
    box_api.add_user("Ava Admin")
    context = make_context("aperio.box-connector", credentials={"box:read": "revoked-token"})

    with pytest.raises(ProviderError) as caught:
        BoxConnector().sync(context, sync_request(box_api))

    assert caught.value.status == 401
    assert caught.value.provider == "box"
    assert "The access token provided is invalid." in str(caught.value)
    assert "revoked-token" not in str(caught.value)
    assert len(box_api.requests) == 1  # a refused token is not retried


def test_scope_not_granted_sends_nothing(box_api):
    context = make_context("aperio.box-connector", credentials={"box:write": box_api.token})

    with pytest.raises(CredentialNotGrantedError) as caught:
        BoxConnector().sync(context, sync_request(box_api))

    assert caught.value.scope == "box:read"
    assert box_api.requests == []


def test_429_waits_the_retry_after_then_succeeds(box_api, box_read_context):
    box_api.add_user("Ava Admin")
    box_api.fail_next("/2.0/users", 429, headers={"Retry-After": "7"})
    connector, sleeps = recording_connector()

    result = connector.sync(box_read_context, sync_request(box_api))

    assert sleeps == [7.0]
    assert len(box_api.calls("/2.0/users")) == 2
    assert result.next_cursor is not None
    retries = [record for record in box_read_context.logger.records if record.event == "box.http.retry"]
    assert [(record.fields["status"], record.fields["wait"]) for record in retries] == [(429, 7.0)]


def test_429_with_retry_after_zero_retries_with_the_real_clock(box_api, box_read_context):
    box_api.add_event("LOGIN")
    box_api.fail_next("/2.0/events", 429, headers={"Retry-After": "0"})

    result = BoxConnector().sync(box_read_context, sync_request(box_api, scan_users=False))

    assert len(result.events) == 1


def test_429_whose_retry_after_outlasts_the_deadline_fails_at_once(box_api):
    box_api.fail_next("/2.0/users", 429, headers={"Retry-After": "120"})
    context = make_context("aperio.box-connector", credentials={"box:read": box_api.token}, timeout=5)
    connector, sleeps = recording_connector()

    with pytest.raises(ProviderError) as caught:
        connector.sync(context, sync_request(box_api))

    assert caught.value.status == 429
    assert "Retry-After: 120" in str(caught.value)
    assert sleeps == []
    assert len(box_api.calls("/2.0/users")) == 1


def test_persistent_429_gives_up_after_max_retries(box_api, box_read_context):
    box_api.fail_next("/2.0/users", 429, headers={"Retry-After": "1"}, times=5)
    connector, sleeps = recording_connector()

    with pytest.raises(ProviderError) as caught:
        connector.sync(box_read_context, sync_request(box_api, max_retries=2))

    assert caught.value.status == 429
    assert sleeps == [1.0, 1.0]
    assert len(box_api.calls("/2.0/users")) == 3


def test_503_is_retried_with_backoff_then_succeeds(box_api, box_read_context):
    box_api.add_event("LOGIN")
    box_api.fail_next("/2.0/events", 503)
    connector, sleeps = recording_connector()

    result = connector.sync(box_read_context, sync_request(box_api, scan_users=False, retry_backoff=0.25))

    assert sleeps == [0.25]
    assert len(result.events) == 1


def test_persistent_500_is_a_provider_error_after_exponential_backoff(box_api, box_read_context):
    box_api.add_event("LOGIN")
    box_api.fail_next("/2.0/events", 500, times=10)
    connector, sleeps = recording_connector()

    with pytest.raises(ProviderError) as caught:
        connector.sync(box_read_context, sync_request(box_api, scan_users=False, retry_backoff=0.5, max_retries=3))

    assert caught.value.status == 500
    assert "internal_server_error" in str(caught.value)
    assert sleeps == [0.5, 1.0, 2.0]
    assert len(box_api.calls("/2.0/events")) == 4


def test_a_slow_box_runs_into_the_deadline_not_past_it(box_api):
    box_api.delay = 3.0
    context = make_context("aperio.box-connector", credentials={"box:read": box_api.token}, timeout=0.4)

    started = time.monotonic()
    with pytest.raises(DeadlineExceededError):
        BoxConnector().sync(context, sync_request(box_api))

    assert time.monotonic() - started < 1.5


def test_an_expired_deadline_sends_nothing(box_api):
    context = make_context("aperio.box-connector", credentials={"box:read": box_api.token}, timeout=0)

    with pytest.raises(DeadlineExceededError):
        BoxConnector().sync(context, sync_request(box_api))

    assert box_api.requests == []


def test_a_redirect_is_not_followed_with_the_token(box_api, box_read_context):
    box_api.fail_next("/2.0/users", 302, headers={"Location": f"{box_api.url}/collector"})

    with pytest.raises(ProviderError) as caught:
        BoxConnector().sync(box_read_context, sync_request(box_api))

    assert caught.value.status == 302
    assert box_api.calls("/collector") == []


def test_a_malformed_answer_is_a_provider_error(box_api, box_read_context):
    box_api.fail_next("/2.0/events", 200)  # a 200 whose body is Box's error object, not an events page

    with pytest.raises(ProviderError, match="next_stream_position"):
        BoxConnector().sync(box_read_context, sync_request(box_api, scan_users=False))


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"base_url": "http://api.box.example"}, "plain http"),
        ({"base_url": "ftp://127.0.0.1/"}, "not an http"),
        ({"base_url": "https://user:pw@api.box.com"}, "credentials"),
        ({"event_page_size": 501}, "event_page_size"),
        ({"user_page_size": 0}, "user_page_size"),
        ({"max_retries": True}, "max_retries"),
        ({"scan_users": "yes"}, "scan_users"),
        ({"bse_url": "https://api.box.com"}, "unknown config key"),
    ],
    ids=[
        "cleartext-off-host",
        "wrong-scheme",
        "userinfo",
        "page-too-big",
        "page-zero",
        "bool-as-int",
        "str-as-bool",
        "typo",
    ],
)
def test_bad_config_is_refused_before_any_request(box_api, box_read_context, config, message):
    request = SyncRequest(connector="box", config={"base_url": box_api.url, **config})

    with pytest.raises(PluginConfigurationError, match=message):
        BoxConnector().sync(box_read_context, request)

    assert box_api.requests == []
