"""Plugin API compatibility: semver over the plugin's requirement on aperio-hookspecs.

A plugin built for 1.0 (`>=1.0,<2`) loads on a 1.4 host; one that needs 1.5
does not, and neither does any 2.x plugin. The message always names both the
plugin's requirement and the host's version, and says which side to move.
"""

from __future__ import annotations

import functools

from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.version import InvalidVersion, Version

from aperio_hookspecs import DISTRIBUTION_NAME

_LOWER_BOUND_OPERATORS = frozenset({">=", ">", "~=", "==", "==="})


def _lower_bound_majors(specifiers: SpecifierSet) -> set[int]:
    majors = set()
    for specifier in specifiers:
        if specifier.operator not in _LOWER_BOUND_OPERATORS:
            continue
        try:
            majors.add(Version(specifier.version.removesuffix(".*")).major)
        except InvalidVersion:
            continue
    return majors


@functools.lru_cache(maxsize=1024)
def incompatibility(requirement: str, host_api_version: str) -> str | None:
    """Return why a plugin requiring `requirement` cannot load on `host_api_version`, or None if it can."""
    host = Version(host_api_version)
    try:
        specifiers = SpecifierSet(requirement)
    except InvalidSpecifier:
        return f"requirement {DISTRIBUTION_NAME}{requirement!r} is not a valid version specifier"
    if not str(specifiers):
        return (
            f"requirement on {DISTRIBUTION_NAME} has no version bound; declare the API it was built for,"
            f" e.g. {DISTRIBUTION_NAME}>={host.major}.0,<{host.major + 1}"
        )
    if specifiers.contains(host, prereleases=True):
        return None
    wanted = f"{DISTRIBUTION_NAME}{specifiers}"
    majors = _lower_bound_majors(specifiers)
    if majors and host.major not in majors:
        plugin_major = min(majors) if min(majors) > host.major else max(majors)
        return (
            f"built for plugin API {plugin_major}.x (requires {wanted}) but this host provides plugin API"
            f" {host}: major versions differ"
        )
    if any(host < spec_version for spec_version in _bounds(specifiers, (">=", ">", "~="))):
        return (
            f"requires {wanted} but this host provides plugin API {host}: upgrade aperio-hookspecs on the host"
            " or install an older release of the plugin"
        )
    return f"requires {wanted}, which excludes this host's plugin API {host}"


def _bounds(specifiers: SpecifierSet, operators: tuple[str, ...]) -> list[Version]:
    bounds = []
    for specifier in specifiers:
        if specifier.operator in operators:
            try:
                bounds.append(Version(specifier.version))
            except InvalidVersion:
                continue
    return bounds
