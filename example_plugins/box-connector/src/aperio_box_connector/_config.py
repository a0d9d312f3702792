"""The connector's configuration: `SyncRequest.config`, checked before any request is sent."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields

from aperio_hookspecs import PluginConfigurationError
from aperio_hookspecs.http import RetryPolicy, normalize_base_url

DEFAULT_BASE_URL = "https://api.box.com"
# The largest pages Box serves: GET /users takes limit <= 1000, admin_logs <= 500.
MAX_USER_PAGE = 1000
MAX_EVENT_PAGE = 500


@dataclass(frozen=True)
class BoxConfig:
    base_url: str = DEFAULT_BASE_URL
    user_page_size: int = MAX_USER_PAGE
    event_page_size: int = MAX_EVENT_PAGE
    scan_users: bool = True
    max_retries: int = 3
    retry_backoff: float = 1.0

    @property
    def retry_policy(self) -> RetryPolicy:
        return RetryPolicy(max_retries=self.max_retries, backoff=self.retry_backoff)


_KEYS = frozenset(field.name for field in fields(BoxConfig))


def parse_config(config: Mapping[str, object]) -> BoxConfig:
    """Return the checked configuration; raise `PluginConfigurationError` naming the first bad key.

    Unknown keys are refused, as the envelopes refuse unknown fields: a typo
    would otherwise silently fall back to a default.
    """
    unknown = sorted(set(config) - _KEYS)
    if unknown:
        raise PluginConfigurationError(f"unknown config key(s) {', '.join(unknown)}; known: {', '.join(sorted(_KEYS))}")
    defaults = BoxConfig()
    base_url = config.get("base_url", defaults.base_url)
    if not isinstance(base_url, str):
        raise PluginConfigurationError("base_url: expected a string")
    try:
        base_url = normalize_base_url(base_url)
    except ValueError as exc:
        raise PluginConfigurationError(f"base_url: {exc}") from None
    scan_users = config.get("scan_users", defaults.scan_users)
    if not isinstance(scan_users, bool):
        raise PluginConfigurationError("scan_users: expected true or false")
    return BoxConfig(
        base_url=base_url,
        user_page_size=_integer(config, "user_page_size", defaults.user_page_size, 1, MAX_USER_PAGE),
        event_page_size=_integer(config, "event_page_size", defaults.event_page_size, 1, MAX_EVENT_PAGE),
        scan_users=scan_users,
        max_retries=_integer(config, "max_retries", defaults.max_retries, 0, 10),
        retry_backoff=_number(config, "retry_backoff", defaults.retry_backoff, 0.0, 60.0),
    )


def _integer(config: Mapping[str, object], key: str, default: int, low: int, high: int) -> int:
    value = config.get(key, default)
    # bool is an int to Python, never to a person writing `true` in a config file.
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise PluginConfigurationError(f"{key}: expected an integer from {low} to {high}, got {value!r}")
    return value


def _number(config: Mapping[str, object], key: str, default: float, low: float, high: float) -> float:
    value = config.get(key, default)
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not low <= value <= high:
        raise PluginConfigurationError(f"{key}: expected a number from {low} to {high}, got {value!r}")
    return float(value)
