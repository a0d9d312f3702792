"""Every edge of the plugin API requirement against a host API version."""

from __future__ import annotations

import pytest

from aperio_plugins._compat import incompatibility

LOADS = [
    (">=1.0,<2", "1.0.0"),
    (">=1.0,<2", "1.4.0"),  # minor skew: built for 1.0, host is 1.4
    (">=1.0,<2", "1.99.3"),
    ("~=1.0", "1.4.0"),
    (">=1.2,<2", "1.2.0"),
    ("<2", "1.4.0"),
    (">=1.0,<2", "1.5.0rc1"),
    ("==1.4.*", "1.4.2"),
]


@pytest.mark.parametrize(("requirement", "host"), LOADS)
def test_compatible_requirements_load(requirement, host):
    assert incompatibility(requirement, host) is None


REFUSED = [
    (">=1.5,<2", "1.4.0", "requires aperio-hookspecs<2,>=1.5 but this host provides plugin API 1.4.0: upgrade"),
    (
        ">=2.0,<3",
        "1.4.0",
        "built for plugin API 2.x (requires aperio-hookspecs<3,>=2.0) but this host provides plugin API 1.4.0: major versions differ",
    ),
    (
        ">=1.0,<2",
        "2.0.0",
        "built for plugin API 1.x (requires aperio-hookspecs<2,>=1.0) but this host provides plugin API 2.0.0",
    ),
    ("~=2.1", "1.4.0", "built for plugin API 2.x"),
    (">=1.0,<1.4", "1.4.0", "requires aperio-hookspecs<1.4,>=1.0, which excludes this host's plugin API 1.4.0"),
    ("==1.0.*", "1.4.0", "which excludes this host's plugin API 1.4.0"),
    ("", "1.4.0", "has no version bound"),
    ("not a specifier", "1.4.0", "is not a valid version specifier"),
]


@pytest.mark.parametrize(("requirement", "host", "message"), REFUSED)
def test_incompatible_requirements_are_refused_naming_both_versions(requirement, host, message):
    reason = incompatibility(requirement, host)
    assert reason is not None
    assert message in reason
