"""aperio_hookspecs.http against a real server on 127.0.0.1: retries within the deadline, Retry-After,
bearer tokens from the invocation's credentials, redirects returned, URLs without queries in logs."""

from __future__ import annotations

import email.utils
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from aperio_hookspecs import CredentialNotGrantedError, DeadlineExceededError, ProviderError
from aperio_hookspecs.http import HttpTransport, RetryPolicy, normalize_base_url, retry_after_seconds
from aperio_hookspecs.testing import make_context


@dataclass
class Script:
    """Answers to give, in order (status, headers); after them, 200 with body `ok`."""

    answers: list[tuple[int, dict[str, str]]] = field(default_factory=list)
    seen: list[dict[str, str]] = field(default_factory=list)


@pytest.fixture
def server() -> Iterator[tuple[str, Script]]:
    script = Script()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            script.seen.append({key.lower(): value for key, value in self.headers.items()} | {"path": self.path})
            status, headers = script.answers.pop(0) if script.answers else (200, {})
            body = b"ok" if status == 200 else b"no"
            self.send_response(status)
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}", script
    finally:
        httpd.shutdown()
        httpd.server_close()


def transport(context, sleeps: list[float], **options) -> HttpTransport:
    return HttpTransport(context, provider="acme", sleep=sleeps.append, **options)


def test_429_waits_the_retry_after_then_succeeds_and_logs_the_retry(server):
    url, script = server
    script.answers = [(429, {"Retry-After": "7"})]
    context, sleeps = make_context("acme.http"), []

    response = transport(context, sleeps).request("GET", f"{url}/items?token=s3cret")

    assert (response.status, response.body, sleeps) == (200, b"ok", [7.0])
    (retry,) = context.logger.records
    assert (retry.event, retry.fields["status"], retry.fields["wait"], retry.fields["attempt"]) == (
        "acme.http.retry",
        429,
        7.0,
        1,
    )
    assert retry.fields["url"] == f"{url}/items"  # never the query, which may hold a token


def test_an_http_date_retry_after_waits_until_that_date(server):
    url, script = server
    when = datetime.now(timezone.utc) + timedelta(seconds=6)
    script.answers = [(503, {"Retry-After": email.utils.format_datetime(when, usegmt=True)})]
    sleeps: list[float] = []

    transport(make_context("acme.http"), sleeps).request("GET", url)

    (slept,) = sleeps
    assert 4.0 < slept <= 6.0


def test_5xx_backs_off_exponentially_and_gives_the_last_answer_after_max_retries(server):
    url, script = server
    script.answers = [(500, {})] * 4
    sleeps: list[float] = []

    response = transport(make_context("acme.http"), sleeps, policy=RetryPolicy(max_retries=3, backoff=0.5)).request(
        "GET", url
    )

    assert response.status == 500
    assert sleeps == [0.5, 1.0, 2.0]
    assert len(script.seen) == 4


def test_a_retry_after_past_the_deadline_is_not_waited_for(server):
    url, script = server
    script.answers = [(429, {"Retry-After": "120"})]
    context, sleeps = make_context("acme.http", timeout=5), []

    response = transport(context, sleeps).request("GET", url)

    assert (response.status, sleeps, len(script.seen)) == (429, [], 1)
    assert [record.event for record in context.logger.records] == ["acme.http.retry_abandoned"]


def test_an_expired_deadline_sends_nothing(server):
    url, script = server

    with pytest.raises(DeadlineExceededError):
        transport(make_context("acme.http", timeout=0), []).request("GET", url)
    assert script.seen == []


def test_the_bearer_token_comes_from_the_invocations_credentials(server):
    url, script = server
    context = make_context("acme.http", credentials={"acme:read": "minted-for-this-call"})

    transport(context, [], bearer_scope="acme:read").request("GET", url)

    assert script.seen[0]["authorization"] == "Bearer minted-for-this-call"


def test_a_scope_not_granted_sends_nothing(server):
    url, script = server

    with pytest.raises(CredentialNotGrantedError):
        transport(make_context("acme.http"), [], bearer_scope="acme:write").request("GET", url)
    assert script.seen == []


def test_a_redirect_is_returned_not_followed_with_the_token(server):
    url, script = server
    script.answers = [(302, {"Location": "http://127.0.0.1:9/elsewhere"})]
    context = make_context("acme.http", credentials={"acme:read": "t"})

    response = transport(context, [], bearer_scope="acme:read").request("GET", url)

    assert (response.status, response.header("Location")) == (302, "http://127.0.0.1:9/elsewhere")
    assert len(script.seen) == 1


def test_an_unreachable_server_is_a_provider_error_without_the_query():
    closed = "http://127.0.0.1:9/x?token=s3cret"

    with pytest.raises(ProviderError) as caught:
        transport(make_context("acme.http"), []).request("GET", closed)

    assert "cannot reach http://127.0.0.1:9/x" in str(caught.value)
    assert "s3cret" not in str(caught.value)


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("http://example.com", "uses plain http to a non-loopback host"),
        ("https://user:pw@example.com", "must not carry credentials"),
        ("ftp://example.com", r"is not an http\(s\) URL"),
    ],
)
def test_normalize_base_url_refuses_what_would_leak_a_secret(url, message):
    with pytest.raises(ValueError, match=message):
        normalize_base_url(url)
    assert normalize_base_url("https://example.com/api/") == "https://example.com/api"


def test_retry_after_parses_seconds_dates_and_nonsense():
    now = datetime(2026, 1, 1, tzinfo=timezone.utc)
    assert retry_after_seconds("12") == 12.0
    assert retry_after_seconds("Thu, 01 Jan 2026 00:00:30 GMT", now=now) == 30.0
    assert retry_after_seconds("soon") is None
    assert retry_after_seconds(None) is None
