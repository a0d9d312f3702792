"""What a request brings besides its resource, checked before any request is sent.

Connection settings come from `RemediationRequest.config`; the action's own
inputs from `RemediationRequest.parameters`. The two are kept apart so that
an action's parameters never have to dodge the names of connection settings,
and so that a host configures the connection once for every action.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields

from aperio_hookspecs import PluginConfigurationError
from aperio_hookspecs.http import RetryPolicy, normalize_base_url

DEFAULT_BASE_URL = "https://api.box.com"


@dataclass(frozen=True)
class BoxSettings:
    base_url: str = DEFAULT_BASE_URL
    max_retries: int = 3
    retry_backoff: float = 1.0

    @property
    def retry_policy(self) -> RetryPolicy:
        return RetryPolicy(max_retries=self.max_retries, backoff=self.retry_backoff)


_KEYS = frozenset(field.name for field in fields(BoxSettings))


def parse_config(config: Mapping[str, object]) -> BoxSettings:
    """Return the checked connection settings; raise `PluginConfigurationError` naming the first bad key.

    Unknown keys are refused: a typo would otherwise silently fall back to a default.
    """
    unknown = sorted(set(config) - _KEYS)
    if unknown:
        raise PluginConfigurationError(f"unknown config key(s) {', '.join(unknown)}; known: {', '.join(sorted(_KEYS))}")
    defaults = BoxSettings()
    base_url = config.get("base_url", defaults.base_url)
    if not isinstance(base_url, str):
        raise PluginConfigurationError("base_url: expected a string")
    try:
        base_url = normalize_base_url(base_url)
    except ValueError as exc:
        raise PluginConfigurationError(f"base_url: {exc}") from None
    max_retries = config.get("max_retries", defaults.max_retries)
    # bool is an int to Python, never to a person writing `true` in a config file.
    if not isinstance(max_retries, int) or isinstance(max_retries, bool) or not 0 <= max_retries <= 10:
        raise PluginConfigurationError(f"max_retries: expected an integer from 0 to 10, got {max_retries!r}")
    backoff = config.get("retry_backoff", defaults.retry_backoff)
    if not isinstance(backoff, (int, float)) or isinstance(backoff, bool) or not 0 <= backoff <= 60:
        raise PluginConfigurationError(f"retry_backoff: expected a number from 0 to 60, got {backoff!r}")
    return BoxSettings(base_url=base_url, max_retries=max_retries, retry_backoff=float(backoff))


def check_parameters(parameters: Mapping[str, object], *, action: str, known: frozenset[str]) -> None:
    """Raise `PluginConfigurationError` naming every parameter key `action` does not take.

    A connection setting passed as a parameter (where it travelled before
    requests had a `config`) is pointed to its new place rather than ignored:
    ignoring it would send the request to the default Box URL.
    """
    unknown = sorted(set(parameters) - known)
    if not unknown:
        return
    takes = f"known: {', '.join(sorted(known))}" if known else "it takes none"
    message = f"unknown parameter(s) {', '.join(unknown)} for {action}; {takes}"
    misplaced = [key for key in unknown if key in _KEYS]
    if misplaced:
        message += f"; connection settings ({', '.join(misplaced)}) go in RemediationRequest.config"
    raise PluginConfigurationError(message)
