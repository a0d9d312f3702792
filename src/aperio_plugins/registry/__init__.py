"""Distribution: plugin indexes, resolution, downloads (HTTPS, file, OCI) and atomic installs.

The public API of the registry side, what the CLI and host applications use.
Each name loads its module on first use (PEP 562): `import aperio_plugins.registry`
costs nothing, and requests or oras load only for the commands that need them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._lazy_names import lazy_names

if TYPE_CHECKING:
    from ._artifact import signature_verdict
    from ._client import InstallResult, RegistryClient
    from ._index import Publisher
    from ._lockfile import DEFAULT_LOCK_FILE, LockFile, read_lock_file, write_lock_file
    from ._oci import OciReference, push_wheel
    from ._progress import terminal_progress
    from ._publish import add_release
    from ._resolve import release_problem
    from ._transfer import TransferLimits
    from ._validate import validate_index

_WHERE = {
    "DEFAULT_LOCK_FILE": "_lockfile",
    "InstallResult": "_client",
    "LockFile": "_lockfile",
    "OciReference": "_oci",
    "Publisher": "_index",
    "RegistryClient": "_client",
    "TransferLimits": "_transfer",
    "add_release": "_publish",
    "push_wheel": "_oci",
    "read_lock_file": "_lockfile",
    "release_problem": "_resolve",
    "signature_verdict": "_artifact",
    "terminal_progress": "_progress",
    "validate_index": "_validate",
    "write_lock_file": "_lockfile",
}

__all__ = [
    "DEFAULT_LOCK_FILE",
    "InstallResult",
    "LockFile",
    "OciReference",
    "Publisher",
    "RegistryClient",
    "TransferLimits",
    "add_release",
    "push_wheel",
    "read_lock_file",
    "release_problem",
    "signature_verdict",
    "terminal_progress",
    "validate_index",
    "write_lock_file",
]


__getattr__, __dir__ = lazy_names(__name__, globals(), _WHERE)
