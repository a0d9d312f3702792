"""JSON from outside the host (indexes, lock files, signature material, statements), parsed with bounds.

`json.loads` of a hundred thousand `[` raises `RecursionError`, and a document
nested a few hundred deep parses but then breaks any recursive code that walks
it (pydantic, `json.dumps` of an envelope). `loads_bounded` turns both into
`UntrustedJsonError`, a `ValueError`, so that every parser's existing
`except ValueError` turns it into that parser's own typed error.
"""

from __future__ import annotations

import json
from typing import Any

# The deepest document the host reads (a Sigstore bundle) is about eight levels deep.
MAX_JSON_DEPTH = 64


class UntrustedJsonError(ValueError):
    """A JSON document is nested deeper than the host reads."""


def _too_deep(document: Any, max_depth: int) -> bool:
    # Iterative on purpose: the point is not to recurse on a hostile document. Level by
    # level, so that a signed statement of thousands of files costs one list per level,
    # not a tuple per value (the walk was a third of verifying a 2,000-file plugin).
    level: list[Any] = [document]
    depth = 1
    while level:
        if depth > max_depth:
            return True
        below: list[Any] = []
        for value in level:
            children = value.values() if isinstance(value, dict) else value
            below += [child for child in children if isinstance(child, (dict, list))]
        level = below
        depth += 1
    return False


def loads_bounded(data: bytes | str, max_depth: int = MAX_JSON_DEPTH) -> Any:
    """Return the parsed JSON `data`.

    Raises `UntrustedJsonError` when it is nested more than `max_depth` deep, and
    `ValueError` (`json.JSONDecodeError`, `UnicodeDecodeError`) when it is not JSON.
    """
    try:
        document = json.loads(data)
    except RecursionError:
        raise UntrustedJsonError(f"nested more than {max_depth} levels deep") from None
    if isinstance(document, (dict, list)) and _too_deep(document, max_depth):
        raise UntrustedJsonError(f"nested more than {max_depth} levels deep")
    return document
