"""HTTP for plugins, bounded by the invocation's deadline (extra `aperio-hookspecs[http]`).

    from aperio_hookspecs.http import HttpTransport, RetryPolicy

    transport = HttpTransport(context, provider="box", policy=RetryPolicy(), bearer_scope="box:read")
    response = transport.request("GET", "https://api.box.com/2.0/users")

Every timeout and every wait comes from `context.remaining()`; 429 and 5xx answers are retried
with exponential backoff, or after the server's `Retry-After` (seconds or an HTTP date), and a
retry that would end past the deadline is not attempted: the caller gets the provider's own
answer instead of a less useful `DeadlineExceededError`. With `bearer_scope`, each request
carries a token minted for this invocation (`context.credentials.get(scope)`). Redirects are
returned, never followed, so that a token is never replayed to another host. Logs and errors
name URLs without their query string, which some APIs use for tokens.

httpx sends the requests; tenacity runs the retries. tenacity rather than stamina (built on it):
the retry rule here needs the computed wait when it decides whether to stop (a wait past the
deadline stops at once), and an injectable `sleep` so that authors' tests check the waits
without sleeping; stamina's policy hides both on purpose.
"""

from __future__ import annotations

import email.utils
import ipaddress
import time
import urllib.parse
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone

import httpx
import tenacity

from ._context import InvocationContext
from ._errors import DeadlineExceededError, ProviderError

__all__ = [
    "MAX_RESPONSE_BYTES",
    "RETRYABLE_STATUSES",
    "HttpTransport",
    "Response",
    "RetryPolicy",
    "Sleep",
    "normalize_base_url",
    "retry_after_seconds",
]

RETRYABLE_STATUSES = frozenset({429, 500, 502, 503, 504})
MAX_RESPONSE_BYTES = 32 * 1024 * 1024
# Below this many seconds a socket timeout and the deadline are the same event.
_DEADLINE_SLACK = 0.05

Sleep = Callable[[float], None]


@dataclass(frozen=True)
class Response:
    """An answer, whatever its status: `headers` keys are lowercase."""

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

    Raises `ValueError` unless it is https, or http to a loopback address (the requests carry a
    secret, which must not cross a network in clear text), with no credentials, query or fragment.
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


def safe_url(url: str) -> str:
    """`url` without its query and fragment, for logs and errors."""
    parts = urllib.parse.urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}{parts.path}"


class HttpTransport:
    """Sends the requests of one invocation; every wait and timeout comes from its deadline."""

    def __init__(
        self,
        context: InvocationContext,
        *,
        provider: str,
        policy: RetryPolicy | None = None,
        sleep: Sleep = time.sleep,
        bearer_scope: str | None = None,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self._context = context
        self._provider = provider
        self._policy = policy or RetryPolicy()
        self._sleep = sleep
        self._bearer_scope = bearer_scope
        # No redirects (a token must not follow one), no proxies or netrc from the environment
        # (a worker's environment is the host's business), no cookies kept between requests.
        self._client = httpx.Client(follow_redirects=False, trust_env=False, transport=transport)

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> HttpTransport:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def request(
        self, method: str, url: str, *, headers: Mapping[str, str] | None = None, body: bytes | None = None
    ) -> Response:
        """Send one request, retrying 429 and 5xx within the policy and the deadline.

        Returns the last response, whatever its status. Raises `DeadlineExceededError` when the
        deadline passes, `ProviderError` when the server cannot be reached at all, and
        `CredentialNotGrantedError` when `bearer_scope` is not granted (before anything is sent).
        """
        sent = dict(headers or {})
        if self._bearer_scope is not None:
            token = self._context.credentials.get(self._bearer_scope).secret.get_secret_value()
            sent["Authorization"] = f"Bearer {token}"
        retrying = tenacity.Retrying(
            retry=tenacity.retry_if_result(lambda response: response.status in RETRYABLE_STATUSES),
            stop=self._stop,
            wait=self._wait,
            sleep=self._sleep,
            before_sleep=lambda state: self._log_retry(state, url),
            retry_error_callback=lambda state: state.outcome.result() if state.outcome is not None else None,
            reraise=True,
        )
        response: Response = retrying(self._send_once, method, url, sent, body)
        return response

    def _wait(self, state: tenacity.RetryCallState) -> float:
        response = state.outcome.result() if state.outcome is not None else None
        wait = retry_after_seconds(response.header("retry-after")) if isinstance(response, Response) else None
        return wait if wait is not None else self._policy.backoff * 2 ** (state.attempt_number - 1)

    def _stop(self, state: tenacity.RetryCallState) -> bool:
        if state.attempt_number > self._policy.max_retries:
            return True
        wait = self._wait(state)
        if wait >= self._context.remaining() - _DEADLINE_SLACK:
            # Sleeping past the deadline would only turn the provider's answer into a less useful
            # DeadlineExceededError.
            response = state.outcome.result() if state.outcome is not None else None
            status = response.status if isinstance(response, Response) else None
            url = safe_url(str(state.args[1])) if len(state.args) > 1 else None
            self._context.logger.warning(f"{self._provider}.http.retry_abandoned", status=status, wait=wait, url=url)
            return True
        return False

    def _log_retry(self, state: tenacity.RetryCallState, url: str) -> None:
        response = state.outcome.result() if state.outcome is not None else None
        self._context.logger.warning(
            f"{self._provider}.http.retry",
            status=response.status if isinstance(response, Response) else None,
            wait=state.upcoming_sleep,
            attempt=state.attempt_number,
            url=safe_url(url),
        )

    def _send_once(self, method: str, url: str, headers: Mapping[str, str], body: bytes | None) -> Response:
        self._context.check_deadline()
        timeout = max(self._context.remaining(), 0.001)
        try:
            with self._client.stream(method, url, headers=headers, content=body, timeout=timeout) as raw:
                data = self._read(raw)
                return Response(raw.status_code, {k.lower(): v for k, v in raw.headers.items()}, data)
        except httpx.HTTPError as error:
            raise self._failure(url, error) from error

    def _read(self, raw: httpx.Response) -> bytes:
        chunks, size = [], 0
        for chunk in raw.iter_bytes():
            size += len(chunk)
            if size > MAX_RESPONSE_BYTES:
                raise ProviderError(self._provider, f"response larger than {MAX_RESPONSE_BYTES} bytes")
            chunks.append(chunk)
        return b"".join(chunks)

    def _failure(self, url: str, error: Exception) -> Exception:
        if self._context.remaining() <= _DEADLINE_SLACK:
            return DeadlineExceededError(
                f"plugin {self._context.plugin_id!r}: deadline passed waiting for {safe_url(url)}"
            )
        return ProviderError(self._provider, f"cannot reach {safe_url(url)}: {error}")
