"""Finding what a command names: the artifact store, and a detector's newest artifact."""

from __future__ import annotations

import argparse
from pathlib import Path

from ingot.artifacts.store import ArtifactStore
from ingot.errors import IngotError


def open_store(args: argparse.Namespace) -> ArtifactStore:
    return ArtifactStore.open(args.cache_dir)


def newest_detector_artifact(store: ArtifactStore, model: str) -> Path:
    """The most recently built loadable artifact of the detector ``model`` (e.g. ``yolov4``) this host can run;
    if there are only device artifacts, the newest one's refusal."""
    from ingot.runtime.servable import unservable_reason

    found = [a for a in store.list() if a.manifest and a.manifest.model.name == model and not a.problem]
    if not found:
        raise IngotError(f"{model} is not compiled: ingot compile {model} --weights yolov4.weights first")
    found.sort(key=lambda a: a.manifest.created_at, reverse=True)
    for artifact in found:
        if unservable_reason(artifact.manifest) is None:
            return artifact.path
    raise IngotError(unservable_reason(found[0].manifest))
