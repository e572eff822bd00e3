"""File digests of an artifact: recorded when it is built, checked before it is trusted."""

from __future__ import annotations

from pathlib import Path

from ingot.artifacts.manifest import MANIFEST_NAME, FileEntry, Manifest
from ingot.artifacts.toolchain import toolchain_mismatch
from ingot.digest import sha256_file
from ingot.errors import ArtifactError


def file_entries(directory: Path) -> dict[str, FileEntry]:
    """Every file below ``directory`` but the manifest, with its sha256 and size."""
    return {
        path.relative_to(directory).as_posix(): FileEntry(sha256=sha256_file(path), size=path.stat().st_size)
        for path in sorted(directory.rglob("*"))
        if path.is_file() and path.name != MANIFEST_NAME
    }


def check_artifact(directory: Path) -> Manifest:
    """Read the manifest and refuse the artifact if any file or the toolchain does not match it."""
    manifest = Manifest.read(directory)
    reason = toolchain_mismatch(manifest.toolchain)
    if reason:
        raise ArtifactError(f"{directory.name}: {reason}")
    actual = file_entries(directory)
    for name, expected in manifest.files.items():
        found = actual.get(name)
        if found is None:
            raise ArtifactError(f"{directory.name}: {name} is missing")
        if found != expected:
            raise ArtifactError(f"{directory.name}: {name} does not match its sha256 in the manifest (tampered or corrupt)")
    extra = sorted(set(actual) - set(manifest.files))
    if extra:
        raise ArtifactError(f"{directory.name}: {extra[0]} is not listed in the manifest")
    return manifest
