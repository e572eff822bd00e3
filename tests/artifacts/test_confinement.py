"""A tampered artifact never gets its native code loaded: every check runs before the first library is opened.
The library here stands for an attacker's: its constructor leaves a marker file when it is loaded."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from ingot.artifacts.integrity import check_artifact
from ingot.errors import ArtifactError
from tests.conftest import run_cli
from tests.test_cli import assert_one_line_error


@pytest.fixture
def outside_library(tmp_path: Path) -> tuple[Path, Path]:
    """(a shared library outside any artifact, the marker its constructor writes when it is loaded)"""
    source, library, marker = tmp_path / "outside.c", tmp_path / "outside.so", tmp_path / "loaded"
    source.write_text(
        "#include <stdio.h>\n"
        "__attribute__((constructor)) static void loaded(void) {\n"
        f'  FILE *f = fopen("{marker}", "w"); if (f) fclose(f);\n'
        "}\n"
    )
    subprocess.run(["gcc", "-shared", "-fPIC", "-o", str(library), str(source)], check=True)
    return library, marker


@pytest.fixture
def artifact_copy(compiled, tmp_path: Path) -> Path:
    return Path(shutil.copytree(compiled("llama").path, tmp_path / "artifact"))


def _kernels_entry(directory: Path, library: str) -> None:
    manifest = directory / "manifest.json"
    data = json.loads(manifest.read_text())
    for program in data["programs"]:
        program["kernels"] = [library]
    manifest.write_text(json.dumps(data))


def _load_in_a_process(directory: Path, kernels: str) -> subprocess.CompletedProcess:
    """load_programs, in a fresh process, on the artifact's manifest with every program's kernels set to
    ``kernels`` after the manifest was read (so no schema check sees it)."""
    script = (
        "import sys; from pathlib import Path\n"
        "from ingot.artifacts.manifest import Manifest\n"
        "from ingot.runtime.programs import load_programs\n"
        "directory = Path(sys.argv[1]); manifest = Manifest.read(directory)\n"
        "programs = [p.model_copy(update={'kernels': [sys.argv[2]]}) for p in manifest.programs]\n"
        "load_programs(directory, manifest.model_copy(update={'programs': programs}))\n"
    )
    return subprocess.run(
        [sys.executable, "-c", script, str(directory), kernels], capture_output=True, text=True, timeout=300
    )


def test_an_outside_library_in_kernels_is_refused_by_verify_and_serve_and_never_loaded(
    artifact_copy, outside_library, tmp_path
):
    library, marker = outside_library
    _kernels_entry(artifact_copy, str(library))
    with pytest.raises(ArtifactError, match="not a relative path inside the artifact"):
        check_artifact(artifact_copy)
    assert_one_line_error(run_cli("verify", str(artifact_copy), cache_dir=tmp_path), "inside the artifact")
    served = run_cli("serve", str(artifact_copy), "--port", "1", "--no-compile", cache_dir=tmp_path, timeout=120)
    assert_one_line_error(served, "inside the artifact")
    assert not marker.exists()


def test_the_loader_itself_refuses_a_library_outside_the_artifact(artifact_copy, outside_library, tmp_path):
    """Even given a manifest nobody checked (a caller that skipped check_artifact)."""
    library, marker = outside_library
    for name in (str(library), f"../{library.name}"):
        loaded = _load_in_a_process(artifact_copy, name)
        assert loaded.returncode != 0 and "is not a file inside the artifact" in loaded.stderr, loaded.stderr
    assert not marker.exists()


def test_a_symlinked_library_with_the_right_name_is_refused_and_never_loaded(
    artifact_copy, outside_library, tmp_path
):
    library, marker = outside_library
    manifest = check_artifact(artifact_copy)
    kernels = artifact_copy / manifest.programs[0].kernels[0]
    kernels.unlink()
    kernels.symlink_to(library)
    with pytest.raises(ArtifactError, match="is a symbolic link"):
        check_artifact(artifact_copy)
    assert_one_line_error(run_cli("verify", str(artifact_copy), cache_dir=tmp_path), "is a symbolic link")
    loaded = _load_in_a_process(artifact_copy, manifest.programs[0].kernels[0])
    assert loaded.returncode != 0 and "is not a file inside the artifact" in loaded.stderr, loaded.stderr
    assert not marker.exists()
