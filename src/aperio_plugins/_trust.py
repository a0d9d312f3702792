"""The operator's trust configuration, and the preflight checks that `aperio doctor` and the host share.

In `strict`, a keys directory that others can write to is not trusted at all
(anyone who can add a key there can sign plugins), and plugins in a plugins
directory that others can write to are refused. In `warn` both are reported
and used.
"""

from __future__ import annotations

import enum
from pathlib import Path

import msgspec

from ._keys import Keyring, load_keyring
from ._model import TrustMode
from ._ownership import PluginsDirLayout
from ._preflight import interrupted_change, writable_by_others
from ._receipt import host_public_key_path
from ._settings import HostSettings
from ._sigstore import SigstoreTrust, load_trusted_identities
from .errors import ConfigurationError


class Severity(str, enum.Enum):
    ERROR = "error"
    WARNING = "warning"


class TrustProblem(msgspec.Struct, frozen=True):
    severity: Severity
    subject: str
    message: str

    def __str__(self) -> str:
        return f"{self.severity.value}: {self.subject}: {self.message}"


class TrustStore(msgspec.Struct, frozen=True):
    """What signers the host trusts, with every problem found while loading it."""

    mode: TrustMode
    keyring: Keyring
    sigstore: SigstoreTrust
    problems: tuple[TrustProblem, ...]
    untrusted_plugins_dir: str | None = None
    # The host's public receipt key (in the state directory): the only key an install receipt may carry.
    receipt_key: Path | None = None

    @property
    def is_empty(self) -> bool:
        return not self.keyring.keys and not self.sigstore.identities and not self.sigstore.publishers

    def trusts_publisher(self, publisher: str) -> bool:
        """Return whether every signer an install receipt names is still a trusted identity or publisher."""
        trusted = [identity.describe() for identity in self.sigstore.identities]
        trusted += [pinned.describe() for pinned in self.sigstore.publishers]
        parts = publisher.split("; ")
        return all(any(part == name or part.endswith(f" by {name}") for name in trusted) for part in parts)


def load_trust_store(settings: HostSettings, *, layout: PluginsDirLayout | None = None) -> TrustStore:
    """Return the trust store the settings describe. Never raises: problems are part of the result.

    With `layout` (the plugins directory as `scan_plugins_dir` read it), what no admitted code
    path accounts for there is a problem too; a host reports those at each discovery instead.
    """
    mode = settings.plugin_trust_mode
    problems: list[TrustProblem] = []
    if mode is TrustMode.DISABLED and not settings.is_development:
        problems.append(
            TrustProblem(
                Severity.ERROR,
                "APERIO_PLUGIN_TRUST_MODE",
                "trust is disabled outside a development environment: plugin files are not checked at all",
            )
        )
    keys_dir = settings.plugin_trusted_keys_dir
    keyring = load_keyring(keys_dir)
    insecure_keys = writable_by_others(keys_dir)
    if insecure_keys is not None:
        consequence = "its keys are ignored" if mode is TrustMode.STRICT else "its keys are used because of warn"
        problems.append(TrustProblem(Severity.ERROR, str(keys_dir), f"keys directory {insecure_keys}; {consequence}"))
        if mode is TrustMode.STRICT:
            keyring = Keyring((), keyring.problems)
    problems.extend(TrustProblem(Severity.WARNING, str(p.path), p.reason) for p in keyring.problems)
    try:
        sigstore = load_trusted_identities(settings.plugin_trusted_identities)
    except ConfigurationError as exc:
        problems.append(TrustProblem(Severity.ERROR, str(settings.plugin_trusted_identities), exc.message))
        sigstore = SigstoreTrust((), None)
    untrusted_plugins_dir = None
    insecure_plugins = writable_by_others(settings.plugins_dir)
    if insecure_plugins is not None:
        untrusted_plugins_dir = f"plugins directory {settings.plugins_dir} {insecure_plugins}"
        consequence = "its plugins are refused" if mode is TrustMode.STRICT else "its plugins load because of warn"
        problems.append(TrustProblem(Severity.ERROR, str(settings.plugins_dir), f"{insecure_plugins}; {consequence}"))
    journal = interrupted_change(settings.plugins_dir)
    if journal is not None:
        problems.append(
            TrustProblem(
                Severity.ERROR,
                str(settings.plugins_dir),
                f"an install or remove was interrupted ({journal}); the next `aperio plugin install`, `remove`"
                " or `lock` rolls it back",
            )
        )
    if layout is not None:
        problems.extend(plugins_dir_problems(layout, mode))
    receipt_key = settings.plugin_receipt_key or host_public_key_path(settings.state_dir)
    store = TrustStore(mode, keyring, sigstore, tuple(problems), untrusted_plugins_dir, receipt_key)
    if mode is TrustMode.STRICT and store.is_empty:
        store = TrustStore(
            mode,
            keyring,
            sigstore,
            (
                *store.problems,
                TrustProblem(
                    Severity.WARNING,
                    "trust store",
                    f"strict mode with no trusted keys in {keys_dir} and no Sigstore identities in"
                    f" {settings.plugin_trusted_identities}: every plugin will be refused",
                ),
            ),
            untrusted_plugins_dir,
            receipt_key,
        )
    return store


def plugins_dir_problems(layout: PluginsDirLayout, mode: TrustMode) -> list[TrustProblem]:
    """Return what in the plugins directory no admitted code path accounts for.

    Unowned files and a second `.dist-info` are errors; a distribution that is not a
    plugin (a dependency installed beside one) is unsigned code, reported as a warning.
    """
    problems = [
        TrustProblem(Severity.ERROR if problem.error else Severity.WARNING, problem.subject, problem.message)
        for problem in layout.problems()
    ]
    others = [distribution.describe() for distribution in layout.distributions if not distribution.is_plugin]
    if others:
        consequence = (
            "strict trust mode never imports them, and a plugin that needs one fails"
            if mode is TrustMode.STRICT
            else f"importable through their RECORD because trust mode is {mode.value}"
        )
        shown = ", ".join(others[:10]) + (f" and {len(others) - 10} more" if len(others) > 10 else "")
        problems.append(
            TrustProblem(
                Severity.WARNING,
                str(layout.root),
                f"distributions that are not plugins (unsigned code): {shown}; {consequence}",
            )
        )
    return problems
