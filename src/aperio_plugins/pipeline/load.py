"""Load: bring up an admitted plugin's object (imported here, or a worker's stand-in), and forget it on unload.

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
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

import msgspec

from .._boundary import record_tree
from .._model import Candidate, FailureStage, Inspected, Isolation, Origin, Refusal, SignatureStatus, Verification
from ..errors import HandshakeError, PluginLoadError, TamperedFileError, VerificationError, WorkerError
from .environment import Environment, Refused

if TYPE_CHECKING:
    from ..importing import VerifiedImporter

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


class Loaded(msgspec.Struct, frozen=True):
    """A plugin object ready for register, and what to undo when it goes.

    `plugin` is whatever carries the hookimpls (the entry point's object imported in this
    process, or a worker's stand-in); register asks nothing more of it, so another kind of
    stand-in can take its place. `importer` serves a verified plugin's files for the imports
    it makes later; `stop` ends its worker.
    """

    inspected: Inspected
    plugin: object
    isolation: Isolation
    importer: VerifiedImporter | None = None
    stop: Callable[[], None] | None = None

    def release(self) -> None:
        """Undo what loading set up outside the plugin manager: the worker, the importer."""
        if self.stop is not None:
            self.stop()
        if self.importer is not None:
            from ..importing import remove_importer

            remove_importer(self.importer)


def isolation_of(inspected: Inspected, env: Environment, override: Isolation | None) -> Isolation:
    """The operator's choice for this plugin, else process if the host default or the plugin asks for it.

    A plugin cannot opt out of a process-wide default: only the operator can, per plugin.
    """
    if override is not None:
        return override
    if Isolation.PROCESS in (env.default_isolation, inspected.manifest.isolation):
        return Isolation.PROCESS
    return Isolation.INPROCESS


def load(
    inspected: Inspected, verification: Verification | None, env: Environment, isolation: Isolation | None = None
) -> Loaded:
    """The load stage: import the admitted plugin in this process through a finder that executes only
    the verified bytes, or start its worker, which runs the whole pipeline again on what is on disk.

    `isolation` is the operator's override. Raises `Refused` (stage verify for a file changed since
    verification, else the stage that failed); nothing is left installed then.
    """
    if isolation_of(inspected, env, isolation) is Isolation.PROCESS and env.start_worker is not None:
        return _in_worker(inspected, env)
    return _in_process(inspected, verification, env)


def _in_worker(inspected: Inspected, env: Environment) -> Loaded:
    assert env.start_worker is not None
    try:
        plugin = env.start_worker(inspected.candidate.plugin_id, inspected.manifest.network)
    except HandshakeError as exc:
        stage = FailureStage(exc.stage) if exc.stage else FailureStage.LOAD
        raise Refused(Refusal(stage, exc.message)) from exc
    except WorkerError as exc:
        raise Refused(Refusal(FailureStage.LOAD, exc.message)) from exc
    return Loaded(inspected, plugin, Isolation.PROCESS, stop=plugin.stop)


def _in_process(inspected: Inspected, verification: Verification | None, env: Environment) -> Loaded:
    from ..importing import remove_importer

    importer = plugin_importer(inspected, verification, env)
    try:
        plugin = import_plugin(inspected.candidate)
    except PluginLoadError as exc:
        if importer is not None:
            remove_importer(importer)
        stage = FailureStage.VERIFY if isinstance(exc.__cause__, TamperedFileError) else FailureStage.LOAD
        raise Refused(Refusal(stage, exc.message)) from exc
    if importer is not None and importer.refusals:
        # The plugin caught the ImportError its tampered file raised; it is refused all the same.
        remove_importer(importer)
        raise Refused(Refusal(FailureStage.VERIFY, importer.refusals[0].message))
    return Loaded(inspected, plugin, Isolation.INPROCESS, importer)


def plugin_importer(
    inspected: Inspected, verification: Verification | None, env: Environment
) -> VerifiedImporter | None:
    """Install the finder scoped to the plugin's files: its signed statement when verified, its
    RECORD when it is unsigned code from the plugins directory. Raises `Refused` (stage verify)."""
    # The finders and loaders of verified bytes load with the first plugin imported in this process:
    # a listing, and a start whose plugins wait for their first call, import none.
    from ..importing import VerifiedTree, install_importer

    candidate = inspected.candidate
    try:
        if verification is not None and verification.status is SignatureStatus.VERIFIED:
            tree = VerifiedTree(candidate.plugin_id, candidate.root, verification.digests, verification.packages)
            return install_importer(tree, code_cache=env.code_cache)
        if candidate.origin is not Origin.PLUGINS_DIR:
            return None
        owned = env.layout.distribution_at(candidate.metadata_dir)
        if owned is None or not owned.files:
            raise VerificationError(f"{candidate.metadata_dir.name} has no RECORD: no file of it is importable")
        return install_importer(record_tree(owned, candidate.root, candidate.plugin_id), code_cache=env.code_cache)
    except VerificationError as exc:
        raise Refused(Refusal(FailureStage.VERIFY, exc.message)) from exc
