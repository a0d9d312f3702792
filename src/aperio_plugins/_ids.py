"""The plugin id rule, shared by the registry index, the wheel reader and the inspect stage.

Ids are ASCII only: a Cyrillic `\u0430` looks like a Latin `a` on every screen, and an
id rule that allowed it would let a look-alike plugin be installed next to the
real one and be mistaken for it in every listing.
"""

from __future__ import annotations

import re

PLUGIN_ID_MAX_LENGTH = 128
# Anchored for pydantic's `Field(pattern=...)`; `_PLUGIN_ID` is the same rule for `re.fullmatch`.
PLUGIN_ID_PATTERN = r"^[a-z0-9][a-z0-9._-]*$"
_PLUGIN_ID = re.compile(r"[a-z0-9][a-z0-9._-]*", re.ASCII)
PLUGIN_ID_RULE = (
    f"lowercase ASCII letters, digits, '.', '_' and '-', starting with a letter or digit,"
    f" at most {PLUGIN_ID_MAX_LENGTH} characters"
)


def plugin_id_problem(plugin_id: str) -> str | None:
    """Return why `plugin_id` breaks the id rule (naming it with non-ASCII escaped), or None if it is valid."""
    if len(plugin_id) <= PLUGIN_ID_MAX_LENGTH and _PLUGIN_ID.fullmatch(plugin_id):
        return None
    shown = ascii(plugin_id) if len(plugin_id) <= 2 * PLUGIN_ID_MAX_LENGTH else ascii(plugin_id[:64]) + "…"
    kind = "has non-ASCII characters" if not plugin_id.isascii() else "is not a valid plugin id"
    return f"plugin id {shown} {kind}: a plugin id is {PLUGIN_ID_RULE}"
