"""The destination's configuration: `DeliveryBatch.config`, checked before anything is sent."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass, fields

from aperio_hookspecs import PluginConfigurationError
from aperio_hookspecs.http import RetryPolicy, normalize_base_url

DEFAULT_MAX_BATCH_BYTES = 1024 * 1024
DEFAULT_SOURCE = "aperio"


@dataclass(frozen=True)
class HecConfig:
    url: str
    sourcetype: str | None = None
    index: str | None = None
    host: str | None = None
    source: str = DEFAULT_SOURCE
    channel: str | None = None
    max_batch_bytes: int = DEFAULT_MAX_BATCH_BYTES
    max_retries: int = 3
    retry_backoff: float = 1.0

    @property
    def retry_policy(self) -> RetryPolicy:
        return RetryPolicy(max_retries=self.max_retries, backoff=self.retry_backoff)


_KEYS = frozenset(field.name for field in fields(HecConfig))


def parse_config(config: Mapping[str, object]) -> HecConfig:
    """Return the checked configuration; raise `PluginConfigurationError` naming the first bad key.

    Unknown keys are refused: a typo would otherwise silently fall back to a default.
    """
    unknown = sorted(set(config) - _KEYS)
    if unknown:
        raise PluginConfigurationError(f"unknown config key(s) {', '.join(unknown)}; known: {', '.join(sorted(_KEYS))}")
    url = config.get("url")
    if not isinstance(url, str):
        raise PluginConfigurationError("url: required, the HEC base URL such as https://splunk.example.com:8088")
    try:
        url = normalize_base_url(url)
    except ValueError as exc:
        raise PluginConfigurationError(f"url: {exc}") from None
    channel = _text(config, "channel")
    if channel is not None:
        try:
            uuid.UUID(channel)
        except ValueError:
            raise PluginConfigurationError(f"channel: HEC channels are GUIDs, got {channel!r}") from None
    return HecConfig(
        url=url,
        sourcetype=_text(config, "sourcetype"),
        index=_text(config, "index"),
        host=_text(config, "host"),
        source=_text(config, "source") or DEFAULT_SOURCE,
        channel=channel,
        max_batch_bytes=_integer(config, "max_batch_bytes", DEFAULT_MAX_BATCH_BYTES, 256, 512 * 1024 * 1024),
        max_retries=_integer(config, "max_retries", 3, 0, 10),
        retry_backoff=_number(config, "retry_backoff", 1.0, 0.0, 60.0),
    )


def _text(config: Mapping[str, object], key: str) -> str | None:
    value = config.get(key)
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip():
        raise PluginConfigurationError(f"{key}: expected a non-empty string, got {value!r}")
    return value


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
