"""The verified import loader: only signed bytes run. Negative tests are named after the attack."""

from __future__ import annotations

import hashlib
import importlib
import importlib.machinery
import importlib.resources
import importlib.util
import inspect
import linecache
import marshal
import os
import pickle
import pkgutil
import py_compile
import shutil
import stat
import subprocess
import sys
import sysconfig
import threading
import traceback
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from aperio_plugins.errors import AperioError, VerificationError
from aperio_plugins.importing import (
    ImportStats,
    TamperedFileError,
    VerifiedImporter,
    VerifiedTree,
    install_importer,
    remove_importer,
)

EXT = importlib.machinery.EXTENSION_SUFFIXES[0]
GOOD_DIGEST = hashlib.sha256(b"").hexdigest()


class PluginDir:
    """A site directory holding one plugin package with a unique name; `PKG` in paths and sources stands for it."""

    def __init__(self, tmp_path: Path) -> None:
        self.root = tmp_path / "site"
        self.root.mkdir()
        self.name = f"vi_{uuid.uuid4().hex[:12]}"
        self.marker = tmp_path / "ran.txt"
        self.attacker = tmp_path / "attacker"
        self.attacker.mkdir()

    def note(self, tag: str) -> str:
        """Source that records `tag` in the marker file when it runs."""
        return f"open({str(self.marker)!r}, 'a').write({tag!r} + '\\n')\n"

    def ran(self) -> list[str]:
        return self.marker.read_text().splitlines() if self.marker.exists() else []

    def path(self, rel: str) -> Path:
        return self.root / rel.replace("PKG", self.name)

    def write(self, files: dict[str, str | bytes]) -> dict[str, str]:
        digests = {}
        for rel, content in files.items():
            data = content.replace("PKG", self.name).encode() if isinstance(content, str) else content
            path = self.path(rel)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
            digests[path.relative_to(self.root).as_posix()] = hashlib.sha256(data).hexdigest()
        return digests

    def build(self, files: dict[str, str | bytes], packages: frozenset[str] | None = None) -> VerifiedTree:
        """Write and sign `files`; put the site directory on sys.path, as the host does."""
        digests = self.write(files)
        sys.path.append(str(self.root))
        return VerifiedTree("acme.test", self.root, digests, packages or frozenset({self.name}))

    def forget(self) -> None:
        for name in [n for n in sys.modules if n == self.name or n.startswith(self.name + ".")]:
            del sys.modules[name]

    def plant_pyc(self, source: Path, evil: str, cfile: Path) -> None:
        """Compile `evil` into `cfile` with a header claiming `source`'s mtime and size, as an attacker would."""
        evil_source = self.attacker / "evil.py"
        evil_source.write_text(evil)
        cfile.parent.mkdir(parents=True, exist_ok=True)
        mode = py_compile.PycInvalidationMode.TIMESTAMP
        py_compile.compile(str(evil_source), cfile=str(cfile), doraise=True, invalidation_mode=mode)
        st = source.stat()
        data = bytearray(cfile.read_bytes())
        data[8:12] = (int(st.st_mtime) & 0xFFFFFFFF).to_bytes(4, "little")
        data[12:16] = (st.st_size & 0xFFFFFFFF).to_bytes(4, "little")
        cfile.write_bytes(bytes(data))


@pytest.fixture
def plugin(tmp_path: Path) -> PluginDir:
    return PluginDir(tmp_path)


@pytest.fixture
def install() -> Iterator[Callable[..., VerifiedImporter]]:
    made: list[VerifiedImporter] = []

    def install(tree: VerifiedTree, **kwargs: Path) -> VerifiedImporter:
        importer = install_importer(tree, **kwargs)
        made.append(importer)
        return importer

    yield install
    for importer in made:
        remove_importer(importer)


def mapped_files(fragment: str) -> list[str]:
    """Paths of the files mapped into this process whose path contains `fragment`."""
    lines = Path("/proc/self/maps").read_text().splitlines()
    return sorted(
        {line.split(maxsplit=5)[5] for line in lines if len(line.split(maxsplit=5)) == 6 and fragment in line}
    )


# -- importing signed modules ------------------------------------------------------------------


def test_imports_package_submodules_subpackages_and_relative_imports(plugin, install):
    tree = plugin.build(
        {
            "PKG/__init__.py": "from . import sub\nfrom .mod import VALUE\n",
            "PKG/mod.py": "VALUE = 41\n",
            "PKG/sub/__init__.py": "import PKG.sub.deep\nfrom .deep import DEEP\n",
            "PKG/sub/deep.py": "from ..mod import VALUE\nDEEP = VALUE + 1\n",
        }
    )
    importer = install(tree)
    pkg = importlib.import_module(plugin.name)
    deep = importlib.import_module(f"{plugin.name}.sub.deep")

    assert (pkg.VALUE, pkg.sub.DEEP, deep.DEEP) == (41, 42, 42)
    init = plugin.path("PKG/__init__.py")
    assert pkg.__spec__.origin == pkg.__file__ == str(init)
    assert pkg.__spec__.has_location
    assert pkg.__spec__.cached is None
    assert getattr(pkg, "__cached__", None) is None
    assert pkg.__path__ == [str(plugin.path("PKG"))]
    assert pkg.sub.__path__ == [str(plugin.path("PKG/sub"))]
    assert not hasattr(deep, "__path__")
    assert type(deep.__spec__.loader).__module__ == "aperio_plugins.importing._loaders"
    assert importer.stats.compiled == 4


def test_single_module_plugin(plugin, install):
    tree = plugin.build({"PKG.py": "def hello():\n    return 'hi'\n"})
    install(tree)
    module = importlib.import_module(plugin.name)
    assert module.hello() == "hi"
    assert module.__file__ == str(plugin.path("PKG.py"))
    assert not hasattr(module, "__path__")


def test_names_outside_the_plugin_are_left_to_the_import_system(plugin, install):
    tree = plugin.build({"PKG/__init__.py": ""})
    neighbour = f"{plugin.name}_neighbour"  # same prefix, different name, another distribution's module
    plugin.path(f"{neighbour}.py").write_text("X = 1\n")
    importer = install(tree)

    assert importer.find_spec("json", None) is None
    assert importer.find_spec(neighbour, None) is None
    assert importlib.import_module(neighbour).X == 1


def test_directory_of_signed_files_is_a_namespace_package(plugin, install):
    tree = plugin.build({"PKG/__init__.py": "", "PKG/assets/logo.txt": "logo", "PKG/ns/mod.py": "X = 3\n"})
    install(tree)
    assets = importlib.import_module(f"{plugin.name}.assets")
    assert list(assets.__path__) == [str(plugin.path("PKG/assets"))]
    assert importlib.resources.files(f"{plugin.name}.assets").joinpath("logo.txt").read_text() == "logo"
    assert importlib.import_module(f"{plugin.name}.ns.mod").X == 3


def test_pkgutil_lists_only_signed_modules(plugin, install):
    tree = plugin.build({"PKG/__init__.py": "", "PKG/a.py": "", "PKG/sub/__init__.py": "", "PKG/data.json": "{}"})
    plugin.path("PKG/added.py").write_text(plugin.note("added"))
    path = [str(plugin.path("PKG"))]
    assert "added" in {info.name for info in pkgutil.iter_modules(path)}  # the plain FileFinder lists it

    install(tree)
    assert [(info.name, info.ispkg) for info in pkgutil.iter_modules(path)] == [("a", False), ("sub", True)]


# -- attacks on the files ------------------------------------------------------------------------


def test_planted_pyc_fools_the_plain_import_system(plugin):
    """Control: the planted .pyc below is a working attack when nothing guards the import."""
    plugin.build({"PKG/__init__.py": plugin.note("signed")})
    source = plugin.path("PKG/__init__.py")
    plugin.plant_pyc(source, plugin.note("evil"), Path(importlib.util.cache_from_source(str(source))))
    importlib.invalidate_caches()
    importlib.import_module(plugin.name)
    assert plugin.ran() == ["evil"]


@pytest.mark.parametrize("dont_write_bytecode", [True, False], ids=["python -B", "default"])
def test_planted_pyc(plugin, install, monkeypatch, dont_write_bytecode):
    monkeypatch.setattr(sys, "dont_write_bytecode", dont_write_bytecode)  # all that -B changes
    tree = plugin.build(
        {"PKG/__init__.py": plugin.note("signed") + "from . import mod\n", "PKG/mod.py": plugin.note("mod")}
    )
    planted = []
    for rel in ("PKG/__init__.py", "PKG/mod.py"):
        source = plugin.path(rel)
        planted.append(Path(importlib.util.cache_from_source(str(source))))
        plugin.plant_pyc(source, plugin.note("evil"), planted[-1])
    install(tree)
    importlib.import_module(plugin.name)
    assert plugin.ran() == ["signed", "mod"]
    assert sorted(plugin.path("PKG/__pycache__").iterdir()) == sorted(planted)  # and it wrote no .pyc of its own


def test_planted_pyc_in_a_python_dash_b_interpreter(plugin):
    tree = plugin.build({"PKG/__init__.py": plugin.note("signed")})
    source = plugin.path("PKG/__init__.py")
    plugin.plant_pyc(source, plugin.note("evil"), Path(importlib.util.cache_from_source(str(source))))
    script = f"""
import importlib, sys
from pathlib import Path
from aperio_plugins.importing import VerifiedTree, install_importer
assert sys.flags.dont_write_bytecode
sys.path.append({str(plugin.root)!r})
install_importer(VerifiedTree("acme.test", Path({str(plugin.root)!r}), {dict(tree.digests)!r}, frozenset({{{plugin.name!r}}})))
importlib.import_module({plugin.name!r})
"""
    subprocess.run([sys.executable, "-B", "-c", script], check=True)
    assert plugin.ran() == ["signed"]


def _added_module(plugin: PluginDir) -> tuple[str, Path]:
    plugin.path("PKG/evil.py").write_text(plugin.note("evil"))
    return f"{plugin.name}.evil", plugin.path("PKG/evil.py")


def _added_subpackage(plugin: PluginDir) -> tuple[str, Path]:
    plugin.path("PKG/evil").mkdir()
    plugin.path("PKG/evil/__init__.py").write_text(plugin.note("evil"))
    return f"{plugin.name}.evil", plugin.path("PKG/evil/__init__.py")


def _planted_so_next_to_py(plugin: PluginDir) -> tuple[str, Path]:
    plugin.path(f"PKG/signed{EXT}").write_bytes(b"\x7fELF not really")
    return f"{plugin.name}.signed", plugin.path(f"PKG/signed{EXT}")


def _stray_pyc_without_source(plugin: PluginDir) -> tuple[str, Path]:
    source = plugin.path("PKG/signed.py")
    plugin.plant_pyc(source, plugin.note("evil"), plugin.path("PKG/evil.pyc"))
    return f"{plugin.name}.evil", plugin.path("PKG/evil.pyc")


def _namespace_directory(plugin: PluginDir) -> tuple[str, Path]:
    plugin.path("PKG/evil").mkdir()
    plugin.path("PKG/evil/payload.py").write_text(plugin.note("evil"))
    return f"{plugin.name}.evil", plugin.path("PKG/evil")


@pytest.mark.parametrize(
    "plant",
    [_added_module, _added_subpackage, _planted_so_next_to_py, _stray_pyc_without_source, _namespace_directory],
    ids=[
        "added_module",
        "added_subpackage",
        "planted_so_next_to_py",
        "stray_pyc_without_source",
        "namespace_directory",
    ],
)
def test_unsigned_file_is_refused(plugin, install, plant):
    tree = plugin.build({"PKG/__init__.py": "", "PKG/signed.py": plugin.note("signed")})
    module, planted = plant(plugin)
    # Control: without the importer, the path entry finder of the package's __path__ picks the planted file.
    plain = pkgutil.get_importer(str(plugin.path("PKG"))).find_spec(module)
    assert plain is not None
    assert str(planted) in (plain.origin, *(plain.submodule_search_locations or []))

    importer = install(tree)
    importlib.import_module(plugin.name)
    with pytest.raises(TamperedFileError) as info:
        importlib.import_module(module)

    assert planted.relative_to(plugin.root).as_posix() in str(info.value)
    assert info.value.name == module
    assert importer.refusals == [info.value]
    assert module not in sys.modules
    assert plugin.ran() == []


def test_missing_module_is_an_ordinary_module_not_found(plugin, install):
    tree = plugin.build(
        {"PKG/__init__.py": "try:\n    from . import optional\nexcept ImportError:\n    optional = None\n"}
    )
    importer = install(tree)
    assert importlib.import_module(plugin.name).optional is None
    with pytest.raises(ModuleNotFoundError) as info:
        importlib.import_module(f"{plugin.name}.absent")
    assert not isinstance(info.value, TamperedFileError)
    assert info.value.name == f"{plugin.name}.absent"
    assert importer.refusals == []


def test_path_traversal_in_module_name(plugin, install):
    tree = plugin.build({"PKG/__init__.py": ""})
    (plugin.root / "evil.py").write_text(plugin.note("evil"))
    plugin.path("PKG/x").mkdir()  # so that the traversal resolves on disk
    install(tree)
    with pytest.raises(ModuleNotFoundError):
        importlib.import_module(f"{plugin.name}.x/../../evil")
    assert plugin.ran() == []


def test_signed_sourceless_pyc_is_not_executed(plugin, install):
    tree = plugin.build({"PKG/__init__.py": ""})
    plugin.plant_pyc(plugin.path("PKG/__init__.py"), plugin.note("pyc"), plugin.path("PKG/legacy.pyc"))
    signed = {
        **tree.digests,
        f"{plugin.name}/legacy.pyc": hashlib.sha256(plugin.path("PKG/legacy.pyc").read_bytes()).hexdigest(),
    }
    install(VerifiedTree(tree.plugin_id, tree.root, signed, tree.packages))
    with pytest.raises(ImportError, match="sourceless modules are not supported"):
        importlib.import_module(f"{plugin.name}.legacy")
    assert plugin.ran() == []


def test_swapped_after_verification(plugin, install):
    tree = plugin.build({"PKG/__init__.py": "", "PKG/mod.py": plugin.note("signed") + "VALUE = 1\n"})
    plugin.path("PKG/mod.py").write_text(plugin.note("swapped") + "VALUE = 2\n")
    importer = install(tree)
    importlib.import_module(plugin.name)

    with pytest.raises(TamperedFileError, match=rf"{plugin.name}/mod\.py changed after verification") as info:
        importlib.import_module(f"{plugin.name}.mod")

    assert info.value.path == str(plugin.path("PKG/mod.py"))
    assert info.value.name == f"{plugin.name}.mod"
    assert info.value.plugin_id == "acme.test"
    assert importer.refusals == [info.value]
    assert f"{plugin.name}.mod" not in sys.modules
    assert plugin.ran() == []


def test_swapped_module_swallowed_by_the_plugin_is_still_recorded(plugin, install):
    tree = plugin.build(
        {
            "PKG/__init__.py": "try:\n    from . import fast\nexcept ImportError:\n    fast = None\n",
            "PKG/fast.py": plugin.note("signed"),
        }
    )
    plugin.path("PKG/fast.py").write_text(plugin.note("swapped"))
    importer = install(tree)
    assert importlib.import_module(plugin.name).fast is None  # the plugin's fallback hid the ImportError...
    assert [error.path for error in importer.refusals] == [str(plugin.path("PKG/fast.py"))]  # ...not from the host
    assert plugin.ran() == []


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
def test_fifo_swapped_in_does_not_hang_the_host(plugin, install):
    tree = plugin.build({"PKG/__init__.py": "", "PKG/mod.py": "VALUE = 1\n"})
    fifo = plugin.path("PKG/mod.py")
    fifo.unlink()
    os.mkfifo(fifo)
    install(tree)
    importlib.import_module(plugin.name)
    outcome: list[BaseException] = []

    def target() -> None:
        try:
            importlib.import_module(f"{plugin.name}.mod")
        except BaseException as exc:  # noqa: BLE001 - handed to the test thread
            outcome.append(exc)

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(10)
    if thread.is_alive():
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))  # release the reader before failing
        pytest.fail("importing a FIFO blocked")
    assert len(outcome) == 1
    assert isinstance(outcome[0], TamperedFileError)
    assert "not a regular file" in str(outcome[0])


# -- what the host and the plugin see after import ----------------------------------------------


def test_rewritten_source_cannot_change_tracebacks(plugin, install):
    source = "def boom():\n    raise ValueError('signed line')\n"
    tree = plugin.build({"PKG/__init__.py": source})
    install(tree)
    pkg = importlib.import_module(plugin.name)
    path = plugin.path("PKG/__init__.py")
    path.write_text("def boom():\n    raise ValueError('REWRITTEN line')\n")
    linecache.checkcache()  # what traceback, inspect and pdb call: it keeps the primed entry

    with pytest.raises(ValueError, match="signed line") as info:
        pkg.boom()
    shown = "".join(traceback.format_exception(info.value))
    assert "raise ValueError('signed line')" in shown
    assert "REWRITTEN" not in shown
    assert inspect.getsource(pkg.boom) == source


def test_deleted_source_is_served_by_the_loader(plugin, install):
    source = "def boom():\n    raise ValueError('signed line')\n"
    tree = plugin.build({"PKG/__init__.py": source})
    install(tree)
    pkg = importlib.import_module(plugin.name)
    plugin.path("PKG/__init__.py").unlink()
    linecache.clearcache()  # linecache now asks the loader, which keeps the text that ran

    with pytest.raises(ValueError, match="signed line") as info:
        pkg.boom()
    assert "raise ValueError('signed line')" in "".join(traceback.format_exception(info.value))
    assert inspect.getsource(pkg.boom) == source


def test_resources_read_signed_files(plugin, install):
    tree = plugin.build(
        {
            "PKG/__init__.py": "",
            "PKG/data.json": '{"a": 1}',
            "PKG/templates/page.txt": "h\u00e9llo\n".encode(),
            "PKG/templates/nested/deep.txt": "deep",
        }
    )
    install(tree)
    pkg = importlib.import_module(plugin.name)
    root = importlib.resources.files(plugin.name)

    assert (root.name, root.is_dir(), root.is_file()) == (plugin.name, True, False)
    assert root.joinpath("data.json").read_bytes() == b'{"a": 1}'
    assert root.joinpath("data.json").read_text() == '{"a": 1}'
    assert (root / "templates" / "page.txt").read_text(encoding="utf-8") == "h\u00e9llo\n"
    assert root.joinpath("templates", "nested/deep.txt").read_text() == "deep"
    assert sorted(child.name for child in root.iterdir()) == ["__init__.py", "data.json", "templates"]
    assert (root / "templates").is_dir()
    assert (root / "templates" / "nested" / "deep.txt").is_file()
    with (root / "data.json").open("rb") as handle:
        assert handle.read() == b'{"a": 1}'
    with (root / "templates" / "page.txt").open("r", encoding="utf-8") as handle:
        assert handle.read() == "h\u00e9llo\n"
    with importlib.resources.as_file(root / "data.json") as copy:
        assert copy.read_bytes() == b'{"a": 1}'
        assert copy != plugin.path("PKG/data.json")
    assert pkgutil.get_data(plugin.name, "data.json") == b'{"a": 1}'
    assert pkg.__spec__.loader.get_data(str(plugin.path("PKG/data.json"))) == b'{"a": 1}'


def test_tampered_resource(plugin, install):
    tree = plugin.build({"PKG/__init__.py": "", "PKG/data.json": '{"role": "reader"}'})
    plugin.path("PKG/data.json").write_text('{"role": "admin"}')
    install(tree)
    pkg = importlib.import_module(plugin.name)
    data = importlib.resources.files(plugin.name) / "data.json"
    readers = [
        data.read_bytes,
        data.read_text,
        lambda: data.open("rb").read(),
        lambda: pkgutil.get_data(plugin.name, "data.json"),
        lambda: pkg.__spec__.loader.get_data(str(plugin.path("PKG/data.json"))),
    ]
    for read in readers:
        with pytest.raises(TamperedFileError, match=r"data\.json changed after verification"):
            read()


def test_unsigned_resource(plugin, install):
    tree = plugin.build({"PKG/__init__.py": ""})
    plugin.path("PKG/extra.json").write_text("{}")
    install(tree)
    pkg = importlib.import_module(plugin.name)
    extra = importlib.resources.files(plugin.name) / "extra.json"
    assert not extra.is_file()
    assert "extra.json" not in {child.name for child in importlib.resources.files(plugin.name).iterdir()}
    with pytest.raises(FileNotFoundError):
        extra.read_bytes()
    with pytest.raises(FileNotFoundError):
        pkg.__spec__.loader.get_data(str(plugin.path("PKG/extra.json")))
    with pytest.raises(FileNotFoundError):
        pkg.__spec__.loader.get_data(str(plugin.root.parent / "ran.txt"))  # outside the plugin


def test_reload_rereads_and_rechecks(plugin, install):
    tree = plugin.build({"PKG/__init__.py": "", "PKG/mod.py": plugin.note("run") + "VALUE = 1\n"})
    install(tree)
    mod = importlib.import_module(f"{plugin.name}.mod")
    importlib.reload(mod)
    assert plugin.ran() == ["run", "run"]

    plugin.path("PKG/mod.py").write_text(plugin.note("swapped") + "VALUE = 2\n")
    with pytest.raises(TamperedFileError, match="changed after verification"):
        importlib.reload(mod)
    assert plugin.ran() == ["run", "run"]
    assert mod.VALUE == 1


def test_remove_importer_restores_the_import_system(plugin, install):
    tree = plugin.build({"PKG/__init__.py": "from . import mod\n", "PKG/mod.py": "def f():\n    return 'ok'\n"})
    pkg_dir = str(plugin.path("PKG"))
    importlib.machinery.PathFinder.find_spec(f"{plugin.name}.mod", [pkg_dir])
    plain_finder = sys.path_importer_cache[pkg_dir]
    meta_path = list(sys.meta_path)

    importer = install(tree)
    assert sys.meta_path[0] is importer
    assert sys.path_importer_cache[pkg_dir] is not plain_finder
    pkg = importlib.import_module(plugin.name)
    remove_importer(importer)
    remove_importer(importer)

    assert sys.meta_path == meta_path
    assert sys.path_importer_cache[pkg_dir] is plain_finder
    assert pkg.mod.f() == "ok"


def test_module_imported_before_verification_is_refused(plugin, install):
    tree = plugin.build({"PKG/__init__.py": ""})
    importlib.import_module(plugin.name)  # by the plain import system
    meta_path = list(sys.meta_path)
    with pytest.raises(VerificationError, match=rf"already imported without verification: {plugin.name}"):
        install(tree)
    assert sys.meta_path == meta_path


@pytest.mark.parametrize(
    ("rel", "digest", "packages"),
    [
        ("../escape.py", GOOD_DIGEST, {"ok"}),
        ("/etc/passwd", GOOD_DIGEST, {"ok"}),
        ("ok/./mod.py", GOOD_DIGEST, {"ok"}),
        ("ok\\mod.py", GOOD_DIGEST, {"ok"}),
        ("ok/mod.py", GOOD_DIGEST.upper(), {"ok"}),
        ("ok/mod.py", GOOD_DIGEST[:-1], {"ok"}),
        ("ok/mod.py", GOOD_DIGEST, {"ok/mod"}),
    ],
    ids=[
        "parent_escape",
        "absolute_path",
        "dot_segment",
        "backslash",
        "uppercase_digest",
        "short_digest",
        "package_path",
    ],
)
def test_malformed_signed_list_is_refused(tmp_path, rel, digest, packages):
    with pytest.raises(VerificationError):
        VerifiedImporter(VerifiedTree("acme.test", tmp_path, {rel: digest}, frozenset(packages)))


def test_tampered_file_error_is_a_verification_error_and_an_import_error():
    error = TamperedFileError("x.py changed", plugin_id="acme.box", path="/site/acme/x.py", name="acme.x")
    assert isinstance(error, VerificationError)
    assert isinstance(error, AperioError)
    assert isinstance(error, ImportError)
    assert not isinstance(error, ModuleNotFoundError)
    assert (str(error), error.msg, error.path, error.name) == (
        "x.py changed",
        "x.py changed",
        "/site/acme/x.py",
        "acme.x",
    )
    assert error.diagnostics() == "x.py changed\nplugin: acme.box"
    copy = pickle.loads(pickle.dumps(error))
    assert (type(copy), str(copy), copy.path, copy.plugin_id) == (
        TamperedFileError,
        "x.py changed",
        "/site/acme/x.py",
        "acme.box",
    )


# -- code cache -----------------------------------------------------------------------------------


def test_code_cache_warm_import_skips_compile(plugin, install, tmp_path):
    cache = tmp_path / "code-cache"
    tree = plugin.build({"PKG/__init__.py": "from . import mod\n", "PKG/mod.py": "VALUE = 5\n"})
    cold = install(tree, code_cache=cache)
    importlib.import_module(plugin.name)
    assert cold.stats == ImportStats(compiled=2, cache_hits=0, cache_rejected=0)
    assert stat.S_IMODE(cache.stat().st_mode) == 0o700
    assert sorted(stat.S_IMODE(entry.stat().st_mode) for entry in cache.iterdir()) == [0o600, 0o600]
    remove_importer(cold)
    plugin.forget()

    warm = install(tree, code_cache=cache)
    assert importlib.import_module(plugin.name).mod.VALUE == 5
    assert warm.stats == ImportStats(compiled=0, cache_hits=2, cache_rejected=0)
    remove_importer(warm)
    plugin.forget()

    # A new signed version of one file has a new digest, so that file misses the cache.
    digests = {**tree.digests, **plugin.write({"PKG/mod.py": "VALUE = 6\n"})}
    upgraded = install(VerifiedTree(tree.plugin_id, tree.root, digests, tree.packages), code_cache=cache)
    assert importlib.import_module(plugin.name).mod.VALUE == 6
    assert upgraded.stats == ImportStats(compiled=1, cache_hits=1, cache_rejected=0)


def _plant_cache_file(plugin: PluginDir, entry: Path, how: str) -> None:
    evil = compile(plugin.note("evil") + "VALUE = 'evil'\n", str(plugin.path("PKG/__init__.py")), "exec")
    entry.write_bytes(marshal.dumps(evil) if how != "corrupt" else b"\xe3\x00 not marshal")
    if how == "group_writable":
        entry.chmod(0o620)
    elif how == "other_writable":
        entry.chmod(0o602)
    elif how == "foreign_owner":
        if os.geteuid() != 0:
            pytest.skip("making a file another user's needs root")
        os.chown(entry, 65534, 65534)  # nobody


@pytest.mark.parametrize("how", ["group_writable", "other_writable", "foreign_owner", "corrupt"])
def test_planted_cache_file_is_ignored(plugin, install, tmp_path, how):
    cache = tmp_path / "code-cache"
    tree = plugin.build({"PKG/__init__.py": "VALUE = 'signed'\n"})
    first = install(tree, code_cache=cache)
    importlib.import_module(plugin.name)
    remove_importer(first)
    plugin.forget()
    [entry] = cache.iterdir()
    _plant_cache_file(plugin, entry, how)

    importer = install(tree, code_cache=cache)
    assert importlib.import_module(plugin.name).VALUE == "signed"
    assert plugin.ran() == []
    assert importer.stats == ImportStats(compiled=1, cache_hits=0, cache_rejected=1)
    st = entry.stat()  # replaced by a private file of the host's
    assert (st.st_uid, stat.S_IMODE(st.st_mode)) == (os.getuid(), 0o600)


def test_cache_file_of_the_host_user_is_trusted(plugin, install, tmp_path):
    """Control: the planted file above runs when it passes the ownership checks, so those checks are what stop it."""
    cache = tmp_path / "code-cache"
    tree = plugin.build({"PKG/__init__.py": "VALUE = 'signed'\n"})
    first = install(tree, code_cache=cache)
    importlib.import_module(plugin.name)
    remove_importer(first)
    plugin.forget()
    [entry] = cache.iterdir()
    _plant_cache_file(plugin, entry, "private")
    install(tree, code_cache=cache)
    assert importlib.import_module(plugin.name).VALUE == "evil"


def test_cache_directory_writable_by_others_is_not_used(plugin, install, tmp_path):
    cache = tmp_path / "shared-cache"
    cache.mkdir()
    cache.chmod(0o777)
    tree = plugin.build({"PKG/__init__.py": "VALUE = 1\n"})
    importer = install(tree, code_cache=cache)
    assert importlib.import_module(plugin.name).VALUE == 1
    assert importer.stats == ImportStats(compiled=1, cache_hits=0, cache_rejected=0)
    assert list(cache.iterdir()) == []
    assert stat.S_IMODE(cache.stat().st_mode) == 0o777  # left as found, not chmod-ed into shape


# -- C extensions ---------------------------------------------------------------------------------

EXTENSION_SOURCE = """
#define PY_SSIZE_T_CLEAN
#include <Python.h>
{extern}
static PyObject *answer(PyObject *self, PyObject *unused) {{ return PyLong_FromLong({value}); }}
static PyMethodDef methods[] = {{{{"answer", answer, METH_NOARGS, NULL}}, {{NULL, NULL, 0, NULL}}}};
static struct PyModuleDef def = {{PyModuleDef_HEAD_INIT, "{name}", NULL, -1, methods}};
PyMODINIT_FUNC PyInit_{name}(void) {{ return PyModule_Create(&def); }}
"""


@pytest.fixture(scope="module")
def extensions(tmp_path_factory) -> dict[str, bytes]:
    """Two tiny extension modules; `_vendored` needs a library from `vendored_helper.libs/`, as auditwheel lays out."""
    gcc = shutil.which("gcc")
    include = sysconfig.get_paths()["include"]
    if not sys.platform.startswith("linux"):
        pytest.skip("the extension tests build ELF shared objects and read /proc/self/maps")
    if gcc is None:
        pytest.skip("gcc is not installed")
    if not Path(include, "Python.h").exists():
        pytest.skip(f"Python.h is not in {include}")
    out = tmp_path_factory.mktemp("extensions")
    libs = out / "vendored_helper.libs"
    libs.mkdir()
    (out / "helper.c").write_text("int helper_value(void) { return 7; }\n")
    subprocess.run([gcc, "-shared", "-fPIC", "-o", libs / "libaperiohelper.so", out / "helper.c"], check=True)
    vendored = ["-L", str(libs), "-laperiohelper", "-Wl,-rpath,$ORIGIN/../vendored_helper.libs"]
    for name, value, extern, extra in (
        ("_speed", "42", "", []),
        ("_vendored", "helper_value()", "extern int helper_value(void);", vendored),
    ):
        source = out / f"{name}.c"
        source.write_text(EXTENSION_SOURCE.format(name=name, value=value, extern=extern))
        subprocess.run(
            [gcc, "-shared", "-fPIC", f"-I{include}", "-o", out / f"{name}{EXT}", source, *extra], check=True
        )
    return {
        "_speed": (out / f"_speed{EXT}").read_bytes(),
        "_vendored": (out / f"_vendored{EXT}").read_bytes(),
        "libaperiohelper.so": (libs / "libaperiohelper.so").read_bytes(),
    }


def test_extension_module_is_checked_and_loaded_from_a_private_copy(plugin, install, extensions):
    tree = plugin.build({"PKG/__init__.py": "", f"PKG/_speed{EXT}": extensions["_speed"]})
    install(tree)
    module = importlib.import_module(f"{plugin.name}._speed")
    assert module.answer() == 42

    real = plugin.path(f"PKG/_speed{EXT}")
    assert module.__file__ == module.__spec__.origin == str(real)
    [copy] = mapped_files(f"/{plugin.name}/_speed{EXT}")
    assert copy != str(real)
    private = Path(copy).parent.parent
    assert private.name.startswith("aperio-ext-")
    assert stat.S_IMODE(private.stat().st_mode) == 0o700
    assert stat.S_IMODE(Path(copy).stat().st_mode) == 0o500


def test_tampered_extension(plugin, install, extensions):
    tree = plugin.build({"PKG/__init__.py": "", f"PKG/_speed{EXT}": extensions["_speed"]})
    plugin.path(f"PKG/_speed{EXT}").write_bytes(extensions["_speed"] + b"\0")  # still a loadable ELF file
    install(tree)
    with pytest.raises(TamperedFileError, match=rf"_speed{EXT} changed after verification"):
        importlib.import_module(f"{plugin.name}._speed")
    assert f"{plugin.name}._speed" not in sys.modules
    assert mapped_files(f"/{plugin.name}/_speed") == []


def test_vendored_library_is_checked_and_copied_alongside(plugin, install, extensions):
    tree = plugin.build(
        {
            "PKG/__init__.py": "",
            f"PKG/_vendored{EXT}": extensions["_vendored"],
            "vendored_helper.libs/libaperiohelper.so": extensions["libaperiohelper.so"],
        }
    )
    install(tree)
    assert importlib.import_module(f"{plugin.name}._vendored").answer() == 7
    [library] = mapped_files("/vendored_helper.libs/libaperiohelper.so")
    assert "aperio-ext-" in library
    assert library != str(plugin.root / "vendored_helper.libs" / "libaperiohelper.so")


def test_tampered_vendored_library(plugin, install, extensions):
    tree = plugin.build(
        {
            "PKG/__init__.py": "",
            f"PKG/_vendored{EXT}": extensions["_vendored"],
            "vendored_helper.libs/libaperiohelper.so": extensions["libaperiohelper.so"],
        }
    )
    (plugin.root / "vendored_helper.libs" / "libaperiohelper.so").write_bytes(extensions["libaperiohelper.so"] + b"\0")
    install(tree)
    with pytest.raises(TamperedFileError, match=r"libaperiohelper\.so changed after verification"):
        importlib.import_module(f"{plugin.name}._vendored")
    assert f"{plugin.name}._vendored" not in sys.modules
