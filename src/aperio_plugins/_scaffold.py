"""`aperio plugin init`: a new plugin project from the templates packaged with the host.

The templates are plain text files under `aperio_plugins/templates/` with `{{name}}` placeholders,
rendered by a dozen lines here rather than by copier or Jinja: the projects have no optional parts
worth a template language, and a new dependency of the host would be a new dependency of every
host. The API requirement and the API version come from the `aperio_hookspecs` this host runs, so a
project always starts on the plugin API its host provides (`>=MAJOR.MINOR,<MAJOR+1`).
"""

from __future__ import annotations

import enum
import re
from importlib import resources
from pathlib import Path

import msgspec
from packaging.utils import canonicalize_name
from packaging.version import Version

from aperio_hookspecs import API_VERSION, DISTRIBUTION_NAME

from ._ids import plugin_id_problem
from .errors import PluginCheckError

_PLACEHOLDER = re.compile(r"\{\{([a-z_]+)\}\}")
_PROJECT_NAME = re.compile(r"[a-z][a-z0-9]*(-[a-z0-9]+)*", re.ASCII)


class ScaffoldKind(str, enum.Enum):
    CONNECTOR = "connector"
    REMEDIATION = "remediation"
    DESTINATION = "destination"


# Per kind: class name suffix, module name, the result kind a host call returns, the payload it sends.
_BY_KIND = {
    ScaffoldKind.CONNECTOR: (
        "Connector", "_connector", "sync_result", 'aperio_envelopes.sync_request("{p}", config={{"items": ["a"]}})'
    ),
    ScaffoldKind.REMEDIATION: (
        "Handler", "_handler", "remediation_result", 'aperio_envelopes.remediation_request("{p}.tag")'
    ),
    ScaffoldKind.DESTINATION: (
        "Destination", "_destination", "delivery_receipt", 'aperio_envelopes.delivery_batch("{p}")'
    ),
}  # fmt: skip


def api_requirement(api_version: str = API_VERSION) -> str:
    """Return the requirement a new plugin declares on the plugin API `api_version` (`>=1.1,<2`)."""
    version = Version(api_version)
    return f"{DISTRIBUTION_NAME}>={version.major}.{version.minor},<{version.major + 1}"


def default_plugin_id(project: str) -> str:
    """`acme-hello` becomes `acme.hello` (vendor, then name); a name without a dash is its own id."""
    vendor, dash, rest = project.partition("-")
    return f"{vendor}.{rest}" if dash else project


class Scaffold(msgspec.Struct, frozen=True):
    project: str
    kind: ScaffoldKind
    plugin_id: str

    @property
    def package(self) -> str:
        return self.project.replace("-", "_")

    def variables(self) -> dict[str, str]:
        suffix, module, result_kind, payload = _BY_KIND[self.kind]
        return {
            "project": self.project,
            "package": self.package,
            "wheel_stem": self.package,
            "plugin_id": self.plugin_id,
            "kind": self.kind.value,
            "module": module,
            "class_name": "".join(part.capitalize() for part in self.project.split("-")) + suffix,
            "summary": f"The {self.project} {self.kind.value}.",
            "api_requirement": api_requirement(),
            "api_version": API_VERSION,
            "result_kind": result_kind,
            "host_payload": payload.format(p=self.project),
        }

    def files(self) -> dict[str, str]:
        """Return the project's files by relative path, rendered."""
        package, kind = f"src/{self.package}", self.kind.value
        layout = {
            "pyproject.toml": "common/pyproject.toml.tmpl",
            "README.md": "common/README.md.tmpl",
            ".gitignore": "common/gitignore.tmpl",
            ".github/workflows/release.yml": "common/workflows/release.yml.tmpl",
            f"{package}/__init__.py": "common/init.py.tmpl",
            f"{package}/aperio-plugin.toml": "common/manifest.toml.tmpl",
            f"{package}/py.typed": None,
            f"{package}/plugin.py": f"{kind}/plugin.py.tmpl",
            f"{package}/{_BY_KIND[self.kind][1]}.py": f"{kind}/module.py.tmpl",
            f"tests/test_{self.package}.py": f"{kind}/test.py.tmpl",
            "tests/test_in_host.py": "common/test_in_host.py.tmpl",
        }
        variables = self.variables()
        templates = resources.files("aperio_plugins") / "templates"
        return {
            path: "" if template is None else _render(templates.joinpath(template).read_text("utf-8"), variables)
            for path, template in layout.items()
        }


def _render(text: str, variables: dict[str, str]) -> str:
    def substitute(match: re.Match[str]) -> str:
        # A template naming a variable that does not exist is a bug of the host, found by the init tests.
        return variables[match.group(1)]

    return _PLACEHOLDER.sub(substitute, text)


def init_project(project: str, kind: ScaffoldKind, directory: Path, *, plugin_id: str | None = None) -> list[Path]:
    """Write a new plugin project into `directory` (which must not exist or be empty); return its files.

    Raises `PluginCheckError` for a name that is not a distribution name, a plugin id that breaks the
    id rule, or a directory that already holds files. Nothing is written then.
    """
    if not _PROJECT_NAME.fullmatch(project) or canonicalize_name(project) != project:
        raise PluginCheckError(
            f"{project!r} is not a plugin project name: lowercase ASCII letters and digits in words joined by"
            " '-', starting with a letter (e.g. acme-hello)"
        )
    chosen = plugin_id or default_plugin_id(project)
    problem = plugin_id_problem(chosen)
    if problem is not None:
        raise PluginCheckError(problem)
    if directory.exists() and (not directory.is_dir() or any(directory.iterdir())):
        raise PluginCheckError(f"{directory} already exists and is not empty: nothing was written")
    files = Scaffold(project, kind, chosen).files()
    written = []
    for relative, text in files.items():
        path = directory / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        written.append(path)
    return written
