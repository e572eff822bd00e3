import shutil

import pytest

from ingot.errors import ModelSourceError
from ingot.models.source import BUILTIN_MODELS, BuiltinModel, resolve_source
from ingot.models.yolov4.source import is_detector


def test_hf_directory(tiny_model):
    source = resolve_source(str(tiny_model("llama")))
    assert source.kind == "hf" and source.gguf_file is None
    assert set(source.digests()) == {"config", "tokenizer", "weights"}


def test_gguf_file_is_one_source_for_config_tokenizer_and_weights(tmp_path):
    path = tmp_path / "model.gguf"
    path.write_bytes(b"GGUF")
    source = resolve_source(str(path))
    assert source.kind == "gguf" and source.gguf_file == "model.gguf" and source.directory == tmp_path
    assert len(set(source.digests().values())) == 1


def test_builtin_demo_model_is_the_smollm2_gguf():
    source = resolve_source("smollm2-135m")
    assert source.kind == "gguf"
    assert source.path.name == BUILTIN_MODELS["smollm2-135m"].filename
    assert source.path.is_file()


def test_missing_path_says_so(tmp_path):
    with pytest.raises(ModelSourceError, match="no such file or directory, and not a built-in model"):
        resolve_source(str(tmp_path / "nope"))


def test_a_file_must_be_gguf(tmp_path):
    (tmp_path / "model.txt").write_text("x")
    with pytest.raises(ModelSourceError, match="must be .gguf"):
        resolve_source(str(tmp_path / "model.txt"))


def test_a_directory_needs_config_json(tmp_path):
    with pytest.raises(ModelSourceError, match="no config.json"):
        resolve_source(str(tmp_path))


def test_pickled_weights_are_never_loaded(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "pytorch_model.bin").write_bytes(b"\x80")
    with pytest.raises(ModelSourceError, match="never loads pickled weights"):
        resolve_source(str(tmp_path))


def test_a_builtin_name_wins_over_a_same_named_directory(tiny_model, tmp_path, monkeypatch):
    shutil.copytree(tiny_model("llama"), tmp_path / "smollm2-135m")
    monkeypatch.chdir(tmp_path)
    builtin = resolve_source("smollm2-135m")
    assert builtin.kind == "gguf" and builtin.path.name == BUILTIN_MODELS["smollm2-135m"].filename
    directory = resolve_source("./smollm2-135m")
    assert directory.kind == "hf" and directory.path == tmp_path / "smollm2-135m"
    assert is_detector("yolov4") and not is_detector("./yolov4")


def test_a_builtin_that_is_not_installed_says_how_to_name_the_same_named_directory(tiny_model, tmp_path, monkeypatch):
    missing = BuiltinModel(package="ingot_test_no_such_package", filename="m.gguf", install_hint="pip install m")
    monkeypatch.setitem(BUILTIN_MODELS, "demo-model", missing)
    shutil.copytree(tiny_model("llama"), tmp_path / "demo-model")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ModelSourceError, match=r"not installed: pip install m \(for the demo-model in this directory, "
                       r"write \./demo-model\)"):  # fmt: skip
        resolve_source("demo-model")
    assert resolve_source("./demo-model").kind == "hf"
