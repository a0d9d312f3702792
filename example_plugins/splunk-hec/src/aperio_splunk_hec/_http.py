"""HTTP over the standard library, bounded by the invocation's deadline.

Each example plugin carries its own copy of this module on purpose: a plugin
depends on the plugin API and nothing else, so there is no shared helper
distribution to put it in.
"""

from __future__ import annotations

import email.message
import email.utils
import http.client
import ipaddress
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import IO, Any

from aperio_hookspecs import DeadlineExceededError, InvocationContext, ProviderError

RETRYABLE_STATUSES = frozenset({429, 500, 502, 503, 504})
MAX_RESPONSE_BYTES = 32 * 1024 * 1024
# Below this many seconds a socket timeout and the deadline are the same event.
_DEADLINE_SLACK = 0.05

Sleep = Callable[[float], None]


@dataclass(frozen=True)
class Response:
    status: int
    headers: Mapping[str, str]
    body: bytes

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300

    def header(self, name: str) -> str | None:
        return self.headers.get(name.lower())


@dataclass(frozen=True)
class RetryPolicy:
    """How often, and how long, to wait after 429 and 5xx answers."""

    max_retries: int = 3
    # Seconds before the first retry when the server names no Retry-After; doubles per retry.
    backoff: float = 1.0


def normalize_base_url(url: str) -> str:
    """Return `url` without a trailing slash.

    Raises `ValueError` unless it is https, or http to a loopback address:
    the requests carry a secret, which must not cross a network in clear text.
    """
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise ValueError(f"{url!r} is not an http(s) URL")
    if parts.scheme == "http" and not _is_loopback(parts.hostname):
        raise ValueError(f"{url!r} uses plain http to a non-loopback host; use https")
    if parts.username or parts.password or parts.query or parts.fragment:
        raise ValueError(f"{url!r} must not carry credentials, a query or a fragment")
    return url.rstrip("/")


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def retry_after_seconds(value: str | None, now: datetime | None = None) -> float | None:
    """Return the wait a Retry-After header asks for (delta-seconds or HTTP-date), or None."""
    if value is None:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return max(0.0, (when - (now or datetime.now(timezone.utc))).total_seconds())


class _RefuseRedirects(urllib.request.HTTPRedirectHandler):
    # urllib would replay the Authorization header to wherever a redirect
    # points; none of the endpoints these plugins call redirect, so a 3xx is
    # returned as the answer instead of followed.
    def redirect_request(
        self,
        req: urllib.request.Request,
        fp: IO[bytes],
        code: int,
        msg: str,
        headers: email.message.Message,
        newurl: str,
    ) -> None:
        return None


class HttpTransport:
    """Sends requests for one invocation; every wait and timeout comes from its deadline."""

    def __init__(
        self, context: InvocationContext, *, provider: str, policy: RetryPolicy, sleep: Sleep = time.sleep
    ) -> None:
        self._context = context
        self._provider = provider
        self._policy = policy
        self._sleep = sleep
        self._opener = urllib.request.build_opener(_RefuseRedirects)

    def request(self, method: str, url: str, *, headers: Mapping[str, str], body: bytes | None = None) -> Response:
        """Send one request, retrying 429 and 5xx within the policy and the deadline.

        Returns the last response, whatever its status. Raises
        `DeadlineExceededError` when the deadline passes and `ProviderError`
        when the server cannot be reached at all.
        """
        attempt = 0
        while True:
            response = self._send_once(method, url, headers, body)
            if response.status not in RETRYABLE_STATUSES or attempt >= self._policy.max_retries:
                return response
            wait = retry_after_seconds(response.header("retry-after"))
            if wait is None:
                wait = self._policy.backoff * 2**attempt
            if wait >= self._context.remaining() - _DEADLINE_SLACK:
                # Sleeping past the deadline would only turn the provider's
                # answer into a less useful DeadlineExceededError.
                self._context.logger.warning(
                    f"{self._provider}.http.retry_abandoned", status=response.status, wait=wait, url=_safe(url)
                )
                return response
            self._context.logger.warning(
                f"{self._provider}.http.retry", status=response.status, wait=wait, attempt=attempt + 1, url=_safe(url)
            )
            self._sleep(wait)
            attempt += 1

    def _send_once(self, method: str, url: str, headers: Mapping[str, str], body: bytes | None) -> Response:
        self._context.check_deadline()
        request = urllib.request.Request(url, data=body, method=method, headers=dict(headers))  # noqa: S310 - scheme checked by normalize_base_url
        raw: Any
        try:
            raw = self._opener.open(request, timeout=self._context.remaining())
        except urllib.error.HTTPError as error:
            raw = error  # an HTTP error status is still an answer, with headers and a body
        except (urllib.error.URLError, http.client.HTTPException, OSError) as error:
            raise self._failure(url, error) from error
        try:
            with raw:
                return Response(raw.status, _lower_headers(raw.headers), self._read(raw))
        except (http.client.HTTPException, OSError) as error:
            raise self._failure(url, error) from error

    def _read(self, stream: IO[bytes]) -> bytes:
        body = stream.read(MAX_RESPONSE_BYTES + 1)
        if len(body) > MAX_RESPONSE_BYTES:
            raise ProviderError(self._provider, f"response larger than {MAX_RESPONSE_BYTES} bytes")
        return body

    def _failure(self, url: str, error: Exception) -> Exception:
        if self._context.remaining() <= _DEADLINE_SLACK:
            return DeadlineExceededError(
                f"plugin {self._context.plugin_id!r}: deadline passed waiting for {_safe(url)}"
            )
        reason = error.reason if isinstance(error, urllib.error.URLError) else error
        return ProviderError(self._provider, f"cannot reach {_safe(url)}: {reason}")


def _lower_headers(message: email.message.Message) -> dict[str, str]:
    return {name.lower(): value for name, value in message.items()}


def _safe(url: str) -> str:
    # Logs and errors name the endpoint without its query: some APIs accept a
    # token in the query string (Splunk HEC does), and logs must never carry one.
    parts = urllib.parse.urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}{parts.path}"
