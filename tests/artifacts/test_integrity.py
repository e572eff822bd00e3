import hashlib
import json
import os
import shutil

import pytest

from ingot.artifacts.integrity import check_artifact
from ingot.errors import ArtifactError
from tests.artifacts.tampering import edit_chat_template, edit_manifest


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


@pytest.mark.parametrize(
    "edit",
    [
        lambda m: m["programs"][0]["kernels"].append("/usr/lib/outside.so"),
        lambda m: m["programs"][0]["kernels"].append("kernels/../../outside.so"),
        lambda m: m["programs"][0].update(file="../outside.pt2"),
        lambda m: m["weights"].update(file="/etc/passwd"),
        lambda m: m["tokenizer"].update(directory=".."),
        lambda m: m["files"].update({"../outside.bin": {"sha256": "0" * 64, "size": 1}}),
    ],
    ids=["absolute kernel", "kernel up and out", "program file", "weights file", "tokenizer", "listed file"],
)
def test_a_path_outside_the_artifact_is_refused(artifact_copy, edit):
    edit_manifest(artifact_copy, edit)
    with pytest.raises(ArtifactError, match="invalid manifest.json: .*not a relative path inside the artifact"):
        check_artifact(artifact_copy)


def test_a_path_the_manifest_names_must_be_a_listed_file(artifact_copy):
    edit_manifest(artifact_copy, lambda m: m["programs"][0]["kernels"].append("kernels/another.so"))
    with pytest.raises(ArtifactError, match="names kernels/another.so, which is not one of its listed files"):
        check_artifact(artifact_copy)


def test_a_symlinked_file_is_refused_even_with_the_right_content(artifact_copy, tmp_path):
    weights = artifact_copy / "weights.safetensors"
    outside = tmp_path / "weights-outside.safetensors"
    shutil.move(weights, outside)
    weights.symlink_to(outside)
    with pytest.raises(ArtifactError, match="weights.safetensors is a symbolic link"):
        check_artifact(artifact_copy)


def test_a_symlinked_directory_is_refused(artifact_copy, tmp_path):
    tokenizer = artifact_copy / "tokenizer"
    shutil.move(tokenizer, tmp_path / "tokenizer-outside")
    tokenizer.symlink_to(tmp_path / "tokenizer-outside")
    with pytest.raises(ArtifactError, match="tokenizer is a symbolic link"):
        check_artifact(artifact_copy)


def test_a_fifo_is_refused_rather_than_read(artifact_copy):
    os.mkfifo(artifact_copy / "programs" / "pipe")
    with pytest.raises(ArtifactError, match="programs/pipe is not a regular file"):
        check_artifact(artifact_copy)


def test_outside_a_store_an_edit_with_its_hash_passes_and_an_expected_digest_catches_it(artifact_copy):
    """A copy served by path is checked by its files only (documented); a digest handed over with the artifact
    (a pulled one) vouches for the manifest too."""
    original = hashlib.sha256((artifact_copy / "manifest.json").read_bytes()).hexdigest()
    assert check_artifact(artifact_copy, manifest_digest=original).model.family == "llama"
    edit_chat_template(artifact_copy)
    assert check_artifact(artifact_copy).model.family == "llama"
    with pytest.raises(ArtifactError, match="manifest.json does not match the expected sha256"):
        check_artifact(artifact_copy, manifest_digest=original)



def test_a_directory_named_artifacts_is_not_taken_for_a_store(compiled, tmp_path):
    """Without a store's locks/ and digests/ beside it, there is no recorded digest to ask for."""
    path = shutil.copytree(compiled("llama").path, tmp_path / "artifacts" / "mine")
    assert check_artifact(path).model.family == "llama"
