"""A real OCI registry (Debian's `docker-registry`, distribution 2.8) on 127.0.0.1 for tests.

Filesystem storage in a temporary directory, plain HTTP or TLS from the test CA
of `tls_certs`. Attack tests push crafted manifests and corrupt stored blobs in
place, which a registry client cannot do through the API.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import socket
import ssl
import subprocess
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from types import TracebackType

import requests
from tls_certs import make_server_certificate

REGISTRY_BINARY = "docker-registry"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"


def docker_registry_available() -> bool:
    """Return whether the `docker-registry` binary is installed."""
    return shutil.which(REGISTRY_BINARY) is not None


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that nothing listened on a moment ago (it may be taken again)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class OciRegistry:
    """`docker-registry serve` on 127.0.0.1:<free port>, for the life of a `with` block.

    `registry` is "127.0.0.1:PORT"; `ca_bundle` trusts its certificate when `tls`.
    """

    def __init__(self, *, tls: bool = True, startup_timeout: float = 15.0) -> None:
        self.tls = tls
        self.startup_timeout = startup_timeout
        self._temporary = tempfile.TemporaryDirectory(prefix="aperio-oci-")
        self.root = Path(self._temporary.name)
        self.storage = self.root / "storage"
        self.port = free_port()
        self.registry = f"127.0.0.1:{self.port}"
        self.ca_bundle: Path | None = None
        self._process: subprocess.Popen[bytes] | None = None
        self._log = self.root / "registry.log"

    @property
    def base_url(self) -> str:
        return f"{'https' if self.tls else 'http'}://{self.registry}"

    def _config(self) -> dict[str, object]:
        http: dict[str, object] = {"addr": self.registry}
        if self.tls:
            certificate = make_server_certificate(self.root / "tls")
            self.ca_bundle = certificate.ca_bundle
            http["tls"] = {"certificate": str(certificate.certificate), "key": str(certificate.private_key)}
        return {
            "version": 0.1,
            "log": {"level": "warn", "accesslog": {"disabled": True}},
            "storage": {"filesystem": {"rootdirectory": str(self.storage)}, "delete": {"enabled": True}},
            "http": http,
        }

    def __enter__(self) -> OciRegistry:
        config = self.root / "config.yml"
        # YAML is a superset of JSON: no YAML library needed.
        config.write_text(json.dumps(self._config()))
        with self._log.open("wb") as log:
            self._process = subprocess.Popen(
                [REGISTRY_BINARY, "serve", str(config)], stdout=log, stderr=subprocess.STDOUT
            )
        try:
            self._wait_until_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(
        self, kind: type[BaseException] | None, value: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.stop()

    def _wait_until_ready(self) -> None:
        context = ssl.create_default_context(cafile=str(self.ca_bundle)) if self.ca_bundle else None
        deadline = time.monotonic() + self.startup_timeout
        assert self._process is not None
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                break
            try:
                with urllib.request.urlopen(f"{self.base_url}/v2/", timeout=1, context=context) as response:
                    if response.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                time.sleep(0.05)
        raise RuntimeError(
            f"docker-registry did not answer on {self.registry}:\n{self._log.read_text(errors='replace')}"
        )

    def stop(self) -> None:
        """Stop the registry (terminate, then kill) and delete its storage."""
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self._temporary.cleanup()

    # -- attack helpers -------------------------------------------------------

    def _verify(self) -> str | bool:
        return str(self.ca_bundle) if self.ca_bundle else True

    def put_blob(self, repository: str, data: bytes) -> str:
        """Upload `data` as a blob of `repository` (POST a session, PUT the bytes); return its digest."""
        digest = f"sha256:{hashlib.sha256(data).hexdigest()}"
        started = requests.post(f"{self.base_url}/v2/{repository}/blobs/uploads/", verify=self._verify(), timeout=10)
        started.raise_for_status()
        location = urllib.parse.urljoin(self.base_url, started.headers["Location"])
        response = requests.put(
            location,
            params={"digest": digest},
            data=data,
            headers={"Content-Type": "application/octet-stream"},
            verify=self._verify(),
            timeout=10,
        )
        response.raise_for_status()
        return digest

    def put_manifest(self, repository: str, tag: str, manifest: dict[str, object]) -> str:
        """Store `manifest` (no checks of ours) under `tag`; return its digest."""
        body = json.dumps(manifest).encode()
        response = requests.put(
            f"{self.base_url}/v2/{repository}/manifests/{tag}",
            data=body,
            headers={"Content-Type": OCI_MANIFEST},
            verify=self._verify(),
            timeout=10,
        )
        response.raise_for_status()
        return f"sha256:{hashlib.sha256(body).hexdigest()}"

    def blob_file(self, digest: str) -> Path:
        """Return where the filesystem storage keeps the blob (or manifest) with `digest`."""
        algorithm, _, hexdigest = digest.partition(":")
        return self.storage / "docker/registry/v2/blobs" / algorithm / hexdigest[:2] / hexdigest / "data"

    def corrupt_blob(self, digest: str, data: bytes | None = None) -> None:
        """Overwrite the stored blob with `digest`: with `data`, or with its own bytes, one flipped.

        The registry serves what is on disk without checking it, like a compromised mirror.
        """
        path = self.blob_file(digest)
        if data is None:
            original = bytearray(path.read_bytes())
            original[len(original) // 2] ^= 0xFF
            data = bytes(original)
        path.write_bytes(data)
