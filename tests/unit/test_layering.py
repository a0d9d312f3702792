"""Which module may import which: the core does not reach into the registry, verification not into signing."""

from __future__ import annotations

import subprocess
import sys

import pytest


def imported_after(statement: str) -> set[str]:
    code = f"import sys\n{statement}\nprint('\\n'.join(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    return set(out.split())


@pytest.mark.parametrize(
    ("statement", "forbidden"),
    [
        # Loading trusts the plugins directory after the same preflight checks as installing, from `_preflight`.
        ("import aperio_plugins._trust, aperio_plugins._ownership", "aperio_plugins.registry"),
        # Verification reads the signature format from `_signature_file`; the author-side signer stays out.
        ("import aperio_plugins._verify", "aperio_plugins._signing"),
    ],
)
def test_a_lower_layer_does_not_import_a_higher_one(statement, forbidden):
    loaded = imported_after(statement)
    assert not {name for name in loaded if name == forbidden or name.startswith(forbidden + ".")}


def test_the_cli_imports_only_the_registrys_public_api():
    import ast
    from pathlib import Path

    import aperio_plugins.cli

    private = []
    for source in sorted(Path(aperio_plugins.cli.__file__).parent.glob("*.py")):
        for node in ast.walk(ast.parse(source.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("registry._"):
                private.append(f"{source.name}:{node.lineno} {node.module}")
    assert private == []


def test_every_name_of_the_registrys_public_api_resolves():
    import aperio_plugins.registry as registry

    missing = [name for name in registry.__all__ if getattr(registry, name, None) is None]
    assert missing == []


def test_the_core_host_and_the_cli_import_no_server_library():
    """fastapi and uvicorn come with the `server` extra; only the API's routes and `aperio serve` use them."""
    loaded = imported_after(
        "import aperio_plugins, aperio_plugins.cli, aperio_plugins.registry, aperio_plugins.worker\n"
        "from aperio_plugins import PluginHost, SQLiteStateStore\n"
        "from aperio_plugins.api import Permission, Principal, Tokens\n"
        "import aperio_plugins.api._trail\n"
        "from aperio_plugins.cli._main import cli"
    )
    assert (
        sorted(
            name for name in loaded if name.split(".")[0] in {"fastapi", "uvicorn", "starlette", "prometheus_client"}
        )
        == []
    )


def test_only_the_api_package_and_the_serve_command_name_fastapi_or_uvicorn():
    import ast
    from pathlib import Path

    import aperio_plugins

    root = Path(aperio_plugins.__file__).parent
    # _principal names starlette's Request for type checkers only (under TYPE_CHECKING).
    allowed = {
        "api/_routes.py",
        "api/_app.py",
        "api/_metrics.py",
        "api/_outbox.py",
        "api/_principal.py",
        "cli/_serve.py",
    }
    importers = set()
    for source in sorted(root.rglob("*.py")):
        for node in ast.walk(ast.parse(source.read_text())):
            names = [alias.name for alias in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom) and node.level == 0:
                names = [node.module or ""]
            if any(name.split(".")[0] in {"fastapi", "uvicorn", "starlette", "prometheus_client"} for name in names):
                importers.add(source.relative_to(root).as_posix())
    assert importers == allowed
