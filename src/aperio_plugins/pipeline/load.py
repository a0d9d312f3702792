"""Load: import an admitted plugin's object, and forget it again on unload.

The plugins directory is never put on the import path: its distributions are served by
finders scoped to their own files (`_boundary`). A directory of the host's environment that
a plugin was found in is appended to the import path, never put in front of it, and no
`.pth` file in it is processed.
"""

from __future__ import annotations

import importlib
import re
import sys
import types
from collections.abc import Iterator
from contextlib import contextmanager

from .._model import Candidate, Origin
from ..errors import PluginLoadError

# The entry point value grammar of the packaging spec: "module.path:attr.path".
_ENTRY_POINT_VALUE = re.compile(r"^(?P<module>[\w.]+)\s*(?::\s*(?P<attr>[\w.]+)\s*)?(?:\[[\w,\s-]*\])?$")


def parse_entry_point(value: str) -> tuple[str, tuple[str, ...]]:
    """Return (module, attribute path) of an entry point value; raise ValueError if malformed."""
    match = _ENTRY_POINT_VALUE.match(value.strip())
    if match is None or any(not part.isidentifier() for part in match.group("module").split(".")):
        raise ValueError(f"malformed entry point value {value!r}: expected 'module.path' or 'module.path:attribute'")
    attrs = tuple(match.group("attr").split(".")) if match.group("attr") else ()
    if any(not part.isidentifier() for part in attrs):
        raise ValueError(f"malformed entry point value {value!r}: attribute is not a dotted name")
    return match.group("module"), attrs


def plugin_module_names(candidate: Candidate) -> list[str]:
    """Return the names in `sys.modules` that belong to `candidate`'s top-level package."""
    top = candidate.top_level_package
    if top not in sys.modules:
        # The import system puts a package in sys.modules before any submodule and takes it out
        # last, so without the package there is nothing to find; this skips a scan of every
        # loaded module for each plugin brought up.
        return []
    prefix = top + "."
    return [name for name in list(sys.modules) if name == top or name.startswith(prefix)]


def forget_modules(candidate: Candidate) -> dict[str, types.ModuleType]:
    """Remove `candidate`'s modules from `sys.modules`; return them so they can be put back."""
    return {name: sys.modules.pop(name) for name in plugin_module_names(candidate)}


@contextmanager
def restore_on_failure(candidate: Candidate) -> Iterator[None]:
    """Set `candidate`'s modules aside for a fresh import; put them back if the block raises."""
    saved = forget_modules(candidate)
    try:
        yield
    except BaseException:
        forget_modules(candidate)
        sys.modules.update(saved)
        raise


def import_plugin(candidate: Candidate) -> object:
    """Import and return the object named by `candidate`'s entry point.

    Raises `PluginLoadError` with the entry point and the underlying error.
    """
    root = str(candidate.root)
    if candidate.origin is not Origin.PLUGINS_DIR and root not in sys.path:
        sys.path.append(root)
    where = f"entry point {candidate.plugin_id} = {candidate.entry_point}"
    try:
        module_name, attrs = parse_entry_point(candidate.entry_point)
    except ValueError as exc:
        raise PluginLoadError(str(exc), plugin_id=candidate.plugin_id, distribution=candidate.describe()) from None
    try:
        obj: object = importlib.import_module(module_name)
    except (Exception, SystemExit) as exc:
        raise PluginLoadError(
            f"{where}: import failed: {type(exc).__name__}: {exc}",
            plugin_id=candidate.plugin_id,
            distribution=candidate.describe(),
        ) from exc
    for attr in attrs:
        try:
            obj = getattr(obj, attr)
        except AttributeError:
            raise PluginLoadError(
                f"{where}: {module_name} has no attribute {'.'.join(attrs)!r}",
                plugin_id=candidate.plugin_id,
                distribution=candidate.describe(),
            ) from None
    return obj
