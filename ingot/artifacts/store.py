"""The content-addressed artifact cache: one directory per key, built in a temp dir and renamed into place."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import platformdirs
from filelock import FileLock, Timeout

from ingot.artifacts.manifest import MANIFEST_NAME, Manifest
from ingot.artifacts.toolchain import toolchain_mismatch
from ingot.errors import ArtifactError

CACHE_ENV = "INGOT_CACHE_DIR"


@dataclass(frozen=True)
class StoredArtifact:
    key: str
    path: Path
    manifest: Manifest | None  # None when the manifest cannot be read
    problem: str | None  # why it cannot be served as it is, if it cannot


def default_cache_dir(cache_dir: str | os.PathLike | None = None) -> Path:
    """``--cache-dir``, else ``$INGOT_CACHE_DIR``, else the user cache dir."""
    chosen = cache_dir or os.environ.get(CACHE_ENV) or platformdirs.user_cache_dir("ingot")
    return Path(chosen).expanduser()


class ArtifactStore:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.artifacts = root / "artifacts"
        self.building_dir = root / "building"
        self.locks = root / "locks"

    @classmethod
    def open(cls, cache_dir: str | os.PathLike | None = None) -> ArtifactStore:
        return cls(default_cache_dir(cache_dir))

    def path(self, key: str) -> Path:
        return self.artifacts / key

    def has(self, key: str) -> bool:
        return (self.path(key) / MANIFEST_NAME).is_file()

    def _lock(self, key: str) -> FileLock:
        self.locks.mkdir(parents=True, exist_ok=True)
        return FileLock(self.locks / f"{key}.lock")

    @contextmanager
    def build(self, key: str) -> Iterator[Path | None]:
        """Yield a fresh temp dir to build ``key`` in, or None if it is already stored.

        One builder per key at a time (a file lock); a second one waits, then finds the artifact.
        The temp dir is renamed into place only when the body succeeds, so a killed or failed
        build never leaves a half-written artifact under its key.
        """
        with self._lock(key):
            if self.has(key):
                yield None
                return
            self.building_dir.mkdir(parents=True, exist_ok=True)
            self.artifacts.mkdir(parents=True, exist_ok=True)
            workdir = Path(tempfile.mkdtemp(prefix=f"{key}.", dir=self.building_dir))
            try:
                yield workdir
                os.rename(workdir, self.path(key))
            finally:
                shutil.rmtree(workdir, ignore_errors=True)

    def resolve(self, key_or_path: str) -> Path:
        """An artifact directory from a path, a key, or a unique key prefix."""
        as_path = Path(key_or_path).expanduser()
        if (as_path / MANIFEST_NAME).is_file():
            return as_path.resolve()
        if self.has(key_or_path):
            return self.path(key_or_path)
        matches = [a.key for a in self.list() if a.key.startswith(key_or_path)] if key_or_path else []
        if len(matches) == 1:
            return self.path(matches[0])
        if len(matches) > 1:
            raise ArtifactError(f"{key_or_path}: ambiguous, matches {', '.join(matches)}")
        raise ArtifactError(f"{key_or_path}: no such artifact in {self.artifacts} (see: ingot ls)")

    def list(self) -> list[StoredArtifact]:
        if not self.artifacts.is_dir():
            return []
        found = []
        for path in sorted(self.artifacts.iterdir()):
            try:
                manifest = Manifest.read(path)
            except ArtifactError as error:
                found.append(StoredArtifact(path.name, path, None, str(error)))
                continue
            found.append(StoredArtifact(path.name, path, manifest, toolchain_mismatch(manifest.toolchain)))
        return found

    def gc(self, everything: bool = False) -> list[Path]:
        """Remove leftovers of killed builds and artifacts this toolchain cannot load (or all of them)."""
        removed = []
        if self.building_dir.is_dir():
            for workdir in self.building_dir.iterdir():
                lock = self._lock(workdir.name.split(".")[0])
                try:
                    with lock.acquire(timeout=0):
                        shutil.rmtree(workdir, ignore_errors=True)
                        removed.append(workdir)
                except Timeout:
                    continue  # a live build owns it
        for artifact in self.list():
            if everything or artifact.problem:
                with self._lock(artifact.key):
                    shutil.rmtree(artifact.path, ignore_errors=True)
                removed.append(artifact.path)
        return removed
