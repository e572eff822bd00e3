"""A real OCI registry on 127.0.0.1 for the tests: Debian's `docker-registry` (the CNCF distribution registry),
on a free port, storing its blobs in a temp dir the tests can reach into (to tamper with a stored blob)."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.server.helpers import eventually
from tests.server.test_serve_cli import free_port

BINARY = "docker-registry"


@dataclass(frozen=True)
class RegistryServer:
    host: str  # 127.0.0.1:PORT, as a REF names it
    storage: Path

    def blob_file(self, digest: str) -> Path:
        """Where the registry keeps the blob ``sha256:HEX`` (the filesystem driver's layout)."""
        hex_digest = digest.removeprefix("sha256:")
        return self.storage / "docker/registry/v2/blobs/sha256" / hex_digest[:2] / hex_digest / "data"


def _answers(url: str) -> bool:
    try:
        return httpx.get(url).status_code in (200, 401)
    except httpx.TransportError:
        return False


@contextmanager
def running_registry(directory: Path, htpasswd: Path | None = None) -> Iterator[RegistryServer]:
    """A registry serving from ``directory``/storage until the block ends (with basic auth if ``htpasswd``)."""
    if shutil.which(BINARY) is None:
        pytest.skip(
            f"{BINARY} (the CNCF distribution registry) cannot be installed on this host: `make install-test` "
            "installs it with apt-get, which this host lacks"
        )
    port = free_port()
    storage = directory / "storage"
    auth = f"auth:\n  htpasswd:\n    realm: ingot-tests\n    path: {htpasswd}\n" if htpasswd else ""
    config = directory / "config.yml"
    config.write_text(
        "version: 0.1\nlog:\n  level: warn\n"
        f"storage:\n  filesystem:\n    rootdirectory: {storage}\n"
        f"http:\n  addr: 127.0.0.1:{port}\n{auth}"
    )
    with open(directory / "registry.log", "wb") as log:
        process = subprocess.Popen([BINARY, "serve", str(config)], stdout=log, stderr=subprocess.STDOUT)
        try:
            started = eventually(lambda: _answers(f"http://127.0.0.1:{port}/v2/"), timeout=30)
            assert started, (directory / "registry.log").read_text()
            yield RegistryServer(f"127.0.0.1:{port}", storage)
        finally:
            process.terminate()
            process.wait(timeout=30)
