"""Finding what a command names: the artifact store, and the artifact of a key, a path or a built-in model.

A built-in model's name (smollm2-135m, yolov4) always means the built-in model, even beside a same-named
directory; a user who means the directory writes a path (./smollm2-135m).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from ingot.artifacts.store import ArtifactStore, default_cache_dir
from ingot.errors import ArtifactError, IngotError, OptionError

OCI_PREFIX = "oci://"  # `ingot serve oci://REF`: an artifact in an OCI registry

if TYPE_CHECKING:  # a type only: the options module is imported when a key is computed
    from ingot.compile.options import CompileOptions


def check_cache_dir(cache_dir: str | None) -> None:
    """Refuse, in one line, a cache directory that is a file or inside one, before any command works in it."""
    path = default_cache_dir(cache_dir)
    existing = next(p for p in (path, *path.parents) if p.exists())
    if not existing.is_dir():
        where = "is a file" if existing == path else f"is inside {existing}, a file"
        raise OptionError(f"artifact cache {path} {where}, not a directory (see --cache-dir, $INGOT_CACHE_DIR)")


def open_store(args: argparse.Namespace) -> ArtifactStore:
    return ArtifactStore.open(args.cache_dir)


def find_artifact(store: ArtifactStore, name: str) -> Path:
    """The artifact ``name`` means, never compiling: a built-in model's (see the module's docstring), else a key,
    key prefix or path."""
    from ingot.models.source import BUILTIN_MODELS
    from ingot.models.yolov4.source import is_detector

    if is_detector(name):
        return newest_detector_artifact(store, name)
    if name in BUILTIN_MODELS:
        key = default_artifact_key(name)
        if not store.has(key):
            raise IngotError(f"{name}: not compiled (no artifact {key}): ingot compile {name} first")
        return store.path(key)
    return store.resolve(name)


def default_artifact_key(model: str, options: CompileOptions | None = None) -> str:
    """The key of ``model``'s artifact with the default compile options, or ``options`` (what `ingot serve MODEL`
    compiles)."""
    from ingot.compile.options import CompileOptions
    from ingot.compile.pipeline import cache_key
    from ingot.models.source import resolve_source

    return cache_key(resolve_source(model).digests(), options or CompileOptions())


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


def compile_options(weight_format: str | None, activation_dtype: str | None = None) -> CompileOptions:
    """The compile options a model named to `ingot serve` means (its artifact's key; compiled with them on a miss)."""
    from ingot.compile.options import CompileOptions

    return CompileOptions.parse(weight_format=weight_format, activation_dtype=activation_dtype)


def serving_artifact(
    store: ArtifactStore,
    model: str,
    options: CompileOptions | None = None,
    plain_http: bool = False,
    no_compile: bool = False,
) -> Path:
    """A registry's artifact (``oci://REF``, pulled on a cache miss); a built-in model's artifact (a language
    model's one with ``options``, default ones if None, compiled on a miss; a detector's newest: compiling one needs
    its weights); else an artifact key, prefix or path; else a model directory or file whose artifact with
    ``options`` is compiled on a miss."""
    from ingot.artifacts.registry import pull_artifact
    from ingot.compile.options import CompileOptions
    from ingot.models.source import BUILTIN_MODELS
    from ingot.models.yolov4.source import is_detector

    if model.startswith(OCI_PREFIX):
        return pull_artifact(store, model.removeprefix(OCI_PREFIX), plain_http=plain_http).path
    if is_detector(model):
        return newest_detector_artifact(store, model)
    if model not in BUILTIN_MODELS:  # a built-in name is never a path or key (./NAME is the directory)
        try:
            return store.resolve(model)
        except ArtifactError:
            if not Path(model).expanduser().exists():
                raise
    options = options or CompileOptions()
    key = default_artifact_key(model, options)
    if not store.has(key):
        if no_compile:
            raise IngotError(f"{model}: not compiled (no artifact {key}) and --no-compile is set")
        _compile_in_child(model, store, options)
    return store.path(key)


def _compile_in_child(model: str, store: ArtifactStore, options: CompileOptions) -> None:
    """``ingot compile MODEL`` in a child process: a compile holds the model's weights more than once and inductor
    besides, and a process never gives all of that back, so a server that compiled in its own process would carry
    it for its whole life. The child prints its progress and, if it fails, its one-line error."""
    command = [sys.executable, "-m", "ingot.cli", "compile", model, "--cache-dir", str(store.root)]
    command += ["--weight-format", options.weight_format, "--activation-dtype", options.activation_dtype]
    status = subprocess.call(command)
    if status != 0:
        raise SystemExit(status)
