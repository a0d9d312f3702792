"""Host configuration from the environment (`APERIO_*`), validated with readable errors."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from ._model import TrustMode
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

    @field_validator("plugins_dir", "plugin_trusted_keys_dir", "plugin_trusted_identities", "state_dir")
    @classmethod
    def _expand_home(cls, value: Path) -> Path:
        return value.expanduser()

    @field_validator("environment")
    @classmethod
    def _normalize_environment(cls, value: str) -> str:
        value = value.strip().lower()
        if not value:
            raise ValueError("must not be empty")
        return value

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
