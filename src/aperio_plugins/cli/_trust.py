"""`aperio plugin keygen | sign | verify` and `aperio doctor`: the trust commands."""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path
from typing import Any

import click

from .._check import build_project, check_wheel
from .._host import PluginHost
from .._keys import generate_keypair, key_id, load_private_key
from .._model import FileStatus, SignatureStatus, Verification
from .._ownership import scan_plugins_dir
from .._settings import HostSettings
from .._signing import ed25519_signer, sign_wheel, sigstore_signer
from .._trust import Severity, load_trust_store
from .._verify import verify_wheel
from .._wheel import read_wheel
from .._wheel_signatures import signatures_beside
from ..errors import ConfigurationError, PluginCheckError
from ..worker.supervise._sandbox import describe as describe_sandbox
from ._output import print_json


@click.command("keygen")
@click.argument("name")
@click.option(
    "--out", "directory", type=click.Path(file_okay=False, path_type=Path), default=Path("."), show_default=True
)
def keygen(name: str, directory: Path) -> None:
    """Create an Ed25519 signing key: NAME.pem (private, mode 0600) and NAME.pub.pem."""
    private_path, public_path = generate_keypair(name, directory)
    click.echo(f"private key: {private_path}")
    click.echo(f"public key:  {public_path}")
    click.echo(f"key id:      {key_id(load_private_key(private_path).public_key())}")


@click.command("sign")
@click.argument("wheel", type=click.Path(path_type=Path))
@click.option("--key", "key_path", type=click.Path(dir_okay=False, path_type=Path), help="Ed25519 private key (PEM).")
@click.option("--sigstore", "use_sigstore", is_flag=True, help="Sign with Sigstore and the ambient OIDC identity (CI).")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), help="Write here instead of in place.")
def sign(wheel: Path, key_path: Path | None, use_sigstore: bool, out: Path | None) -> None:
    """Sign WHEEL: embed a signature over every file in its .dist-info/ (in place unless --out).

    WHEEL may be a plugin project folder: it is built first with its own build backend into
    FOLDER/dist/. Runs the checks of `aperio plugin check` and signs nothing a strict host would refuse.
    """
    if (key_path is None) == (not use_sigstore):
        raise ConfigurationError("give exactly one of --key PEM or --sigstore")
    if wheel.is_dir():
        wheel = build_project(wheel, wheel / "dist")
        click.echo(f"built {wheel}")
    report = check_wheel(wheel)
    if not report.ok:
        found = "; ".join(f"{problem.check}: {problem.message}" for problem in report.errors())
        raise PluginCheckError(f"{wheel.name}: not signed, a strict host would refuse it: {found}")
    signer = ed25519_signer(key_path) if key_path is not None else sigstore_signer()
    signed = sign_wheel(wheel, out, signer)
    click.echo(f"signed {signed.path} with {signed.signer} ({signed.signatures} signature(s) in the wheel)")


def _verification_dict(subject: str, verification: Verification) -> dict[str, object]:
    return {
        "subject": subject,
        "status": verification.status.value,
        "detail": verification.detail,
        "signer": verification.signer,
        "via": "install receipt" if "install receipt" in verification.detail else None,
        "files": {status.value: list(verification.with_status(status)) for status in FileStatus},
    }


def _verify_wheel_file(path: Path) -> Verification:
    """Verify a wheel file's embedded signature and the signatures over it that sit beside it."""
    trust = load_trust_store(HostSettings.from_environment())
    wheel = read_wheel(path)
    beside = signatures_beside(path)
    if not beside:
        return verify_wheel(wheel, trust)
    from ..registry import signature_verdict

    sha256 = hashlib.sha256(path.read_bytes()).hexdigest()
    verdict, _ = signature_verdict(path, sha256, wheel, None, beside, trust)
    return verdict


@click.command("verify")
@click.argument("target")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def verify(target: str, as_json: bool) -> None:
    """Verify an installed plugin (by id) or a wheel file: signature, signer, and every file.

    Exits 1 unless the status is `verified`.
    """
    if target.endswith(".whl") or Path(target).is_file():
        verification = _verify_wheel_file(Path(target))
    else:
        with PluginHost() as host:
            _, verification = host.verify(target)
    report = _verification_dict(target, verification)
    if as_json:
        print_json(report)
    else:
        click.echo(f"{target}: {verification.status.value}")
        click.echo(f"  {verification.detail}")
        for status in FileStatus:
            paths = verification.with_status(status)
            if paths and status is not FileStatus.OK:
                click.echo(f"  {status.value}: {', '.join(paths)}")
        ok = len(verification.with_status(FileStatus.OK))
        click.echo(f"  {ok} file(s) match the signed statement")
    if verification.status is not SignatureStatus.VERIFIED:
        sys.exit(1)


@click.command("doctor")
@click.option("--json", "as_json", is_flag=True, help="Print the findings as JSON.")
def doctor(as_json: bool) -> None:
    """Check the trust configuration (trust mode, keys, identities, directory permissions, files in
    the plugins directory that no installed distribution owns) and how workers are contained (the
    bubblewrap sandbox, or the weaker subreaper fallback).

    Exits 1 if any problem is an error.
    """
    settings = HostSettings.from_environment()
    store = load_trust_store(settings, layout=scan_plugins_dir(settings.plugins_dir, deep=True))
    sandbox = describe_sandbox(settings)
    if as_json:
        print_json(
            {
                "trust_mode": settings.plugin_trust_mode.value,
                "sandbox": sandbox,
                "trusted_keys": [{"key_id": key.key_id, "path": str(key.path)} for key in store.keyring.keys],
                "trusted_identities": [
                    {"identity": item.identity, "issuer": item.issuer} for item in store.sigstore.identities
                ],
                "trusted_publishers": [pinned.describe() for pinned in store.sigstore.publishers],
                "problems": [
                    {"severity": p.severity.value, "subject": p.subject, "message": p.message} for p in store.problems
                ],
            }
        )
    else:
        click.echo(f"trust mode: {settings.plugin_trust_mode.value} (environment: {settings.environment})")
        click.echo(f"trusted keys: {len(store.keyring.keys)} in {settings.plugin_trusted_keys_dir}")
        for key in store.keyring.keys:
            click.echo(f"  {key.key_id[:16]}…  {key.path.name}")
        click.echo(
            f"trusted Sigstore identities: {len(store.sigstore.identities)} in {settings.plugin_trusted_identities}"
        )
        for pinned in store.sigstore.publishers:
            click.echo(f"  {pinned.describe()}")
        _echo_sandbox(sandbox)
        for problem in store.problems:
            click.echo(str(problem))
        if sandbox["problem"] is not None:
            click.echo(f"{sandbox['problem']['severity']}: worker sandbox: {sandbox['problem']['message']}")
        if not store.problems and sandbox["problem"] is None:
            click.echo("no problems found")
    sandbox_failed = sandbox["problem"] is not None and sandbox["problem"]["severity"] == Severity.ERROR.value
    if sandbox_failed or any(problem.severity is Severity.ERROR for problem in store.problems):
        sys.exit(1)


def _echo_sandbox(sandbox: dict[str, Any]) -> None:
    mode = f"APERIO_PLUGIN_SANDBOX={sandbox['mode']}"
    if sandbox["containment"] is None:
        click.echo(f"worker sandbox: {mode}, and no worker can start")
        return
    where = f" ({sandbox['bwrap']})" if sandbox["bwrap"] else ""
    click.echo(f"worker sandbox: {mode}, workers get {sandbox['containment']}{where}")
    if sandbox["containment"] == "bwrap":
        click.echo("  network: only for plugins whose manifest asks (connectors and destinations unless they say no)")
    for gap in sandbox["gaps"]:
        click.echo(f"  does not cover: {gap}")
