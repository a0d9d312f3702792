"""Which module may import which: the core does not reach into the registry, verification not into signing,
the pipeline's stages not into the host, and each side of the worker's process boundary not into the other."""

from __future__ import annotations

import subprocess
import sys

import pytest

STAGES = "import aperio_plugins.pipeline.walk, aperio_plugins.pipeline.discover"


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
        # A stage gets what it needs in its Environment: following a plugin never climbs back into the host,
        # and the stages know nothing of how a worker is started or of the registry.
        (STAGES, "aperio_plugins._host"),
        (STAGES, "aperio_plugins.worker"),
        (STAGES, "aperio_plugins.registry"),
        # The worker process runs the same stages without the host class or the host's side of the boundary.
        ("import aperio_plugins.worker.__main__", "aperio_plugins._host"),
        ("import aperio_plugins.worker.__main__", "aperio_plugins.worker.supervise"),
        # The host's side of the boundary does not carry the worker's side with it.
        ("import aperio_plugins.worker.supervise._proxy", "aperio_plugins.worker.serve"),
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


def test_each_stage_is_a_function_of_its_own_module_over_a_frozen_environment():
    import msgspec

    from aperio_plugins.pipeline import admit, discover, environment, inspect, load, register, verify

    stages = [discover.survey, inspect.inspect, verify.verify, admit.admit_plugin, load.load, register.register_plugin]
    assert [stage.__module__.rpartition(".")[2] for stage in stages] == [
        "discover",
        "inspect",
        "verify",
        "admit",
        "load",
        "register",
    ]
    fields = set(environment.Environment.__struct_fields__)
    assert {"trust", "api_version", "audit", "start_worker", "new_breaker"} <= fields
    assert issubclass(environment.Environment, msgspec.Struct)
    assert environment.Environment.__struct_config__.frozen


def test_the_worker_folder_separates_the_host_side_from_the_worker_side():
    from pathlib import Path

    import aperio_plugins.worker

    folder = Path(aperio_plugins.worker.__file__).parent
    shared = sorted(path.name for path in folder.glob("*.py"))
    assert shared == ["__init__.py", "__main__.py", "_codec.py", "_protocol.py", "_settings.py", "_spin.py", "_tree.py"]
    assert (folder / "supervise" / "_proxy.py").is_file()
    assert (folder / "serve" / "_server.py").is_file()


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
            name
            for name in loaded
            if name.split(".")[0] in {"fastapi", "uvicorn", "starlette", "prometheus_client", "jinja2"}
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
        "api/_console.py",
        "cli/_serve.py",
    }
    importers = set()
    for source in sorted(root.rglob("*.py")):
        for node in ast.walk(ast.parse(source.read_text())):
            names = [alias.name for alias in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom) and node.level == 0:
                names = [node.module or ""]
            if any(
                name.split(".")[0] in {"fastapi", "uvicorn", "starlette", "prometheus_client", "jinja2"}
                for name in names
            ):
                importers.add(source.relative_to(root).as_posix())
    assert importers == allowed


# What `aperio plugin list` does not need, so must not import: each was a measured part of its start-up
# (docs/performance.md, issue 11). A listing verifies pending plugins without importing them, so the
# verified importer, guards, registration, the worker's host side and the wheel reader stay out; settings
# are read without pydantic-settings (which brings dotenv, argparse and asyncio). msgspec is allowed: the
# host's frozen records are its Structs, made in microseconds where a frozen dataclass takes most of a millisecond.
NOT_FOR_LISTING = (
    "pydantic_settings",
    "dotenv",
    "asyncio",
    "rich",
    "aperio_plugins.worker.supervise",
    "aperio_plugins.importing",
    "aperio_plugins.pipeline.register",
    "aperio_plugins._guard",
    "aperio_plugins._wheel",
    "aperio_plugins._run",
    "aperio_plugins._context",
    # Reading the trusted keys (canonical Ed25519 PEM) needs no SSH, RSA, EC or cipher modules.
    "cryptography.hazmat.primitives.serialization",
    # The SDK's pydantic models and the extension classes built on them load on first use (SDK 1.2.1).
    "aperio_hookspecs._envelopes",
    "aperio_hookspecs._context",
    "aperio_hookspecs._extensions",
)
# Read only to inspect a plugin, which a warm start finds in the discovery cache. Project names are
# normalized without `packaging.utils`, which imports `packaging.tags` (and with it subprocess).
NOT_FOR_A_WARM_LISTING = ("tomllib", "packaging.metadata", "packaging.requirements", "packaging.tags")

LISTING = (
    "import sys\n"
    "from aperio_plugins.cli import main\n"
    "try:\n"
    "    main(['plugin', 'list', '--json'])\n"
    "finally:\n"
    "    sys.stderr.write('\\n'.join(sorted(sys.modules)))\n"
)


def _among(loaded: set[str], names: tuple[str, ...]) -> list[str]:
    return sorted(name for name in loaded if any(name == n or name.startswith(n + ".") for n in names))


def test_plugin_list_verifies_a_pending_plugin_without_importing_what_it_does_not_show(
    tmp_path, install, wheel_dir, plugins_dir, marker
):
    import json
    import os
    import shutil

    from plugin_builders import connector_wheel, imported_ids

    from aperio_plugins.testing import generate_signing_key, manifest_toml, sign_wheel_with_key

    private, public = generate_signing_key(tmp_path / "author")
    keys = tmp_path / "keys"
    keys.mkdir(mode=0o700)
    shutil.copy(public, keys / public.name)
    section = {"summary": "lazy", "kinds": ["connector"], "hooks": ["aperio_register_connectors"]}
    manifest = manifest_toml({"acme.listed": section})
    install(sign_wheel_with_key(connector_wheel(wheel_dir, "acme.listed", marker=marker, manifest=manifest), private))
    env = {
        **{name: value for name, value in os.environ.items() if not name.startswith("APERIO_")},
        "APERIO_PLUGINS_DIR": str(plugins_dir),
        "APERIO_STATE_DIR": str(tmp_path / "state"),
        "APERIO_PLUGIN_TRUSTED_KEYS_DIR": str(keys),
        "APERIO_PLUGIN_TRUST_MODE": "strict",
    }
    for start in ("cold", "warm"):
        result = subprocess.run(
            [sys.executable, "-c", LISTING], capture_output=True, text=True, env=env, check=True, timeout=120
        )
        (row,) = [row for row in json.loads(result.stdout) if row["id"] == "acme.listed"]
        # The status shown is as true as before: the plugin was hashed and its signature checked.
        assert (row["state"], row["signature_status"]) == ("enabled", "verified"), (start, row)
        loaded = set(result.stderr.split())
        assert _among(loaded, NOT_FOR_LISTING) == [], start
        assert "cryptography.hazmat.primitives.asymmetric.ed25519" in loaded  # the check really ran
    assert _among(loaded, NOT_FOR_A_WARM_LISTING) == []
    assert imported_ids(marker) == []  # and the plugin itself never ran


def test_a_host_application_does_not_import_what_only_some_hosts_use():
    loaded = imported_after("from aperio_plugins import HostSettings, PluginHost")
    assert _among(loaded, NOT_FOR_LISTING + NOT_FOR_A_WARM_LISTING) == []


SDK_MODELS = ("aperio_hookspecs._envelopes", "aperio_hookspecs._context", "aperio_hookspecs._extensions")


def test_the_sdk_imports_its_models_on_first_use_of_one_of_their_names():
    # The markers, the hookspecs and the constants are all a host needs to build its plugin manager.
    loaded = imported_after(
        "import aperio_hookspecs, aperio_hookspecs.specs\n"
        "from aperio_hookspecs import API_VERSION, PROJECT_NAME, hookimpl, hookspec, propagate_errors, PluginAPIError"
    )
    assert _among(loaded, SDK_MODELS) == []
    # What a plugin author writes still works, in a fresh interpreter, and imports what it names.
    loaded = imported_after("from aperio_hookspecs import Finding, Connector, InvocationContext")
    assert _among(loaded, SDK_MODELS) == sorted(SDK_MODELS)


def test_every_lazy_name_of_the_sdk_is_the_object_its_private_module_defines():
    import importlib

    import aperio_hookspecs
    from aperio_hookspecs import _context, _envelopes, _errors, _extensions, _markers

    private = [_context, _envelopes, _errors, _extensions, _markers]
    own = {"API_VERSION", "DISTRIBUTION_NAME", "ENTRY_POINT_GROUP", "__version__"}
    for name in aperio_hookspecs.__all__:
        if name in own:
            continue
        # A private module may import a name from another (`_extensions` names the context): all are one object.
        defined = {id(vars(module)[name]) for module in private if name in vars(module)}
        assert defined == {id(getattr(aperio_hookspecs, name))}, name
    assert aperio_hookspecs.Finding is importlib.import_module("aperio_hookspecs._envelopes").Finding
    assert set(aperio_hookspecs.__all__) <= set(dir(aperio_hookspecs))
    with pytest.raises(AttributeError, match="has no attribute 'Findings'"):
        _ = aperio_hookspecs.Findings
    with pytest.raises(ImportError, match="Findings"):
        exec("from aperio_hookspecs import Findings", {})


def test_dir_of_a_fresh_sdk_lists_the_lazy_names_without_importing_them():
    statement = (
        "import aperio_hookspecs\n"
        "names = dir(aperio_hookspecs)\n"
        "assert set(aperio_hookspecs.__all__) <= set(names), set(aperio_hookspecs.__all__) - set(names)\n"
        "assert {'Finding', 'InvocationContext', 'Connector'} <= set(names)"
    )
    assert _among(imported_after(statement), SDK_MODELS) == []
