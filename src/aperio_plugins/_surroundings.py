"""The host's view of what surrounds its plugins: the last discovery's unreadable distributions, who owns
what in the plugins directory, and the boundary finders that serve its unsigned dependencies.

The ownership scan reads every RECORD of the plugins directory, so it waits until a plugin is
first evaluated (`scanned`), not done at discovery: a start whose plugins all wait for their first
use (lazy activation) reads none.
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from typing import Any

import msgspec

from ._boundary import Boundary
from ._reports import Reporter
from ._settings import HostSettings
from ._trust import plugins_dir_problems
from .pipeline.discover import Discovery, Survey, resolved_path, survey
from .pipeline.environment import Environment


class Surroundings:
    """One host's discoveries, and the plugins directory's ownership, scanned once per discovery on first need."""

    def __init__(self, settings: HostSettings, search_path: Sequence[str], audit: Any) -> None:
        self.plugins_root = resolved_path(settings.plugins_dir)
        self.reporter = Reporter(audit, settings.plugin_trust_mode)
        self.boundary = Boundary(self.plugins_root, settings.plugin_trust_mode, self.reporter.dependency)
        self.broken: tuple[str, ...] = ()  # distributions whose metadata the last discovery could not read
        self._settings = settings
        self._search_path = search_path
        self._unscanned: Survey | None = None  # the last discovery, if its plugins directory is not scanned yet

    def discover(self, env: Environment) -> tuple[Discovery, Environment]:
        """Run the discover stage and audit the distributions it could not read; return the discovery
        and `env` with its search roots (all that inspect needs)."""
        found = survey(self._search_path, self._settings.plugins_dir, self.plugins_root, env.cache)
        self._unscanned = found
        self.broken = tuple(self.reporter.broken(found.discovery))
        # Once per discovery, not per plugin: each call makes every finder on sys.path list its directory again.
        importlib.invalidate_caches()
        return found.discovery, msgspec.structs.replace(env, roots=found.roots)

    def scanned(self, env: Environment) -> Environment:
        """Return `env` with the plugins directory's ownership, scanning it if this discovery has not; serve
        its unsigned dependencies if the trust mode allows it, and audit problems not reported yet."""
        if self._unscanned is None:
            return env
        found, self._unscanned = self._unscanned, None
        self.boundary.update(found.layout, found.host_modules)
        for problem in plugins_dir_problems(found.layout, self._settings.plugin_trust_mode):
            self.reporter.problem(problem)
        return env.with_survey(found.roots, found.layout, found.host_modules)
