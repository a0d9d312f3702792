"""A public test kit: build plugin wheels, sign them, install them with real pip, load them in a host.

For a plugin author, the author's own project in a strict host (what the `aperio_host`
fixture of `aperio_plugins.pytest_plugin` does for the project pytest runs in):

    from aperio_plugins.testing import project_host

    with project_host(Path("."), tmp_path) as host:      # build, sign, install, load
        assert host.get("acme.hello").signature_status is SignatureStatus.VERIFIED

For the host's own tests, synthetic wheels:

    from aperio_plugins.testing import PluginWheel, install_wheels

    source = "from aperio_hookspecs import hookimpl\n\n@hookimpl\ndef aperio_host_shutdown():\n    pass\n"
    wheel = PluginWheel("acme-hello", plugins={"acme.hello": "acme_hello"},
                        files={"acme_hello/__init__.py": source}).build(tmp_path)
    install_wheels([wheel], target=tmp_path / "plugins")

The wheels carry METADATA, WHEEL, entry_points.txt and a RECORD with sha256
digests, as a build backend would write them, so that pip and the host treat
them exactly like a published plugin.
"""

from __future__ import annotations

import base64
import hashlib
import json
import shutil
import subprocess
import sys
import zipfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from packaging.utils import canonicalize_name

from ._check import build_project
from ._keys import generate_keypair
from ._manifest import MANIFEST_NAME
from ._project_host import project_host, strict_host
from ._signature_file import Ed25519Signature, SigstoreSignature
from ._signing import ed25519_signer, sign_wheel
from ._testing_sigstore import PrivateSigstore
from .errors import AperioError

DEFAULT_API_REQUIREMENT = "aperio-hookspecs>=1.0,<2"


__all__ = [
    "PluginWheel",
    "build_project_wheel",
    "project_host",
    "strict_host",
    "PrivateSigstore",
    "WheelInstallError",
    "generate_signing_key",
    "install_wheels",
    "manifest_toml",
    "sign_wheel_with_key",
    "sign_wheel_file_with_sigstore",
    "sign_wheel_with_sigstore",
]


class WheelInstallError(AperioError):
    """pip refused to install a test wheel."""


def _record_digest(data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode("ascii")
    return f"sha256={digest}"


def _toml_string(value: str) -> str:
    # JSON string escapes are valid TOML basic-string escapes.
    return json.dumps(value)


def manifest_toml(plugins: Mapping[str, Mapping[str, object]]) -> str:
    """Return an `aperio-plugin.toml` text for `{plugin_id: {field: value}}`."""
    lines = ["manifest_version = 1", ""]
    for plugin_id, fields in plugins.items():
        lines.append(f"[plugins.{_toml_string(plugin_id)}]")
        for key, value in fields.items():
            if isinstance(value, str):
                lines.append(f"{key} = {_toml_string(value)}")
            elif isinstance(value, (list, tuple)):
                lines.append(f"{key} = [{', '.join(_toml_string(str(item)) for item in value)}]")
            else:
                lines.append(f"{key} = {json.dumps(value)}")
        lines.append("")
    return "\n".join(lines)


@dataclass
class PluginWheel:
    """A plugin distribution to build as a wheel. Defaults make a valid connector plugin."""

    distribution: str
    plugins: Mapping[str, str]
    files: Mapping[str, str | bytes] = field(default_factory=dict)
    version: str = "1.0.0"
    requires: Sequence[str] = (DEFAULT_API_REQUIREMENT,)
    manifest: str | None = None
    kinds: Sequence[str] = ("connector",)
    credential_scopes: Sequence[str] = ()
    extra_metadata: Sequence[str] = ()
    entry_points_text: str | None = None

    @property
    def wheel_name(self) -> str:
        return canonicalize_name(self.distribution).replace("-", "_")

    @property
    def dist_info(self) -> str:
        return f"{self.wheel_name}-{self.version}.dist-info"

    def manifest_text(self) -> str:
        if self.manifest is not None:
            return self.manifest
        sections = {
            plugin_id: {
                "summary": f"{plugin_id} test plugin",
                "kinds": list(self.kinds),
                "credential_scopes": list(self.credential_scopes),
            }
            for plugin_id in self.plugins
        }
        return manifest_toml(sections)

    def _package_of_first_plugin(self) -> str:
        first = next(iter(self.plugins.values()))
        return first.partition(":")[0].split(".")[0].strip()

    def contents(self) -> dict[str, bytes]:
        """Return every file of the wheel except RECORD, by archive path."""
        contents = {path: data.encode() if isinstance(data, str) else data for path, data in self.files.items()}
        if self.plugins:
            manifest_path = f"{self._package_of_first_plugin()}/{MANIFEST_NAME}"
            if manifest_path not in contents and self.manifest != "":
                contents[manifest_path] = self.manifest_text().encode()
        metadata = [
            "Metadata-Version: 2.1",
            f"Name: {self.distribution}",
            f"Version: {self.version}",
            *(f"Requires-Dist: {requirement}" for requirement in self.requires),
            *self.extra_metadata,
        ]
        contents[f"{self.dist_info}/METADATA"] = ("\n".join(metadata) + "\n").encode()
        contents[f"{self.dist_info}/WHEEL"] = (
            b"Wheel-Version: 1.0\nGenerator: aperio-plugins-testing\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
        )
        entry_points = self.entry_points_text
        if entry_points is None:
            lines = ["[aperio.plugins]", *(f"{plugin_id} = {value}" for plugin_id, value in self.plugins.items())]
            entry_points = "\n".join(lines) + "\n"
        contents[f"{self.dist_info}/entry_points.txt"] = entry_points.encode()
        return contents

    def build(self, directory: Path) -> Path:
        """Write the wheel into `directory` and return its path."""
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / f"{self.wheel_name}-{self.version}-py3-none-any.whl"
        contents = self.contents()
        record_path = f"{self.dist_info}/RECORD"
        record = [f"{name},{_record_digest(data)},{len(data)}" for name, data in contents.items()]
        record.append(f"{record_path},,")
        with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
            for name, data in contents.items():
                archive.writestr(name, data)
            archive.writestr(record_path, "\n".join(record) + "\n")
        return path


def _remove_other_versions(wheels: Sequence[Path], target: Path) -> None:
    # `pip install --target --upgrade` replaces package folders but leaves the
    # previous release's .dist-info behind, which would look like a second
    # distribution claiming the same plugin id.
    for wheel in wheels:
        name = wheel.name.split("-", 1)[0]
        for stale in target.glob(f"{name}-*.dist-info"):
            shutil.rmtree(stale)


def install_wheels(wheels: Iterable[Path | str], *, target: Path) -> None:
    """Install `wheels` into the directory `target` with real pip (no index, no dependencies),
    replacing any installed release of the same distributions.

    Raises `WheelInstallError` with pip's output when pip refuses.
    """
    paths = [Path(wheel) for wheel in wheels]
    _remove_other_versions(paths, target)
    command = [
        sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
        "--no-deps", "--no-index", "--upgrade", "--target", str(target), *(str(wheel) for wheel in paths),
    ]  # fmt: skip
    completed = subprocess.run(command, capture_output=True, text=True, check=False)
    if completed.returncode != 0:
        raise WheelInstallError(
            f"pip install into {target} failed: {completed.stderr.strip() or completed.stdout.strip()}"
        )


def generate_signing_key(directory: Path, name: str = "test-signer") -> tuple[Path, Path]:
    """Create an Ed25519 key pair in `directory`; return (private PEM, public PEM)."""
    return generate_keypair(name, directory)


def sign_wheel_with_key(wheel: Path, private_key: Path, *, out: Path | None = None) -> Path:
    """Embed an Ed25519 signature in `wheel` (in place unless `out`); return the signed wheel's path."""
    return sign_wheel(wheel, out, ed25519_signer(private_key)).path


def sign_wheel_with_sigstore(wheel: Path, instance: PrivateSigstore, *, identity: str, issuer: str) -> Path:
    """Embed a Sigstore signature made by a private test instance in `wheel`; return its path."""

    def sign(statement: bytes) -> tuple[Ed25519Signature | SigstoreSignature, str]:
        bundle = json.loads(instance.sign_dsse(statement, identity=identity, issuer=issuer))
        return SigstoreSignature(bundle=bundle), f"sigstore identity {identity}"

    return sign_wheel(wheel, None, sign).path


def sign_wheel_file_with_sigstore(wheel: Path, instance: PrivateSigstore, *, identity: str, issuer: str) -> Path:
    """Sign the wheel file itself as `sigstore sign` does, with a private test instance: write a
    message-signature bundle to `WHEEL.sigstore.json` beside it and return that path. The wheel is unchanged."""
    bundle = instance.sign_artifact(wheel.read_bytes(), identity=identity, issuer=issuer)
    path = wheel.with_name(wheel.name + ".sigstore.json")
    path.write_bytes(bundle)
    return path


def build_project_wheel(project: Path, out: Path) -> Path:
    """Build the plugin project at `project` into a wheel in `out` with pip and the project's own build
    backend, as `pip wheel --no-deps -w out project` does; return the wheel. Raises `PluginCheckError`."""
    return build_project(project, out)
