"""What the host audits about the plugins' surroundings, once per host: an unsafe trust configuration,
problems in the plugins directory, unsigned dependencies served from it, unreadable distributions."""

from __future__ import annotations

import warnings
from typing import Any

from ._model import TrustMode
from ._ownership import OwnedDistribution
from ._settings import HostSettings
from ._trust import Severity, TrustProblem, TrustStore
from .errors import AperioWarning
from .pipeline.discover import Discovery


class Reporter:
    """Audits each finding once for the life of one host, however many discoveries see it again."""

    def __init__(self, audit: Any, trust_mode: TrustMode) -> None:
        self._audit = audit
        self._trust_mode = trust_mode
        self._reported: set[str] = set()

    def trust_configuration(self, settings: HostSettings, trust: TrustStore) -> None:
        """Warn (and audit) a `disabled` trust mode outside development; audit the trust store's problems."""
        if self._trust_mode is TrustMode.DISABLED and not settings.is_development:
            message = (
                "APERIO_PLUGIN_TRUST_MODE=disabled outside a development environment: plugin files are not"
                " checked at all. Set APERIO_ENVIRONMENT=development for a throwaway sandbox, or use strict."
            )
            # Points at the code that built the host: PluginHost() -> trust_configuration -> here.
            warnings.warn(message, AperioWarning, stacklevel=4)
            self._audit.error("host.trust.disabled", environment=settings.environment, reason=message)
        for problem in trust.problems:
            self.problem(problem)

    def problem(self, problem: TrustProblem) -> None:
        if str(problem) in self._reported:
            return
        self._reported.add(str(problem))
        log = self._audit.error if problem.severity is Severity.ERROR else self._audit.warning
        log("host.trust.problem", subject=problem.subject, reason=problem.message)

    def dependency(self, distribution: OwnedDistribution, refused: str | None) -> None:
        """Audit a non-plugin distribution of the plugins directory that a plugin imports (or was refused)."""
        key = f"dependency {distribution.metadata_dir} {refused}"
        if key in self._reported:
            return
        self._reported.add(key)
        self._audit.warning(
            "plugin.dependency.unsigned",
            distribution=distribution.describe(),
            location=str(distribution.metadata_dir),
            importable=refused is None,
            reason=refused or f"not a plugin, unsigned; importable because trust mode is {self._trust_mode.value}",
        )

    def broken(self, discovery: Discovery) -> list[str]:
        """Audit every distribution whose metadata could not be read (each discovery); return their lines."""
        for item in discovery.broken:
            self._audit.warning(
                "plugin.discovery.failed", distribution=item.name, root=str(item.root), reason=item.reason
            )
        return [f"{item.name} in {item.root}: {item.reason}" for item in discovery.broken]
