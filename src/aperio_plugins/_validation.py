"""One way to say what pydantic refused: the first error's location and message."""

from __future__ import annotations

from pydantic import ValidationError


def first_problem(exc: ValidationError) -> str:
    """Return 'field.path: message' for the first error, noting how many more there were."""
    first = exc.errors()[0]
    location = ".".join(str(part) for part in first["loc"]) or "(root)"
    more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
    return f"{location}: {first['msg']}{more}"
