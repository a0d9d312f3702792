"""Host configuration from the environment (`APERIO_*`), validated with readable errors."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

from pydantic import Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from ._breaker import BreakerPolicy
from ._model import Isolation, TrustMode
from .errors import ConfigurationError

DEVELOPMENT = "development"


class HostSettings(BaseSettings):
    """The settings of the design's configuration table; every field reads `APERIO_<NAME>`."""

    model_config = SettingsConfigDict(env_prefix="APERIO_", frozen=True, extra="forbid")

    plugins_dir: Path = Path("~/.aperio/plugins")
    plugin_trust_mode: TrustMode = TrustMode.STRICT
    plugin_trusted_keys_dir: Path = Path("~/.aperio/plugin-keys")
    plugin_trusted_identities: Path = Path("~/.aperio/trusted-identities.toml")
    state_dir: Path = Path("~/.aperio/state")
    environment: str = "production"
    plugin_isolation: Isolation = Isolation.INPROCESS
    plugin_breaker_failures: Annotated[int, Field(gt=0)] = 5
    plugin_breaker_window: Annotated[float, Field(gt=0)] = 60.0
    plugin_breaker_reset: Annotated[float, Field(gt=0)] = 30.0

    @field_validator("plugins_dir", "plugin_trusted_keys_dir", "plugin_trusted_identities", "state_dir")
    @classmethod
    def _expand_home(cls, value: Path) -> Path:
        return value.expanduser()

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
