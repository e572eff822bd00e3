"""The content-addressed artifact cache: one directory per key, built in a temp dir and renamed into place.

Publishing records the digest of the artifact's manifest in ``digests/KEY.sha256``, outside the artifact
directory: the manifest holds every other file's sha256, so the recorded digest covers the whole artifact, and
an artifact whose manifest was edited (files and hashes changed together) or that was copied in by hand is
refused. An artifact served by path from outside a store has no recorded digest and is checked by its files.
"""

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

from ingot.artifacts.manifest import MANIFEST_NAME, Manifest, manifest_sha256, read_manifest_bytes
from ingot.artifacts.toolchain import toolchain_mismatch
from ingot.artifacts.unpacked import remove_orphaned_unpacked
from ingot.errors import ArtifactError

CACHE_ENV = "INGOT_CACHE_DIR"


@dataclass(frozen=True)
class StoredArtifact:
    key: str
    path: Path
    manifest: Manifest | None  # None when the manifest cannot be read
    problem: str | None  # why it cannot be served as it is, if it cannot


def _symlink_in_store(key: str) -> str:
    return f"{key}: is a symbolic link; the store serves only the directories it built"


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
        self.digests = root / "digests"

    @classmethod
    def open(cls, cache_dir: str | os.PathLike | None = None) -> ArtifactStore:
        return cls(default_cache_dir(cache_dir))

    @classmethod
    def holding(cls, directory: Path) -> ArtifactStore | None:
        """The store whose ``artifacts/`` holds ``directory`` (not resolving a symlinked artifact), else None.
        A store is known by the ``locks/`` (or ``digests/``) beside ``artifacts/`` that every build makes."""
        directory = Path(os.path.abspath(directory))
        store = cls(directory.parent.parent)
        in_store = directory.parent.name == "artifacts" and (store.locks.is_dir() or store.digests.is_dir())
        return store if in_store else None

    def path(self, key: str) -> Path:
        return self.artifacts / key

    def digest_path(self, key: str) -> Path:
        return self.digests / f"{key}.sha256"

    def has(self, key: str) -> bool:
        """Whether ``key`` is published: its manifest is there and so is the digest recorded when it was."""
        return (self.path(key) / MANIFEST_NAME).is_file() and self.digest_path(key).is_file()

    def recorded_digest(self, key: str) -> str | None:
        try:
            return self.digest_path(key).read_text().strip()
        except OSError:
            return None

    def publication_problem(self, key: str, manifest_bytes: bytes) -> str | None:
        """Why the store does not vouch for ``key`` with this manifest (None: it published exactly this one).

        A symlink under ``artifacts/`` is refused: publishing renames a directory the store built, so a link
        there makes the store serve files it never wrote, from wherever the link points.
        """
        if self.path(key).is_symlink():
            return _symlink_in_store(key)
        recorded = self.recorded_digest(key)
        if recorded is None:
            return (
                f"{key}: no manifest digest recorded by the store (copied in by hand, or built by an older ingot): "
                "compile it again"
            )
        if manifest_sha256(manifest_bytes) != recorded:
            return f"{key}: manifest.json does not match the digest recorded when it was built (edited or corrupt)"
        return None

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
            self._remove(key)  # a leftover: no manifest, or never published (the rename would fail on it)
            for directory in (self.building_dir, self.artifacts, self.digests):
                directory.mkdir(parents=True, exist_ok=True)
            workdir = Path(tempfile.mkdtemp(prefix=f"{key}.", dir=self.building_dir))
            try:
                yield workdir
                self._record_digest(key, manifest_sha256(read_manifest_bytes(workdir)))
                os.rename(workdir, self.path(key))
            finally:
                shutil.rmtree(workdir, ignore_errors=True)

    def _record_digest(self, key: str, digest: str) -> None:
        """Written before the artifact is renamed into place, so a published artifact always has its digest."""
        partial = self.digest_path(key).with_suffix(".partial")
        partial.write_text(digest + "\n")
        os.replace(partial, self.digest_path(key))

    def _remove(self, key: str) -> None:
        """Remove ``key``'s directory (a symlink there: the link, not what it points to) and its digest."""
        path = self.path(key)
        if path.is_symlink() or path.is_file():
            path.unlink()
        elif path.exists():
            shutil.rmtree(path)
        self.digest_path(key).unlink(missing_ok=True)

    def resolve(self, key_or_path: str) -> Path:
        """An artifact directory from a path, a key, or a unique key prefix."""
        as_path = Path(key_or_path).expanduser()
        if (as_path / MANIFEST_NAME).is_file():
            if as_path.is_symlink() and ArtifactStore.holding(as_path) is not None:
                raise ArtifactError(_symlink_in_store(as_path.name))  # resolved, it would pass as from outside
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
                raw = read_manifest_bytes(path)
                manifest = Manifest.parse(path.name, raw)
            except ArtifactError as error:
                found.append(StoredArtifact(path.name, path, None, str(error)))
                continue
            problem = self.publication_problem(path.name, raw) or toolchain_mismatch(manifest.toolchain)
            found.append(StoredArtifact(path.name, path, manifest, problem))
        return found

    def gc(self, everything: bool = False) -> list[Path]:
        """Remove leftovers of killed builds, artifacts this toolchain cannot load or the store does not vouch
        for (or all of them), and programs unpacked by processes that are gone."""
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
                    self._remove(artifact.key)
                removed.append(artifact.path)
        return removed + remove_orphaned_unpacked()
