"""File digests of an artifact: recorded when it is built, checked before it is trusted (and before any of its
native code is loaded).

What vouches for an artifact: every file but the manifest is listed in the manifest with its sha256, and nothing
else is there (no symlinks, no unlisted files); the manifest itself is vouched for by the digest its store
recorded when it published it, or by a digest given by whoever hands the artifact over (a pulled artifact). An
artifact served by path from outside a store has neither: it is checked by its files alone, so an edit of a file
together with its sha256 in the manifest goes unnoticed there.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from ingot.artifacts.cpu_isa import check_cpu
from ingot.artifacts.manifest import MANIFEST_NAME, FileEntry, Manifest, manifest_sha256, read_manifest_bytes
from ingot.artifacts.store import ArtifactStore
from ingot.artifacts.toolchain import toolchain_mismatch
from ingot.digest import sha256_file
from ingot.errors import ArtifactError


def file_entries(directory: Path) -> dict[str, FileEntry]:
    """Every file below ``directory`` but the manifest, with its sha256 and size; a symlink or anything but a
    regular file or directory is refused (a link would make the artifact's content whatever it points to)."""
    entries = {}
    for root, subdirs, names in os.walk(directory):
        for name in sorted([*subdirs, *names]):
            path = Path(root, name)
            relative = path.relative_to(directory).as_posix()
            mode = os.lstat(path).st_mode
            if stat.S_ISLNK(mode):
                raise ArtifactError(f"{directory.name}: {relative} is a symbolic link; an artifact holds its own files")
            if stat.S_ISDIR(mode) or relative == MANIFEST_NAME:
                continue
            if not stat.S_ISREG(mode):
                raise ArtifactError(f"{directory.name}: {relative} is not a regular file")
            entries[relative] = FileEntry(sha256=sha256_file(path), size=os.lstat(path).st_size)
    return dict(sorted(entries.items()))


def check_artifact(directory: Path, manifest_digest: str | None = None) -> Manifest:
    """Read the manifest and refuse the artifact if it, any file or the toolchain does not match, or if its native
    code needs a CPU flag this CPU lacks (a CpuIsaError).

    The manifest is checked against ``manifest_digest`` (its sha256) when given, e.g. the digest a registry lists
    for a pulled artifact; else against the digest its store recorded when the artifact lives in a store's
    ``artifacts/``; an artifact elsewhere is checked by its files alone.
    """
    if not directory.is_dir():
        raise ArtifactError(f"{directory.name}: not an artifact (not a directory)")
    raw = read_manifest_bytes(directory)  # read once: the bytes vouched for are the bytes parsed
    store = ArtifactStore.holding(directory)
    if manifest_digest is not None:
        if manifest_sha256(raw) != manifest_digest:
            raise ArtifactError(f"{directory.name}: manifest.json does not match the expected sha256 {manifest_digest}")
    elif store is not None:
        problem = store.publication_problem(directory.name, raw)
        if problem:
            raise ArtifactError(problem)
    manifest = Manifest.parse(directory.name, raw)
    reason = toolchain_mismatch(manifest.toolchain)
    if reason:
        raise ArtifactError(f"{directory.name}: {reason}")
    check_cpu(directory.name, manifest)
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
    for name in manifest.named_paths():
        if name not in manifest.files:
            raise ArtifactError(f"{directory.name}: the manifest names {name}, which is not one of its listed files")
    if manifest.tokenizer and not any(name.startswith(f"{manifest.tokenizer.directory}/") for name in manifest.files):
        raise ArtifactError(f"{directory.name}: its tokenizer directory {manifest.tokenizer.directory} holds no file")
    return manifest
