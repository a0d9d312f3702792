"""`aperio plugin check`: everything a strict host would refuse in a plugin wheel, before it is signed.

The checks are the host's own (the wheel reader, the id rule, the layout and collision
rules, the API compatibility rule, the manifest parser), run on the wheel the author is
about to sign, and collected instead of stopping at the first: an author fixes them all
in one round. Only the hookimpl check runs plugin code, in a child process, because
pluggy validates a hookimpl against its hookspec only when it registers the object.
"""

from __future__ import annotations

import importlib.machinery
import importlib.metadata
import json
import os
import subprocess
import sys
import tempfile
import urllib.parse
import urllib.request
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Literal

import msgspec
from packaging.utils import canonicalize_name

from aperio_hookspecs import API_VERSION

from ._compat import incompatibility
from ._dev import DEV_MARKER
from ._lazy import declaration_problem
from ._manifest import MANIFEST_NAME, manifest_sections
from ._model import SignatureStatus
from ._ownership import HostModules, collision, import_names
from ._settings import HostSettings
from ._trust import load_trust_store
from ._verify import verify_wheel
from ._wheel import Wheel, read_wheel
from .errors import AperioError, ArtifactRejectedError, InvalidWheelError, ManifestError, PluginCheckError

Severity = Literal["error", "warning"]
# Long enough for a plugin that imports a heavy SDK; a hang in import-time code is a finding, not a wait.
IMPORT_CHECK_TIMEOUT = 60.0
BUILD_TIMEOUT = 600.0


class CheckProblem(msgspec.Struct, frozen=True):
    """One finding: `check` names the rule, `message` what to change."""

    check: str
    message: str
    severity: Severity = "error"

    def __str__(self) -> str:
        return f"{self.severity}: {self.check}: {self.message}"


class CheckReport(msgspec.Struct, frozen=True):
    """What `check_wheel` found in one wheel; `ok` when a strict host would refuse nothing but the
    missing signature."""

    wheel: Path
    distribution: str | None = None
    version: str | None = None
    plugins: dict[str, str] = msgspec.field(default_factory=dict)
    hooks: dict[str, list[str]] = msgspec.field(default_factory=dict)
    signature: str | None = None
    problems: tuple[CheckProblem, ...] = ()

    @property
    def ok(self) -> bool:
        return not any(problem.severity == "error" for problem in self.problems)

    def errors(self) -> list[CheckProblem]:
        return [problem for problem in self.problems if problem.severity == "error"]

    def as_dict(self) -> dict[str, object]:
        return {
            "wheel": str(self.wheel),
            "ok": self.ok,
            "distribution": self.distribution,
            "version": self.version,
            "plugins": self.plugins,
            "hooks": self.hooks,
            "signature": self.signature,
            "problems": [
                {"check": problem.check, "severity": problem.severity, "message": problem.message}
                for problem in self.problems
            ],
        }


def _problem(problems: list[CheckProblem], check: str, run: Callable[[], object]) -> object:
    """Run one check; a typed refusal becomes a finding and the run goes on."""
    try:
        return run()
    except (ArtifactRejectedError, ManifestError, InvalidWheelError) as exc:
        problems.append(CheckProblem(check, exc.message))
        return None


def check_wheel(
    path: Path, *, host_api_version: str = API_VERSION, import_hooks: bool = True, python: str = sys.executable
) -> CheckReport:
    """Return every refusal a strict host running plugin API `host_api_version` would make about the wheel
    at `path`, except that it is unsigned. With `import_hooks`, and once every other check passed (a wheel
    whose layout or names are refused is not worth importing), the plugin objects are imported by `python`
    in a child process and registered against the hookspecs. Never raises for a problem of the wheel."""
    # Imported here: the registry package imports the host's install machinery, which a plain
    # `aperio plugin check` of a project does not otherwise need.
    from .registry._artifact import ExpectedRelease, _check_identity, _check_layout, requires_dist, wheel_plugins

    try:
        wheel = read_wheel(path)
    except InvalidWheelError as exc:
        # Archive, RECORD, `.data`, file name against metadata, plugin ids: nothing else can be read.
        return CheckReport(path, problems=(CheckProblem("wheel", exc.message),))
    problems: list[CheckProblem] = []
    _problem(problems, "version", lambda: _check_identity(wheel, ExpectedRelease()))
    plugins = _problem(problems, "entry points", lambda: wheel_plugins(wheel))
    plugins = plugins if isinstance(plugins, dict) else {}
    if plugins:
        _problem(problems, "layout", lambda: _check_layout(wheel))
        names = import_names(wheel.members) - _own_editable_names(wheel)
        reason = collision(names, wheel.distribution, host=HostModules(None))
        if reason is not None:
            problems.append(CheckProblem("collision", reason))
        problems.extend(_manifest_problems(wheel, plugins))
    problems.extend(_api_problems(wheel, requires_dist(wheel), host_api_version))
    if f"{wheel.dist_info}/{DEV_MARKER}" in wheel.members:
        problems.append(CheckProblem("wheel", f"{DEV_MARKER}: a development build (aperio plugin dev) is never signed"))
    signature = _signature(wheel, problems)
    hooks: dict[str, list[str]] = {}
    if plugins and import_hooks and not problems:
        hooks = _hookimpl_problems(wheel, plugins, python, problems)
        problems.extend(_declaration_problems(wheel, plugins, hooks))
    return CheckReport(path, wheel.distribution, wheel.version, plugins, hooks, signature, tuple(problems))


def _own_editable_names(wheel: Wheel) -> frozenset[str]:
    """The wheel's top-level names that this environment imports from the same project's editable
    install (`pip install -e .`, the author's setup): an operator's host never has that copy, so it is
    no collision. Found with the path finder, which locates without importing."""
    try:
        direct_url = importlib.metadata.distribution(wheel.distribution).read_text("direct_url.json")
        document = json.loads(direct_url or "{}")
    except (importlib.metadata.PackageNotFoundError, ValueError):
        return frozenset()
    url = document.get("url", "") if isinstance(document, dict) else ""
    editable = isinstance(document, dict) and document.get("dir_info", {}).get("editable") is True
    if not editable or not url.startswith("file://"):
        return frozenset()
    root = Path(urllib.request.url2pathname(urllib.parse.urlsplit(url).path)).resolve()
    own = set()
    for name in import_names(wheel.members):
        spec = importlib.machinery.PathFinder.find_spec(name)
        origin = spec.origin if spec is not None and spec.origin not in (None, "namespace") else None
        if origin is not None and Path(origin).resolve().is_relative_to(root):
            own.add(name)
    return frozenset(own)


def _manifest_problems(wheel: Wheel, plugins: dict[str, str]) -> list[CheckProblem]:
    """The manifest must be in the wheel, in the package each entry point names, with a table per id."""
    problems = []
    for plugin_id, value in sorted(plugins.items()):
        package = value.partition(":")[0].strip().split(".")[0]
        where = f"{package}/{MANIFEST_NAME}"
        data = wheel.members.get(where)
        if data is None:
            problems.append(
                CheckProblem(
                    "manifest",
                    f"{plugin_id}: {where} is not in the wheel (a host refuses a plugin without its manifest;"
                    " with hatchling, keep it inside the package folder)",
                )
            )
            continue
        try:
            sections = manifest_sections(data, where)
        except ManifestError as exc:
            problems.append(CheckProblem("manifest", f"{plugin_id}: {exc.message}"))
            continue
        if plugin_id not in sections:
            declared = ", ".join(sorted(sections)) or "none"
            problems.append(
                CheckProblem("manifest", f'{where}: no [plugins."{plugin_id}"] table (declared: {declared})')
            )
    return problems


def _declaration_problems(wheel: Wheel, plugins: dict[str, str], hooks: dict[str, list[str]]) -> list[CheckProblem]:
    """The manifest's `hooks` must list exactly the hooks the module implements, as the host checks at
    import; a manifest without `hooks` is allowed, but the plugin is then always imported at start."""
    problems = []
    for plugin_id, value in sorted(plugins.items()):
        if plugin_id not in hooks:
            continue
        where = f"{value.partition(':')[0].strip().split('.')[0]}/{MANIFEST_NAME}"
        try:
            section = manifest_sections(wheel.members.get(where, b""), where).get(plugin_id)
        except ManifestError:
            continue  # reported by the manifest check
        if section is None:
            continue
        implemented = sorted(hooks[plugin_id])
        if section.hooks is None:
            listed = ", ".join(f'"{hook}"' for hook in implemented)
            problems.append(
                CheckProblem(
                    "hooks",
                    f"{plugin_id}: {where} does not declare its hooks; add hooks = [{listed}] so that hosts"
                    " import the plugin on first use instead of at every start",
                    "warning",
                )
            )
            continue
        problem = declaration_problem(tuple(section.hooks), implemented)
        if problem is not None:
            problems.append(CheckProblem("hooks", f"{plugin_id}: {where}: {problem}"))
    return problems


def _api_problems(wheel: Wheel, requires: list[str], host_api_version: str) -> list[CheckProblem]:
    from ._manifest import api_requirement

    try:
        requirement = api_requirement(requires)
    except ManifestError as exc:
        return [CheckProblem("api", f"METADATA {exc.message}")]
    reason = incompatibility(requirement, host_api_version)
    return [] if reason is None else [CheckProblem("api", reason)]


def _signature(wheel: Wheel, problems: list[CheckProblem]) -> str:
    """The embedded signature's status under this environment's trust store: an unsigned wheel is what
    `check` expects before `sign`; an invalid one (a file changed after signing) a host refuses."""
    try:
        trust = load_trust_store(HostSettings.from_environment())
    except AperioError:
        trust = load_trust_store(HostSettings.from_environment(plugin_trust_mode="strict"))
    verification = verify_wheel(wheel, trust)
    if verification.status is SignatureStatus.INVALID:
        problems.append(CheckProblem("signature", verification.detail))
    return verification.status.value


# Run by the child process: import each plugin object, register it with the plugin API's hookspecs
# (pluggy checks argument names there), refuse a hookimpl no hookspec knows, and call the registration
# hooks to check that what they register is the extension point's type with nothing left abstract.
_IMPORT_CHECK = r"""
import importlib, inspect, json, sys
import pluggy
import aperio_hookspecs
from aperio_hookspecs import specs

KINDS = {
    "aperio_register_connectors": aperio_hookspecs.Connector,
    "aperio_register_remediations": aperio_hookspecs.RemediationHandler,
    "aperio_register_destinations": aperio_hookspecs.Destination,
}
report = {}
for plugin_id, value in json.loads(sys.argv[1]).items():
    problems, hooks = [], []
    report[plugin_id] = {"problems": problems, "hooks": hooks}
    manager = pluggy.PluginManager(aperio_hookspecs.PROJECT_NAME)
    manager.add_hookspecs(specs)
    module_name, _, attribute = value.partition(":")
    try:
        target = importlib.import_module(module_name.strip())
        for part in filter(None, attribute.strip().split(".")):
            target = getattr(target, part)
        manager.register(target, name=plugin_id)
        manager.check_pending()
    except Exception as exc:
        problems.append(f"{value}: {type(exc).__name__}: {exc}")
        continue
    for caller in manager.get_hookcallers(target) or []:
        hooks.append(caller.name)
        if caller.name not in KINDS:
            continue
        registered = []
        try:
            getattr(manager.hook, caller.name)(register=registered.append)
        except Exception as exc:
            problems.append(f"{caller.name} raised {type(exc).__name__}: {exc}")
        for item in registered:
            kind = KINDS[caller.name]
            if not isinstance(item, kind):
                problems.append(f"{caller.name} registered {item!r}, which is not a {kind.__name__}")
            elif inspect.isabstract(type(item)):
                problems.append(f"{caller.name} registered {type(item).__name__}, which leaves abstract methods")
    if not hooks:
        problems.append(f"{value} implements no hook of the plugin API (is @hookimpl from aperio_hookspecs missing?)")
json.dump(report, sys.stdout)
"""


def _extract(wheel: Wheel, directory: Path) -> None:
    # Member names were checked by `read_wheel` (no absolute paths, no `..`, no links).
    with zipfile.ZipFile(wheel.path) as archive:
        for name in wheel.members:
            target = directory / name
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(archive.read(name))


def _hookimpl_problems(
    wheel: Wheel, plugins: dict[str, str], python: str, problems: list[CheckProblem]
) -> dict[str, list[str]]:
    """Import the plugins from the wheel's own files in a child process; return each plugin's hooks."""
    with tempfile.TemporaryDirectory(prefix="aperio-check-") as scratch:
        _extract(wheel, Path(scratch))
        environment = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join(filter(None, [scratch, os.environ.get("PYTHONPATH")])),
        }
        environment["PYTHONDONTWRITEBYTECODE"] = "1"
        try:
            completed = subprocess.run(
                [python, "-c", _IMPORT_CHECK, json.dumps(plugins)],
                capture_output=True,
                text=True,
                env=environment,
                cwd=scratch,
                timeout=IMPORT_CHECK_TIMEOUT,
                check=False,
            )
        except subprocess.TimeoutExpired:
            problems.append(CheckProblem("hookimpls", f"importing the plugin took over {IMPORT_CHECK_TIMEOUT:.0f} s"))
            return {}
    try:
        report = json.loads(completed.stdout)
    except json.JSONDecodeError:
        tail = (completed.stderr.strip().splitlines() or ["no output"])[-1]
        problems.append(CheckProblem("hookimpls", f"the import check could not run: {tail}"))
        return {}
    hooks = {}
    for plugin_id, found in report.items():
        hooks[plugin_id] = list(found["hooks"])
        problems.extend(CheckProblem("hookimpls", f"{plugin_id}: {message}") for message in found["problems"])
    return hooks


def build_project(project: Path, out: Path, *, python: str = sys.executable) -> Path:
    """Build the project at `project` into a wheel in `out` with pip and its own build backend; return it.

    Raises `PluginCheckError` with the build's last lines when it fails.
    """
    if not (project / "pyproject.toml").is_file():
        raise PluginCheckError(f"{project}: no pyproject.toml: not a Python project (aperio plugin init makes one)")
    out.mkdir(parents=True, exist_ok=True)
    before = set(out.glob("*.whl"))
    command = [python, "-m", "pip", "wheel", "--quiet", "--no-deps", "--disable-pip-version-check", "-w", str(out)]
    try:
        completed = subprocess.run(
            # An absolute path: pip reads a bare `acme-hello` as a requirement and fetches it from the index.
            [*command, str(project.resolve())],
            capture_output=True,
            text=True,
            timeout=BUILD_TIMEOUT,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise PluginCheckError(f"{project}: building the wheel took over {BUILD_TIMEOUT:.0f} s") from None
    if completed.returncode != 0:
        tail = " | ".join((completed.stderr or completed.stdout).strip().splitlines()[-5:])
        raise PluginCheckError(f"{project}: pip could not build a wheel: {tail}")
    built = sorted(set(out.glob("*.whl")) - before) or sorted(out.glob("*.whl"), key=lambda p: p.stat().st_mtime)
    name = _project_name(project)
    matching = [wheel for wheel in built if name is None or wheel.name.startswith(name + "-")]
    if not matching:
        raise PluginCheckError(f"{project}: pip reported success but wrote no wheel into {out}")
    return matching[-1]


def _project_name(project: Path) -> str | None:
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover - exercised by the 3.10 nox session
        import tomli as tomllib
    try:
        name = tomllib.loads((project / "pyproject.toml").read_text())["project"]["name"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return canonicalize_name(str(name)).replace("-", "_") if isinstance(name, str) else None


def check_path(target: Path, *, import_hooks: bool = True) -> CheckReport:
    """Check a wheel file, or build the project folder `target` into a scratch wheel and check that.

    Raises `PluginCheckError` when `target` is neither, or the project does not build.
    """
    if target.is_dir():
        with tempfile.TemporaryDirectory(prefix="aperio-build-") as scratch:
            wheel = build_project(target, Path(scratch))
            report = check_wheel(wheel, import_hooks=import_hooks)
            # The scratch wheel is gone after this: name the project instead.
            return CheckReport(
                target, report.distribution, report.version, report.plugins, report.hooks, report.signature,
                report.problems,
            )  # fmt: skip
    if not target.is_file():
        raise PluginCheckError(f"{target}: no such file or directory")
    return check_wheel(target, import_hooks=import_hooks)
