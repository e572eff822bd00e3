import json
import shutil

import pytest

from ingot.artifacts.integrity import check_artifact
from ingot.errors import ArtifactError


@pytest.fixture
def artifact_copy(compiled, tmp_path):
    path = tmp_path / "artifact"
    shutil.copytree(compiled("llama").path, path)
    return path


def test_intact_artifact_passes(artifact_copy):
    assert check_artifact(artifact_copy).model.family == "llama"


def test_tampered_weights_are_refused(artifact_copy):
    weights = artifact_copy / "weights.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(ArtifactError, match="weights.safetensors does not match its sha256"):
        check_artifact(artifact_copy)


def test_missing_program_is_refused(artifact_copy):
    (artifact_copy / "programs" / "decode.pt2").unlink()
    with pytest.raises(ArtifactError, match="programs/decode.pt2 is missing"):
        check_artifact(artifact_copy)


def test_unlisted_file_is_refused(artifact_copy):
    (artifact_copy / "programs" / "extra.pt2").write_bytes(b"x")
    with pytest.raises(ArtifactError, match="not listed"):
        check_artifact(artifact_copy)


def test_other_torch_version_is_refused_with_recompile_hint(artifact_copy):
    manifest = artifact_copy / "manifest.json"
    data = json.loads(manifest.read_text())
    data["toolchain"]["torch"] = "2.14.1"
    manifest.write_text(json.dumps(data))
    with pytest.raises(ArtifactError, match=r"built with torch 2.14.1, this is .*: recompile"):
        check_artifact(artifact_copy)


def test_other_schema_version_is_refused(artifact_copy):
    manifest = artifact_copy / "manifest.json"
    data = json.loads(manifest.read_text())
    data["schema_version"] = 99
    manifest.write_text(json.dumps(data))
    with pytest.raises(ArtifactError, match="schema 99"):
        check_artifact(artifact_copy)


def test_garbage_manifest_is_refused(artifact_copy):
    (artifact_copy / "manifest.json").write_text("{not json")
    with pytest.raises(ArtifactError, match="unreadable manifest.json"):
        check_artifact(artifact_copy)
