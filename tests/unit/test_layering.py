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
