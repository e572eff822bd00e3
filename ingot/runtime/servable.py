"""Whether this runtime can run an artifact: it runs cpu programs only (language models and detectors alike)."""

from __future__ import annotations

from ingot.artifacts.manifest import Manifest


def unservable_reason(manifest: Manifest) -> str | None:
    """Why this runtime cannot serve the artifact (one line), or None."""
    if manifest.target == "cpu":
        return None
    device = manifest.tt.spec["device"] if manifest.tt else f"a {manifest.target} device"
    return (
        f"{manifest.key}: built for target {manifest.target}; serving it needs a {device} and the TT runtime "
        f"(tt-metal), and this host has neither (ingot serves cpu artifacts)"
    )
