"""Project names normalized as PEP 503 says, for the modules a start or a listing imports.

`packaging.utils.canonicalize_name` does the same, but importing `packaging.utils` imports
`packaging.tags`, and with it `subprocess`, `sysconfig` and `platform`, which nothing else on
those paths needs. A test checks that both agree.
"""

from __future__ import annotations


def canonicalize_name(name: str) -> str:
    """Return `name` lower-cased with every run of `-`, `_` and `.` made one `-` (PEP 503)."""
    value = name.lower().replace("_", "-").replace(".", "-")
    while "--" in value:
        value = value.replace("--", "-")
    return value
